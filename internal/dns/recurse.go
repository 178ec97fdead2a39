package dns

import (
	"context"

	"github.com/miekg/dns"
)

// recurse answers a question outside our domains by forwarding req, as the
// client sent it, to each recursor in order over the client's transport
// (so a truncated UDP answer makes the client retry over TCP, which is then
// forwarded over TCP). The first answer that is NOERROR or NXDOMAIN is
// relayed; an error or any other rcode moves on to the next recursor, and
// SERVFAIL is answered when none is left.
//
// Without recursors, or when the client did not ask for recursion (RD
// clear), the answer is REFUSED: we are not authoritative for the name and
// will not look it up. That is what Consul answers without recursors.
func (s *Server) recurse(req *dns.Msg, tcp bool) *dns.Msg {
	if len(s.cfg.Recursors) == 0 || !req.RecursionDesired {
		m := rcodeReply(req, dns.RcodeRefused)
		m.RecursionAvailable = len(s.cfg.Recursors) > 0
		if opt := ednsReply(req); opt != nil {
			m.Extra = append(m.Extra, opt)
		}
		return m
	}
	network := "udp"
	if tcp {
		network = "tcp"
	}
	c := &dns.Client{Net: network, Timeout: s.cfg.RecursorTimeout}
	for _, addr := range s.cfg.Recursors {
		if s.ctx.Err() != nil {
			break // closing
		}
		r, err := s.exchange(c, req, addr)
		switch {
		case err != nil:
			s.log.Debug("dns: recursor failed", "recursor", addr, "question", questionString(req), "error", err)
			continue
		case r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError:
			s.log.Debug("dns: recursor answered "+dns.RcodeToString[r.Rcode], "recursor", addr, "question", questionString(req))
			continue
		}
		// The upstream's message may not have been compressed; ours is.
		r.Compress = true
		r.RecursionAvailable = true
		return r
	}
	s.log.Warn("dns: all recursors failed", "question", questionString(req), "recursors", len(s.cfg.Recursors))
	m := rcodeReply(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	if opt := ednsReply(req); opt != nil {
		m.Extra = append(m.Extra, opt)
	}
	return m
}

// exchange sends req to addr and reads the reply. miekg/dns only applies a
// context's deadline, not its cancellation, so the connection is closed
// when the server closes to unblock a read still waiting on the upstream.
func (s *Server) exchange(c *dns.Client, req *dns.Msg, addr string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RecursorTimeout)
	defer cancel()
	conn, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(s.ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, req, conn)
	return r, err
}
