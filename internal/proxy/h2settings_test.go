package proxy

import (
	"encoding/binary"
	"io"
	"testing"
	"time"
)

// HTTP/2 listeners advertise the protocol's default frame size, 16 KiB,
// not net/http's 1 MiB: a Go client sizes its per-request write buffer by
// it (up to 512 KiB for a body of unknown length), so the larger setting
// costs a sidecar memory for every stream.
func TestHTTP2MaxFrameSize(t *testing.T) {
	p := newPair(t, echoApp(t).addr, false, nil)
	c := dialTCP(t, p.upstream)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The client preface, then an empty SETTINGS frame.
	preface := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
	if _, err := io.WriteString(c, preface); err != nil {
		t.Fatal(err)
	}
	// The server's first frame is its SETTINGS: 6-byte (identifier,
	// value) pairs.
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	if hdr[3] != 0x4 {
		t.Fatalf("first frame has type %#x, want SETTINGS", hdr[3])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(c, payload); err != nil {
		t.Fatal(err)
	}
	const maxFrameSize = 0x5
	for i := 0; i+6 <= len(payload); i += 6 {
		if binary.BigEndian.Uint16(payload[i:]) == maxFrameSize {
			if v := binary.BigEndian.Uint32(payload[i+2:]); v != 16<<10 {
				t.Fatalf("SETTINGS_MAX_FRAME_SIZE = %d, want %d", v, 16<<10)
			}
			return
		}
	}
	t.Fatalf("SETTINGS %x has no SETTINGS_MAX_FRAME_SIZE; the default is 16384 but net/http always sends it", payload)
}
