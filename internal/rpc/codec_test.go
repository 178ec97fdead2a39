package rpc

import (
	"reflect"
	"testing"

	"google.golang.org/grpc/mem"
)

func TestMsgpackCodecRoundTrip(t *testing.T) {
	c := newMsgpackCodec()
	for _, tc := range []struct {
		name string
		in   any
		out  any
	}{
		{"request", &HTTPRequest{
			Method: "PUT", Path: "/v1/kv/a%2Fb", RawQuery: "cas=1",
			Header: map[string][]string{"X-A": {"1", "2"}, "X-Empty": {}},
			Body:   []byte{0, 1, 2, 0xff}, Datacenter: "dc1",
		}, new(HTTPRequest)},
		{"empty request", &HTTPRequest{}, new(HTTPRequest)},
		{"response", &HTTPResponse{Status: 200, Header: map[string][]string{"Content-Type": {"application/json"}}, Body: []byte(`{"a":1}`)}, new(HTTPResponse)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			// gRPC may hand the message over in several buffers.
			flat := data.Materialize()
			var split mem.BufferSlice
			for i := range flat {
				split = append(split, mem.SliceBuffer(flat[i:i+1]))
			}
			data.Free()
			if err := c.Unmarshal(split, tc.out); err != nil {
				t.Fatal(err)
			}
			// The decoded message must not share memory with the
			// buffers, which gRPC reuses once Unmarshal returns.
			for i := range flat {
				flat[i] = 0
			}
			if !reflect.DeepEqual(tc.out, tc.in) {
				t.Errorf("decoded %+v, want %+v", tc.out, tc.in)
			}
		})
	}
}
