package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/miekg/dns"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("dns: server closed")

// bindAttempts is how often Start retries an ephemeral port whose TCP twin
// is taken.
const bindAttempts = 10

// Server answers DNS queries for the configured domains from a Catalog and
// forwards the rest to recursors. It is one handler shared by any number of
// UDP+TCP listener pairs (one per Start call).
type Server struct {
	cfg       Config
	ttls      ttlTable
	domains   []string // Domain and AltDomain, longest first
	catalog   Catalog
	log       *slog.Logger
	ctx       context.Context // cancelled by Close; bounds recursor exchanges
	cancel    context.CancelFunc
	servers   sync.WaitGroup // the miekg serve loops started by Start
	closeOnce sync.Once

	mu        sync.Mutex
	closed    bool       // guarded by mu
	listeners []listener // guarded by mu
}

// listener is one address served over UDP and TCP on the same port.
type listener struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server
}

// New validates cfg and returns a server reading from cat. It listens on
// nothing until Start.
func New(cfg Config, cat Catalog) (*Server, error) {
	if cat == nil {
		return nil, errors.New("dns: New: nil Catalog")
	}
	cfg, ttls, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	domains := []string{cfg.Domain}
	if cfg.AltDomain != "" {
		// Longest first, so that an AltDomain under Domain (or the other
		// way round) matches the more specific one.
		if len(cfg.AltDomain) > len(cfg.Domain) {
			domains = []string{cfg.AltDomain, cfg.Domain}
		} else {
			domains = append(domains, cfg.AltDomain)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:     cfg,
		ttls:    ttls,
		domains: domains,
		catalog: cat,
		log:     cfg.Logger,
		ctx:     ctx,
		cancel:  cancel,
	}, nil
}

// Start binds UDP and TCP on addr ("127.0.0.1:8600") and serves both until
// Close. With port 0 the UDP port is picked first and TCP bound to the same
// number, retrying with a new UDP port a few times if that TCP port is
// taken, so that Addr names both. Start returns once both sockets are
// serving, or with the error; on error nothing stays bound.
//
// Start may be called once per listen address (the agent's
// addresses.dns list); every address serves the same answers.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	pc, ln, err := listenPair(addr)
	if err != nil {
		return err
	}
	l := listener{
		addr: pc.LocalAddr().String(),
		// UDPSize is the read buffer: large enough for any EDNS0 query.
		udp: &dns.Server{PacketConn: pc, Handler: s, UDPSize: dns.MaxMsgSize},
		tcp: &dns.Server{Listener: ln, Handler: s},
	}
	udpErr := s.serve(l.udp)
	tcpErr := s.serve(l.tcp)
	if err := errors.Join(<-udpErr, <-tcpErr); err != nil {
		// Whichever started is shut down; sockets of one that failed
		// before serving are closed here.
		for _, srv := range []*dns.Server{l.udp, l.tcp} {
			_ = srv.Shutdown()
		}
		pc.Close()
		ln.Close()
		return fmt.Errorf("dns: serve %s: %w", l.addr, err)
	}
	s.listeners = append(s.listeners, l)
	s.log.Info("dns: listening", "addr", l.addr, "domain", s.cfg.Domain)
	return nil
}

// serve runs srv in a goroutine owned by s.servers. The returned channel
// yields nil once srv is serving, or the error that stopped it first.
func (s *Server) serve(srv *dns.Server) <-chan error {
	ready := make(chan error, 1)
	var once sync.Once
	report := func(err error) { once.Do(func() { ready <- err }) }
	s.servers.Add(1)
	go func() {
		defer s.servers.Done()
		started := false // NotifyStartedFunc runs on this goroutine
		srv.NotifyStartedFunc = func() { started = true; report(nil) }
		err := srv.ActivateAndServe()
		switch {
		case err == nil:
			report(errors.New("stopped before serving"))
		case !started:
			report(err)
		default:
			// The loop died on its own (Shutdown makes it return nil):
			// that socket no longer answers.
			s.log.Error("dns: serve loop ended", "error", err)
		}
	}()
	return ready
}

// listenPair binds UDP and TCP to the same address.
func listenPair(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: listen %q: %w", addr, err)
	}
	attempts := 1
	if port == "0" || port == "" {
		attempts = bindAttempts
	}
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		p := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = fmt.Errorf("dns: listen tcp %s: %w", net.JoinHostPort(host, p), err)
	}
	return nil, nil, lastErr
}

// Addr returns the "host:port" bound by the first successful Start (UDP and
// TCP share it), or "" before that.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listeners) == 0 {
		return ""
	}
	return s.listeners[0].addr
}

// Addrs returns the addresses bound by every successful Start, in order.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.addr
	}
	return out
}

// Close stops every listener, aborts in-flight recursor exchanges and waits
// for the serve loops and their in-flight queries to finish. It is safe to
// call more than once; Start fails afterwards.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		ls := s.listeners
		s.mu.Unlock()

		s.cancel()
		for _, l := range ls {
			// Shutdown waits for the handlers of the loop it stops.
			_ = l.udp.Shutdown()
			_ = l.tcp.Shutdown()
		}
		s.servers.Wait()
	})
	return nil
}

// ServeDNS answers req on w; it implements dns.Handler and is exported so
// tests and benchmarks can call it without sockets. Exactly one message is
// written for every request: the answer, FORMERR for a request without
// exactly one question, NOTIMP for an opcode other than QUERY, SERVFAIL
// when the catalog fails or every recursor fails, REFUSED for a name
// outside our domains when recursion is unavailable. Whether w is TCP is
// read from w.RemoteAddr (a *net.TCPAddr); anything else is treated as UDP.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if req == nil {
		return
	}
	defer func() {
		// A bug in answering one query must not take the agent down.
		if r := recover(); r != nil {
			s.log.Error("dns: panic answering query", "panic", r, "stack", string(debug.Stack()))
			s.write(w, req, rcodeReply(req, dns.RcodeServerFailure))
		}
	}()
	tcp := isTCP(w)

	switch {
	case req.Response:
		return // never answer answers: that is how reflection loops start
	case req.Opcode != dns.OpcodeQuery:
		s.write(w, req, rcodeReply(req, dns.RcodeNotImplemented))
		return
	case len(req.Question) != 1:
		s.write(w, req, rcodeReply(req, dns.RcodeFormatError))
		return
	}
	if _, ok := dns.IsDomainName(req.Question[0].Name); !ok {
		// Only possible when called directly: such a name does not unpack.
		// It could not be packed into the reply either, so drop it.
		m := rcodeReply(req, dns.RcodeFormatError)
		m.Question = nil
		s.write(w, req, m)
		return
	}

	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		// RFC 6891 §6.1.3: we speak EDNS version 0 only.
		m := rcodeReply(req, dns.RcodeBadVers)
		m.Extra = []dns.RR{ednsReply(req)}
		s.write(w, req, m)
		return
	}

	q := req.Question[0]
	if domain, ok := s.ourDomain(q.Name); ok {
		s.write(w, req, s.answer(req, domain, tcp))
		return
	}
	s.write(w, req, s.recurse(req, tcp))
}

// write sends m, falling back to a bare SERVFAIL if m cannot be packed (a
// catalog name that is not a valid DNS name, say) so the client is not left
// waiting.
func (s *Server) write(w dns.ResponseWriter, req, m *dns.Msg) {
	err := w.WriteMsg(m)
	if err == nil {
		return
	}
	s.log.Debug("dns: write response", "question", questionString(req), "error", err)
	if _, perr := m.Pack(); perr != nil {
		_ = w.WriteMsg(rcodeReply(req, dns.RcodeServerFailure))
	}
}

// rcodeReply is an empty reply to req with rcode. The question is echoed
// only when there is exactly one, and the reply carries no records.
func rcodeReply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	m.Rcode = rcode
	if len(req.Question) == 1 {
		m.Question = []dns.Question{req.Question[0]}
	}
	return m
}

func isTCP(w dns.ResponseWriter) bool {
	_, ok := w.RemoteAddr().(*net.TCPAddr)
	return ok
}

func questionString(req *dns.Msg) string {
	if len(req.Question) == 0 {
		return ""
	}
	q := req.Question[0]
	return q.Name + " " + dns.TypeToString[q.Qtype]
}
