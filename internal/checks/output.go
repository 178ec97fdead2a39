package checks

import (
	"fmt"
	"unicode/utf8"
)

// truncateHead keeps the first MaxOutputSize bytes of s (cut at a rune
// boundary) and says how much was dropped.
func truncateHead(s string) string {
	if len(s) <= MaxOutputSize {
		return s
	}
	n := MaxOutputSize
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s ... (captured %d of %d bytes)", s[:n], n, len(s))
}

// tailBuffer is an io.Writer that keeps the last size bytes written: a
// script's verdict is usually at the end of its output.
type tailBuffer struct {
	size  int
	buf   []byte
	total int64
}

func newTailBuffer(size int) *tailBuffer {
	return &tailBuffer{size: size, buf: make([]byte, 0, size)}
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.total += int64(len(p))
	if len(p) >= b.size {
		b.buf = append(b.buf[:0], p[len(p)-b.size:]...)
		return len(p), nil
	}
	if over := len(b.buf) + len(p) - b.size; over > 0 {
		n := copy(b.buf, b.buf[over:])
		b.buf = b.buf[:n]
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// String returns the kept output, prefixed with a note when some was dropped.
func (b *tailBuffer) String() string {
	if b.total > int64(len(b.buf)) {
		return fmt.Sprintf("Captured %d of %d bytes\n...\n%s", len(b.buf), b.total, b.buf)
	}
	return string(b.buf)
}
