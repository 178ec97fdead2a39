package dns

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkServeSRV measures answering an SRV query for a service with 100
// healthy instances straight through ServeDNS (catalog read, health filter,
// shuffle, records, trimming to the transport, packing), without sockets.
// The fake catalog's copying of its entries is part of the figure. It
// reports a figure; it asserts nothing beyond the handler answering.
func BenchmarkServeSRV(b *testing.B) {
	cat := newFakeCatalog()
	cat.addInstances("web", 100)
	s, err := New(baseConfig(), cat)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	for _, tt := range []struct {
		name   string
		remote net.Addr
		edns   uint16
	}{
		{"udp-512", udpClient, 0},
		{"udp-edns4096", udpClient, 4096},
		{"tcp", tcpClient, 0},
	} {
		b.Run(tt.name, func(b *testing.B) {
			req := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeSRV)
			if tt.edns != 0 {
				req.SetEdns0(tt.edns, false)
			}
			w := &recorder{remote: tt.remote, pack: true}
			b.ReportAllocs()
			for b.Loop() {
				w.msgs = w.msgs[:0]
				s.ServeDNS(w, req)
				if len(w.msgs) != 1 || len(w.msgs[0].Answer) == 0 {
					b.Fatalf("no answer: %v", w.msgs)
				}
			}
			b.ReportMetric(float64(len(w.msgs[0].Answer)), "answers")
		})
	}
}
