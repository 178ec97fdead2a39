package dns

import (
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestUDPAnswerLimit(t *testing.T) {
	cat := newFakeCatalog()
	cat.addInstances("web", 10)
	tests := []struct {
		name     string
		limit    int
		truncate bool
		network  string
		want     int
		wantTC   bool
	}{
		{"default limit", 0, false, "udp", 3, false},
		{"default limit, EnableTruncate", 0, true, "udp", 3, true},
		{"limit 5", 5, false, "udp", 5, false},
		{"limit above count", 20, true, "udp", 10, false},
		{"tcp has no limit", 0, true, "tcp", 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.UDPAnswerLimit = tt.limit
			cfg.EnableTruncate = tt.truncate
			s := startServer(t, cfg, cat)
			for _, qtype := range []uint16{dns.TypeA, dns.TypeANY} {
				r := ask(t, tt.network, s.Addr(), "web.service.consul.", qtype)
				if len(r.Answer) != tt.want || r.Truncated != tt.wantTC {
					t.Errorf("%s: %d answers TC=%v, want %d TC=%v", dns.TypeToString[qtype], len(r.Answer), r.Truncated, tt.want, tt.wantTC)
				}
			}
		})
	}
}

func TestUDPTruncatesToFit(t *testing.T) {
	cat := newFakeCatalog()
	cat.addInstances("web", 50)
	cfg := baseConfig()
	cfg.UDPAnswerLimit = 100 // so that the size, not the limit, cuts
	s := startServer(t, cfg, cat)

	t.Run("SRV over UDP fits 512 bytes and sets TC", func(t *testing.T) {
		m := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeSRV)
		r := exchange(t, "udp", s.Addr(), m)
		n := len(srvs(r.Answer))
		if n == 0 || n >= 50 || !r.Truncated {
			t.Fatalf("%d SRV TC=%v, want some but not all, TC set", n, r.Truncated)
		}
		r.Compress = true // as sent
		if size := r.Len(); size > 512 {
			t.Fatalf("reply is %d bytes, over 512", size)
		}
		if len(r.Extra) != n {
			t.Fatalf("%d glue records for %d SRV", len(r.Extra), n)
		}
	})
	t.Run("EDNS0 buffer size is honoured", func(t *testing.T) {
		small := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeSRV)
		nSmall := len(srvs(exchange(t, "udp", s.Addr(), small).Answer))
		m := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeSRV)
		m.SetEdns0(1232, false)
		r := exchange(t, "udp", s.Addr(), m)
		n := len(srvs(r.Answer))
		if n <= nSmall || n >= 50 || !r.Truncated {
			t.Fatalf("%d SRV with EDNS0 1232 (vs %d without) TC=%v", n, nSmall, r.Truncated)
		}
		if r.IsEdns0() == nil {
			t.Fatal("no OPT in reply to an EDNS0 query")
		}
		m.SetEdns0(dns.DefaultMsgSize, false)
		r = exchange(t, "udp", s.Addr(), m)
		if len(srvs(r.Answer)) != 50 || r.Truncated {
			t.Fatalf("%d SRV TC=%v with a 4096 byte buffer, want all 50", len(srvs(r.Answer)), r.Truncated)
		}
	})
	t.Run("TCP answers in full", func(t *testing.T) {
		r := ask(t, "tcp", s.Addr(), "web.service.consul.", dns.TypeSRV)
		if len(srvs(r.Answer)) != 50 || len(r.Extra) != 50 || r.Truncated {
			t.Fatalf("TCP: %d SRV %d glue TC=%v, want 50 50 false", len(srvs(r.Answer)), len(r.Extra), r.Truncated)
		}
		r = ask(t, "tcp", s.Addr(), "web.service.consul.", dns.TypeA)
		if len(r.Answer) != 50 {
			t.Fatalf("TCP: %d A, want 50", len(r.Answer))
		}
	})
}

func TestAnswersAreShuffled(t *testing.T) {
	cat := newFakeCatalog()
	cat.addInstances("web", 20)
	s := startServer(t, baseConfig(), cat)
	for _, tt := range []struct {
		network string
		qtype   uint16
	}{{"tcp", dns.TypeSRV}, {"udp", dns.TypeA}} {
		firsts := map[string]int{}
		for range 50 {
			r := ask(t, tt.network, s.Addr(), "web.service.consul.", tt.qtype)
			firsts[r.Answer[0].String()]++
		}
		// With 20 instances the chance that 50 shuffles agree is 20^-49.
		if len(firsts) < 2 {
			t.Errorf("%s %s: first answer was the same in 50 queries: %v", tt.network, dns.TypeToString[tt.qtype], firsts)
		}
	}
}

// startUpstream runs a miekg/dns server on UDP and TCP 127.0.0.1:0 that
// answers every question with handler, and returns its address.
func startUpstream(t *testing.T, handler dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Skipf("TCP port of %s taken: %v", addr, err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		done := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		select {
		case <-started:
		case <-done:
			t.Fatal("upstream did not start")
		}
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return addr
}

// deadAddr is a UDP and TCP address on which nothing listens: queries to it
// fail at once with "connection refused".
func deadAddr(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func answerA(ip string) dns.HandlerFunc {
	return func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		m.RecursionAvailable = true
		m.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.ParseIP(ip),
		}}
		_ = w.WriteMsg(m)
	}
}

func TestRecursors(t *testing.T) {
	good := startUpstream(t, answerA("192.0.2.1"))
	other := startUpstream(t, answerA("192.0.2.2"))
	refusing := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
		_ = w.WriteMsg(new(dns.Msg).SetRcode(req, dns.RcodeRefused))
	})
	nxdomain := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
		_ = w.WriteMsg(new(dns.Msg).SetRcode(req, dns.RcodeNameError))
	})
	dead := deadAddr(t)

	tests := []struct {
		name      string
		recursors []string
		rcode     int
		want      string // the A answer, if any
	}{
		{"first answers", []string{good, other}, dns.RcodeSuccess, "192.0.2.1"},
		{"dead one is skipped", []string{dead, good}, dns.RcodeSuccess, "192.0.2.1"},
		{"REFUSED upstream is skipped", []string{refusing, other}, dns.RcodeSuccess, "192.0.2.2"},
		{"NXDOMAIN is an answer", []string{nxdomain, good}, dns.RcodeNameError, ""},
		{"all fail", []string{dead, refusing}, dns.RcodeServerFailure, ""},
		{"none configured", nil, dns.RcodeRefused, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Recursors = tt.recursors
			cfg.RecursorTimeout = 5 * time.Second // refused ports fail at once; this only bounds a broken test
			s := startServer(t, cfg, webCatalog())
			for _, network := range []string{"udp", "tcp"} {
				m := new(dns.Msg).SetQuestion("www.Example.com.", dns.TypeA)
				m.SetEdns0(1232, false)
				r := exchange(t, network, s.Addr(), m)
				wantRcode(t, r, tt.rcode)
				if got := strings.Join(addrs(r.Answer), ","); got != tt.want {
					t.Errorf("%s: answer %q, want %q", network, got, tt.want)
				}
				if r.RecursionAvailable != (len(tt.recursors) > 0) {
					t.Errorf("%s: RA=%v with %d recursors", network, r.RecursionAvailable, len(tt.recursors))
				}
				if len(r.Question) != 1 || r.Question[0].Name != "www.Example.com." {
					t.Errorf("%s: question %v not preserved", network, r.Question)
				}
			}
			// Our own domain is never forwarded.
			wantRcode(t, ask(t, "udp", s.Addr(), "nosuch.service.consul.", dns.TypeA), dns.RcodeNameError)
		})
	}

	t.Run("no recursion without RD", func(t *testing.T) {
		cfg := baseConfig()
		cfg.Recursors = []string{good}
		s := startServer(t, cfg, webCatalog())
		m := new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)
		m.RecursionDesired = false
		wantRcode(t, exchange(t, "udp", s.Addr(), m), dns.RcodeRefused)
	})
}

func TestMalformedQueries(t *testing.T) {
	s := startServer(t, baseConfig(), webCatalog())

	t.Run("over the wire", func(t *testing.T) {
		noQuestion := new(dns.Msg)
		noQuestion.Id = dns.Id()
		twoQuestions := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeA)
		twoQuestions.Question = append(twoQuestions.Question, dns.Question{Name: "db.service.consul.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		for _, network := range []string{"udp", "tcp"} {
			wantRcode(t, exchange(t, network, s.Addr(), noQuestion), dns.RcodeFormatError)
			wantRcode(t, exchange(t, network, s.Addr(), twoQuestions), dns.RcodeFormatError)
		}

		// Garbage gets no answer and does not stop the server.
		for _, junk := range [][]byte{{0x01}, {0xde, 0xad, 0xbe, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, make([]byte, 600)} {
			for _, network := range []string{"udp", "tcp"} {
				conn, err := net.Dial(network, s.Addr())
				if err != nil {
					t.Fatal(err)
				}
				if network == "tcp" {
					_, err = conn.Write(append([]byte{byte(len(junk) >> 8), byte(len(junk))}, junk...))
				} else {
					_, err = conn.Write(junk)
				}
				if err != nil {
					t.Fatal(err)
				}
				conn.Close()
			}
		}
		wantRcode(t, ask(t, "udp", s.Addr(), "web.service.consul.", dns.TypeA), dns.RcodeSuccess)
		wantRcode(t, ask(t, "tcp", s.Addr(), "web.service.consul.", dns.TypeA), dns.RcodeSuccess)
	})

	t.Run("handler", func(t *testing.T) {
		update := new(dns.Msg).SetUpdate("consul.")
		response := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeA)
		response.Response = true
		badVers := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeA)
		badVers.SetEdns0(1232, false)
		badVers.IsEdns0().SetVersion(1)
		tests := []struct {
			name   string
			req    *dns.Msg
			writes int
			rcode  int
		}{
			{"no question", new(dns.Msg), 1, dns.RcodeFormatError},
			{"two questions", &dns.Msg{Question: []dns.Question{{Name: "a.consul.", Qtype: 1, Qclass: 1}, {Name: "b.consul.", Qtype: 1, Qclass: 1}}}, 1, dns.RcodeFormatError},
			{"update", update, 1, dns.RcodeNotImplemented},
			{"a response", response, 0, 0},
			{"EDNS version 1", badVers, 1, dns.RcodeBadVers},
			{"empty name", &dns.Msg{Question: []dns.Question{{Name: "", Qtype: dns.TypeA, Qclass: 1}}}, 1, dns.RcodeFormatError},
			{"root", &dns.Msg{Question: []dns.Question{{Name: ".", Qtype: dns.TypeNS, Qclass: 1}}}, 1, dns.RcodeRefused},
			{"dots only", &dns.Msg{Question: []dns.Question{{Name: "..service.consul.", Qtype: dns.TypeSRV, Qclass: 1}}}, 1, dns.RcodeFormatError},
			{"RFC 2782 empty service", &dns.Msg{Question: []dns.Question{{Name: "_._tcp.service.consul.", Qtype: dns.TypeSRV, Qclass: 1}}}, 1, dns.RcodeNameError},
			{"addr too short", &dns.Msg{Question: []dns.Question{{Name: "0a00.addr.consul.", Qtype: dns.TypeA, Qclass: 1}}}, 1, dns.RcodeNameError},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				w := &recorder{remote: udpClient, pack: true}
				s.ServeDNS(w, tt.req)
				if len(w.msgs) != tt.writes {
					t.Fatalf("%d replies, want %d", len(w.msgs), tt.writes)
				}
				if tt.writes > 0 {
					wantRcode(t, w.msgs[0], tt.rcode)
				}
			})
		}
		s.ServeDNS(&recorder{remote: udpClient}, nil) // must not panic
	})
}

func TestStartAndClose(t *testing.T) {
	t.Run("UDP and TCP share the port", func(t *testing.T) {
		s := startServer(t, baseConfig(), webCatalog())
		host, port, err := net.SplitHostPort(s.Addr())
		if err != nil || host != "127.0.0.1" || port == "0" {
			t.Fatalf("Addr %q", s.Addr())
		}
		// Both transports answer on Addr.
		wantRcode(t, ask(t, "udp", s.Addr(), "web.service.consul.", dns.TypeA), dns.RcodeSuccess)
		wantRcode(t, ask(t, "tcp", s.Addr(), "web.service.consul.", dns.TypeA), dns.RcodeSuccess)
	})
	t.Run("several addresses", func(t *testing.T) {
		s := startServer(t, baseConfig(), webCatalog())
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		got := s.Addrs()
		if len(got) != 2 || got[0] != s.Addr() || got[0] == got[1] {
			t.Fatalf("Addrs %v", got)
		}
		for _, a := range got {
			wantRcode(t, ask(t, "tcp", a, "web.service.consul.", dns.TypeA), dns.RcodeSuccess)
		}
	})
	t.Run("taken port", func(t *testing.T) {
		s := startServer(t, baseConfig(), webCatalog())
		s2, err := New(baseConfig(), webCatalog())
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if err := s2.Start(s.Addr()); err == nil {
			t.Fatal("Start on a bound address succeeded")
		}
		if s2.Addr() != "" {
			t.Fatalf("failed Start left Addr %q", s2.Addr())
		}
	})
	t.Run("bad address", func(t *testing.T) {
		s, err := New(baseConfig(), webCatalog())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Start("no-port"); err == nil {
			t.Fatal("Start(no-port) succeeded")
		}
	})
	t.Run("close stops serving and is idempotent", func(t *testing.T) {
		s, err := New(baseConfig(), webCatalog())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		addr := s.Addr()
		s.Close()
		s.Close()
		if err := s.Start("127.0.0.1:0"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after Close: %v, want ErrClosed", err)
		}
		// The port is free again: both transports can be bound.
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("TCP port still bound after Close: %v", err)
		}
		ln.Close()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("UDP port still bound after Close: %v", err)
		}
		pc.Close()
	})
	t.Run("Close aborts recursion in flight", func(t *testing.T) {
		blocked := make(chan struct{})
		release := make(chan struct{})
		upstream := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
			close(blocked)
			<-release // never answer until the test ends
		})
		defer close(release)
		cfg := baseConfig()
		cfg.Recursors = []string{upstream}
		cfg.RecursorTimeout = time.Hour
		s, err := New(cfg, webCatalog())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("udp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		q, _ := new(dns.Msg).SetQuestion("slow.example.", dns.TypeA).Pack()
		if _, err := conn.Write(q); err != nil {
			t.Fatal(err)
		}
		<-blocked
		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return while a recursor exchange was in flight")
		}
	})
}

func TestNoGoroutinesLeftAfterClose(t *testing.T) {
	before := runtime.NumGoroutine()
	cat := newFakeCatalog()
	cat.addInstances("web", 5)
	s, err := New(baseConfig(), cat)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	for _, network := range []string{"udp", "tcp"} {
		ask(t, network, s.Addr(), "web.service.consul.", dns.TypeSRV)
	}
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no datacenter", Config{NodeName: "a"}, "Datacenter"},
		{"dotted datacenter", Config{NodeName: "a", Datacenter: "dc.1"}, "Datacenter"},
		{"no node name", Config{Datacenter: "dc1"}, "NodeName"},
		{"same alt domain", Config{Datacenter: "dc1", NodeName: "a", AltDomain: "CONSUL"}, "AltDomain"},
		{"negative limit", Config{Datacenter: "dc1", NodeName: "a", UDPAnswerLimit: -1}, "UDPAnswerLimit"},
		{"negative TTL", Config{Datacenter: "dc1", NodeName: "a", ServiceTTL: map[string]time.Duration{"web": -time.Second}}, `ServiceTTL["web"]`},
		{"bad recursor", Config{Datacenter: "dc1", NodeName: "a", Recursors: []string{":53"}}, `recursor ":53"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, newFakeCatalog())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "dns: config: ") {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
	if _, err := New(baseConfig(), nil); err == nil {
		t.Fatal("New with a nil Catalog succeeded")
	}

	s, err := New(Config{Datacenter: "DC1", NodeName: "a", Recursors: []string{"10.0.0.1", "[2001:db8::1]", "2001:db8::2", "ns:5353"}}, newFakeCatalog())
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(s.cfg.Recursors, " ")
	if want := "10.0.0.1:53 [2001:db8::1]:53 [2001:db8::2]:53 ns:5353"; got != want {
		t.Errorf("recursors %q, want %q", got, want)
	}
	if s.cfg.Domain != "consul." || s.cfg.Datacenter != "dc1" || s.cfg.UDPAnswerLimit != 3 || s.cfg.RecursorTimeout != 2*time.Second {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
}

// The answer limit applies to every record type of a plain UDP query, and
// not at all when the client announces an EDNS0 buffer (as in Consul).
func TestAnswerLimitPlainUDPOnly(t *testing.T) {
	cat := newFakeCatalog()
	cat.addInstances("web", 20)
	s := startServer(t, baseConfig(), cat)

	srv := exchange(t, "udp", s.Addr(), new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeSRV))
	if n := len(srvs(srv.Answer)); n != 3 || srv.Truncated {
		t.Errorf("plain UDP SRV: %d answers TC=%v, want 3 without TC", n, srv.Truncated)
	}
	m := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeA)
	m.SetEdns0(4096, false)
	if r := exchange(t, "udp", s.Addr(), m); len(r.Answer) != 20 || r.Truncated {
		t.Errorf("EDNS0 4096 A: %d answers TC=%v, want all 20", len(r.Answer), r.Truncated)
	}
}
