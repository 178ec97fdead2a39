package snapshot

import (
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func archive(t *testing.T, state string) []byte {
	t.Helper()
	var buf bytes.Buffer
	meta := &raft.SnapshotMeta{Version: 1, ID: "1-2-3", Index: 42, Term: 3, Size: int64(len(state))}
	if err := Write(&buf, meta, strings.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	a, err := Read(bytes.NewReader(archive(t, "the state")))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Meta.Index != 42 || a.Meta.Term != 3 || a.Meta.ID != "1-2-3" {
		t.Errorf("meta = %+v", a.Meta)
	}
	for range 2 { // State may be read more than once.
		r, err := a.State()
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(r); string(b) != "the state" {
			t.Errorf("state = %q", b)
		}
	}
}

func TestReadRejectsDamage(t *testing.T) {
	good := archive(t, strings.Repeat("x", 4096))
	// Flip a byte inside the state: decompress, damage, recompress.
	zr, _ := gzip.NewReader(bytes.NewReader(good))
	raw, _ := io.ReadAll(zr)
	i := bytes.Index(raw, []byte("xxxx"))
	raw[i] = 'y'
	var damaged bytes.Buffer
	zw := gzip.NewWriter(&damaged)
	zw.Write(raw)
	zw.Close()

	tests := []struct {
		name, want string
		data       []byte
	}{
		{"not gzip", "not a snapshot archive", []byte("hello")},
		{"damaged state", "does not match", damaged.Bytes()},
		{"truncated", "snapshot:", good[:len(good)/2]},
		{"gzip trailer damaged", "snapshot:", flipLast(good)},
		{"data after the archive", "after the archive", append(append([]byte{}, good...), "junk"...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Read(bytes.NewReader(tt.data))
			if err == nil {
				a.Close()
				t.Fatal("Read accepted a bad archive")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

// flipLast damages the gzip trailer (CRC and size), past the tar data.
func flipLast(b []byte) []byte {
	c := append([]byte{}, b...)
	c[len(c)-5] ^= 0xff
	return c
}
