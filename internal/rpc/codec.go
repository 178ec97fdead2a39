package rpc

import (
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"google.golang.org/grpc/mem"
)

// msgpackCodec encodes the forwarding messages as msgpack, a gRPC
// encoding.CodecV2. It is passed to the server and to each call rather
// than registered globally, so it affects no other gRPC user in the
// process. Fields are matched by name and unknown fields are ignored, so
// a field can be added without breaking servers of the previous version.
type msgpackCodec struct {
	h *codec.MsgpackHandle
}

func newMsgpackCodec() msgpackCodec {
	// WriteExt writes []byte as msgpack bin and strings as str (the
	// msgpack 2.0 spec) rather than both as raw.
	return msgpackCodec{h: &codec.MsgpackHandle{WriteExt: true}}
}

func (msgpackCodec) Name() string { return "msgpack" }

func (c msgpackCodec) Marshal(v any) (mem.BufferSlice, error) {
	var b []byte
	if err := codec.NewEncoderBytes(&b, c.h).Encode(v); err != nil {
		return nil, fmt.Errorf("rpc: msgpack encode %T: %w", v, err)
	}
	// SliceBuffer is not pooled: its Free, called by gRPC once the
	// message is written, is a no-op.
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c msgpackCodec) Unmarshal(data mem.BufferSlice, v any) error {
	// gRPC frees data when Unmarshal returns. Decoding from a reader
	// copies what it keeps (Body, strings) out of the buffers, so v holds
	// no reference to them; the reader takes its own references and
	// releases them on Close.
	r := data.Reader()
	defer r.Close()
	if err := codec.NewDecoder(r, c.h).Decode(v); err != nil {
		return fmt.Errorf("rpc: msgpack decode %T: %w", v, err)
	}
	return nil
}
