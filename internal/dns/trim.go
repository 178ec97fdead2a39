package dns

import (
	"strings"

	"github.com/miekg/dns"
)

// advertisedUDPSize is the EDNS0 buffer size we announce in replies. The
// UDP read buffer is larger, so any client query fits.
const advertisedUDPSize = dns.DefaultMsgSize

// finish completes m: recs become the answer section, their additional
// records (each distinct one once) the additional section, and the
// client's EDNS0 is answered with an OPT record. Trailing answers, with the
// glue only they needed, are then dropped until the message fits the
// transport: the client's EDNS0 buffer size (512 bytes without EDNS0) over
// UDP, 64KiB over TCP. Dropping answers to fit sets TC, because the client
// would otherwise take a partial RRset for the whole one; tc sets it as
// well (the UDP answer limit cut records and EnableTruncate is set).
func (s *Server) finish(qr query, m *dns.Msg, recs []record, tc bool) {
	opt := ednsReply(qr.req)
	maxSize := dns.MaxMsgSize
	if !qr.tcp {
		maxSize = udpSize(qr.req)
	}

	// Keep only the first occurrence of each additional record. What a
	// prefix of recs needs is then the concatenation of their lists.
	type key struct {
		name  string
		rtype uint16
	}
	seen := make(map[key]bool)
	extras := make([][]dns.RR, len(recs))
	for i, r := range recs {
		for _, x := range r.extra {
			k := key{strings.ToLower(x.Header().Name), x.Header().Rrtype}
			if !seen[k] {
				seen[k] = true
				extras[i] = append(extras[i], x)
			}
		}
	}
	build := func(n int) {
		m.Answer = m.Answer[:0]
		m.Extra = m.Extra[:0]
		for i, r := range recs[:n] {
			m.Answer = append(m.Answer, r.rr)
			m.Extra = append(m.Extra, extras[i]...)
		}
		if opt != nil {
			m.Extra = append(m.Extra, opt)
		}
	}

	build(len(recs))
	if m.Len() <= maxSize {
		m.Truncated = tc
		return
	}
	// Binary search for the longest prefix that fits: Len is linear in the
	// message, so dropping one record at a time would be quadratic.
	lo, hi := 0, len(recs) // recs[:lo] fits (nothing to answer always does), recs[:hi] does not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		build(mid)
		if m.Len() <= maxSize {
			lo = mid
		} else {
			hi = mid
		}
	}
	build(lo)
	m.Truncated = true
}

// udpSize is the largest UDP reply req's sender accepts.
func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	return dns.MinMsgSize
}

// ednsReply is the OPT record for the reply to req, or nil if req has none.
func ednsReply(req *dns.Msg) *dns.OPT {
	if req.IsEdns0() == nil {
		return nil
	}
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(advertisedUDPSize)
	return o
}
