package cliflags

import (
	"bytes"
	"io"
	"strings"
	"text/tabwriter"
)

// Table lays out tab-separated rows in columns two spaces apart, as the
// consul CLI prints its tables. Write rows with Fprintf ("a\tb\n"), then
// Flush.
type Table struct {
	out io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

// NewTable returns a table that writes to w on Flush.
func NewTable(w io.Writer) *Table {
	t := &Table{out: w}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *Table) Write(p []byte) (int, error) { return t.tw.Write(p) }

// Flush writes the table out, without the padding an empty last column
// would leave at the end of its lines.
func (t *Table) Flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	lines := strings.SplitAfter(t.buf.String(), "\n")
	var b strings.Builder
	for _, l := range lines {
		nl := strings.HasSuffix(l, "\n")
		b.WriteString(strings.TrimRight(l, " \n"))
		if nl {
			b.WriteByte('\n')
		}
	}
	t.buf.Reset()
	_, err := io.WriteString(t.out, b.String())
	return err
}
