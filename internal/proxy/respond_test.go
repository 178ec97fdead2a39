package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
)

// Responses are copied with a small buffer, then a large one while the
// upstream's data keeps coming (exchange.respond): bodies of every size,
// sent in one write or in pieces of many sizes, arrive whole and in
// order, over HTTP/1.1 and h2c from the client.
func TestResponseBodiesArriveWhole(t *testing.T) {
	body := make([]byte, 300<<10)
	for i := range body {
		body[i] = byte(i * 7 / 3) // no repeats at any buffer size's period
	}
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Get("pieces") == "" {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			w.Write(body[:n])
			return
		}
		// Pieces of growing and shrinking sizes, each flushed: reads
		// through the proxy fill its buffers, or do not.
		sizes := []int{1, 2047, 2048, 2049, 100, 40 << 10, 16 << 10, 3, 64 << 10, 5000}
		for off, i := 0, 0; off < n; i++ {
			k := min(sizes[i%len(sizes)], n-off)
			w.Write(body[off : off+k])
			w.(http.Flusher).Flush()
			off += k
		}
	}))
	p := newPair(t, a.addr, false, nil)
	for name, c := range map[string]*http.Client{"http1": h1Client(t), "h2c": h2cClient(t)} {
		for _, n := range []int{0, 1, 2047, 2048, 2049, 32 << 10, 300 << 10} {
			for _, pieces := range []string{"", "1"} {
				url := urlOf(p.upstream, "/?n="+strconv.Itoa(n)+"&pieces="+pieces)
				resp, err := c.Get(url)
				if err != nil {
					t.Fatalf("%s %s: %v", name, url, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, body[:n]) {
					t.Fatalf("%s %s: got %d bytes (%v), want the app's %d", name, url, len(got), err, n)
				}
			}
		}
	}
}
