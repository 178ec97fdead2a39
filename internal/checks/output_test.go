package checks

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"empty", nil, ""},
		{"fits", []string{"abc", "def"}, "abcdef"},
		{"exactly full", []string{"abcd", "efgh"}, "abcdefgh"},
		{"overflow across writes", []string{"abcde", "fghij"}, "Captured 8 of 10 bytes\n...\ncdefghij"},
		{"one big write", []string{"0123456789xy"}, "Captured 8 of 12 bytes\n...\n456789xy"},
		{"many small", strings.Split("abcdefghijklmnopqrstuvwxyz", ""), "Captured 8 of 26 bytes\n...\nstuvwxyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTailBuffer(8)
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTruncateHead(t *testing.T) {
	short := strings.Repeat("a", MaxOutputSize)
	if got := truncateHead(short); got != short {
		t.Errorf("output of exactly MaxOutputSize was changed")
	}
	// A multi-byte rune straddling the limit is dropped whole.
	long := strings.Repeat("a", MaxOutputSize-1) + "é" + "tail"
	want := strings.Repeat("a", MaxOutputSize-1) + " ... (captured 4095 of 4101 bytes)"
	if got := truncateHead(long); got != want {
		t.Errorf("got ...%q, want ...%q", got[MaxOutputSize-10:], want[MaxOutputSize-10:])
	}
}
