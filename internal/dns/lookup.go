package dns

import (
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// ourDomain reports which of our domains name is in (name itself or a
// subdomain), case-insensitively.
func (s *Server) ourDomain(name string) (string, bool) {
	name = strings.ToLower(dns.Fqdn(name))
	for _, d := range s.domains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return d, true
		}
	}
	return "", false
}

// query is a parsed question in one of our domains.
type query struct {
	req    *dns.Msg
	q      dns.Question
	domain string // the domain it was asked in; answers use it
	dc     string // the datacenter asked about: ours unless named
	tcp    bool
}

// answer builds the reply to a question in domain.
func (s *Server) answer(req *dns.Msg, domain string, tcp bool) *dns.Msg {
	qr := query{req: req, q: req.Question[0], domain: domain, tcp: tcp}
	name := strings.ToLower(dns.Fqdn(qr.q.Name))
	if name == domain {
		return s.apex(qr)
	}
	labels := dns.SplitDomainName(strings.TrimSuffix(name, "."+domain))

	// The kind label is the rightmost known one: what precedes it names
	// the thing (service and tag, node), what follows is the datacenter.
	kind := -1
	for i := len(labels) - 1; i >= 0 && kind < 0; i-- {
		switch labels[i] {
		case "service", "node", "addr", "connect":
			kind = i
		}
	}
	if kind <= 0 {
		return s.nxdomain(qr)
	}
	dc, ok := s.datacenter(labels[kind+1:])
	if !ok {
		return s.nxdomain(qr)
	}
	qr.dc = dc
	parts := labels[:kind]
	switch labels[kind] {
	case "service":
		return s.serviceLookup(qr, parts)
	case "node":
		return s.nodeLookup(qr, strings.Join(parts, "."))
	case "connect":
		return s.connectLookup(qr, parts) // connect.go
	default:
		return s.addrLookup(qr, parts)
	}
}

// datacenter returns the datacenter named by the labels after the kind
// label: none (ours), "<dc>" or "<dc>.dc".
func (s *Server) datacenter(suffix []string) (string, bool) {
	switch {
	case len(suffix) == 0:
		return s.cfg.Datacenter, true
	case len(suffix) == 1:
		return suffix[0], true
	case len(suffix) == 2 && suffix[1] == "dc":
		return suffix[0], true
	}
	return "", false
}

// reply starts an authoritative NOERROR reply to qr.
func (s *Server) reply(qr query) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(qr.req)
	m.Authoritative = true
	m.RecursionAvailable = len(s.cfg.Recursors) > 0
	m.Compress = true
	return m
}

func (s *Server) nxdomain(qr query) *dns.Msg {
	m := s.reply(qr)
	m.Rcode = dns.RcodeNameError
	m.Ns = []dns.RR{s.soa(qr.domain)}
	s.finish(qr, m, nil, false)
	return m
}

// nodata is NOERROR with no answers: the name exists, not this data.
func (s *Server) nodata(qr query) *dns.Msg {
	m := s.reply(qr)
	m.Ns = []dns.RR{s.soa(qr.domain)}
	s.finish(qr, m, nil, false)
	return m
}

func (s *Server) servfail(qr query, what string, err error) *dns.Msg {
	s.log.Warn("dns: catalog lookup failed", "lookup", what, "question", questionString(qr.req), "error", err)
	m := s.reply(qr)
	m.Rcode = dns.RcodeServerFailure
	s.finish(qr, m, nil, false)
	return m
}

func (s *Server) soa(domain string) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 0},
		Ns:      "ns." + domain,
		Mbox:    "hostmaster." + domain,
		Serial:  uint32(time.Now().Unix()),
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  soaMinTTL,
	}
}

// apex answers questions about the domain itself: SOA, NS (this agent, with
// its address as glue) or both for ANY; other types have no data.
func (s *Server) apex(qr query) *dns.Msg {
	t := qr.q.Qtype
	if t != dns.TypeSOA && t != dns.TypeNS && t != dns.TypeANY {
		return s.nodata(qr)
	}
	var recs []record
	if t == dns.TypeSOA || t == dns.TypeANY {
		soa := s.soa(qr.domain)
		soa.Hdr.Name = qr.q.Name
		recs = append(recs, record{rr: soa})
	}
	if t == dns.TypeNS || t == dns.TypeANY {
		target := nodeTarget(s.cfg.NodeName, s.cfg.Datacenter, qr.domain)
		ns := record{rr: &dns.NS{
			Hdr: dns.RR_Header{Name: qr.q.Name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: seconds(s.cfg.NodeTTL)},
			Ns:  target,
		}}
		// Glue is best effort: the NS answer stands without it.
		node, err := s.catalog.Node(s.cfg.Datacenter, strings.ToLower(s.cfg.NodeName))
		if err != nil {
			s.log.Debug("dns: NS glue", "node", s.cfg.NodeName, "error", err)
		}
		if node != nil {
			if ip, err := netip.ParseAddr(node.Address); err == nil {
				ns.extra = []dns.RR{addrRR(target, ip.Unmap(), seconds(s.cfg.NodeTTL))}
			}
		}
		recs = append(recs, ns)
	}
	m := s.reply(qr)
	s.finish(qr, m, recs, false)
	return m
}

// nodeLookup answers <node>.node[.<dc>].<domain>: the node's address as A
// or AAAA (a CNAME when it is a host name) and its meta as TXT.
func (s *Server) nodeLookup(qr query, name string) *dns.Msg {
	if name == "" {
		return s.nxdomain(qr)
	}
	node, err := s.catalog.Node(qr.dc, name)
	if errors.Is(err, ErrNoDatacenter) {
		return s.nxdomain(qr)
	}
	if err != nil {
		return s.servfail(qr, "node "+name, err)
	}
	if node == nil {
		return s.nxdomain(qr)
	}
	ttl := seconds(s.cfg.NodeTTL)
	t := qr.q.Qtype
	var recs []record
	if t == dns.TypeA || t == dns.TypeAAAA || t == dns.TypeANY {
		if rr := addressRR(qr.q.Name, node.Address, t, ttl); rr != nil {
			recs = append(recs, record{rr: rr})
		}
	}
	if t == dns.TypeTXT || t == dns.TypeANY {
		if txt := metaTXT(qr.q.Name, node.Meta, ttl); txt != nil {
			recs = append(recs, record{rr: txt})
		}
	}
	if len(recs) == 0 {
		return s.nodata(qr)
	}
	m := s.reply(qr)
	s.finish(qr, m, recs, false)
	return m
}

// addrLookup answers the synthetic <hex-ip>.addr[.<dc>].<domain> names used
// as SRV targets of services with their own address.
func (s *Server) addrLookup(qr query, parts []string) *dns.Msg {
	if len(parts) != 1 {
		return s.nxdomain(qr)
	}
	b, err := hex.DecodeString(parts[0])
	if err != nil {
		return s.nxdomain(qr)
	}
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		return s.nxdomain(qr)
	}
	rr := addressRR(qr.q.Name, ip.String(), qr.q.Qtype, seconds(s.cfg.NodeTTL))
	if rr == nil {
		return s.nodata(qr)
	}
	m := s.reply(qr)
	s.finish(qr, m, []record{{rr: rr}}, false)
	return m
}

// serviceLookup answers [<tag>.]<service>.service and the RFC 2782 form
// _<service>._<tag>.service (where tag "tcp" means any tag).
func (s *Server) serviceLookup(qr query, parts []string) *dns.Msg {
	var service, tag string
	switch n := len(parts); {
	case n == 2 && strings.HasPrefix(parts[0], "_") && strings.HasPrefix(parts[1], "_"):
		service, tag = parts[0][1:], parts[1][1:]
		if tag == "tcp" {
			tag = ""
		}
	case n == 1:
		service = parts[0]
	default:
		// Tags may contain dots; the service is the last label.
		service, tag = parts[n-1], strings.Join(parts[:n-1], ".")
	}
	if service == "" {
		return s.nxdomain(qr)
	}
	entries, err := s.catalog.HealthService(qr.dc, service)
	return s.instancesAnswer(qr, service, tag, entries, err)
}

// instancesAnswer answers a service-like question with the healthy
// instances among entries, the catalog's answer for service (err its
// error).
func (s *Server) instancesAnswer(qr query, service, tag string, entries []*structs.CheckServiceNode, err error) *dns.Msg {
	if errors.Is(err, ErrNoDatacenter) {
		return s.nxdomain(qr)
	}
	if err != nil {
		return s.servfail(qr, "service "+service, err)
	}
	if len(entries) == 0 {
		return s.nxdomain(qr)
	}
	insts := s.healthy(entries, tag)
	// Answer order is the only load balancing a DNS client gets.
	rand.Shuffle(len(insts), func(i, j int) { insts[i], insts[j] = insts[j], insts[i] })

	// As in Consul, the answer limit applies to plain (non-EDNS0) UDP
	// queries only: a client that announces a larger buffer gets as many
	// records as fit in it. Cutting before the records are built spares
	// building what would not be sent.
	limited := false
	if !qr.tcp && qr.req.IsEdns0() == nil && len(insts) > s.cfg.UDPAnswerLimit && qr.q.Qtype != dns.TypeANY {
		insts, limited = insts[:s.cfg.UDPAnswerLimit], true
	}
	ttl := s.ttls.lookup(service)
	var recs []record
	switch qr.q.Qtype {
	case dns.TypeSRV:
		recs = s.srvRecords(qr, insts, ttl)
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		recs = addressRecords(qr.q.Name, insts, qr.q.Qtype, ttl)
	}
	if len(recs) == 0 {
		return s.nodata(qr)
	}
	if !qr.tcp && qr.req.IsEdns0() == nil && len(recs) > s.cfg.UDPAnswerLimit {
		recs, limited = recs[:s.cfg.UDPAnswerLimit], true
	}
	m := s.reply(qr)
	s.finish(qr, m, recs, limited && s.cfg.EnableTruncate)
	return m
}

// instance is a healthy service instance with the address it is reached at.
type instance struct {
	node     *structs.Node
	svc      *structs.NodeService
	addr     string     // Service.Address, or the node's
	ip       netip.Addr // addr parsed; invalid when addr is a host name
	nodeAddr bool       // addr is the node's address
	weight   uint16
}

// healthy returns the instances with tag (any when "") whose checks allow
// them: no critical or maintenance check, node-level ones included; no
// warning either under OnlyPassing.
func (s *Server) healthy(entries []*structs.CheckServiceNode, tag string) []instance {
	out := make([]instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Node == nil || e.Service == nil || !hasTag(e.Service.Tags, tag) {
			continue
		}
		ok, warning := true, false
		for _, c := range e.Checks {
			if c == nil || (c.ServiceID != "" && c.ServiceID != e.Service.ID) {
				continue
			}
			switch c.Status {
			case structs.HealthPassing:
			case structs.HealthWarning:
				warning = true
				ok = ok && !s.cfg.OnlyPassing
			default: // critical, maintenance, and anything unknown
				ok = false
			}
		}
		if !ok {
			continue
		}
		in := instance{node: e.Node, svc: e.Service, addr: e.Service.Address}
		if in.addr == "" || in.addr == e.Node.Address {
			in.addr, in.nodeAddr = e.Node.Address, true
		}
		if ip, err := netip.ParseAddr(in.addr); err == nil {
			in.ip = ip.Unmap()
		}
		w := e.Service.Weights.Passing
		if warning {
			w = e.Service.Weights.Warning
		}
		in.weight = uint16(max(1, min(w, 0xffff)))
		out = append(out, in)
	}
	return out
}

func hasTag(tags []string, tag string) bool {
	if tag == "" {
		return true
	}
	for _, t := range tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// record is one answer with the additional records that go with it, so that
// trimming an answer also trims its glue.
type record struct {
	rr    dns.RR
	extra []dns.RR
}

// addressRecords are the A/AAAA answers (by qtype; both for ANY) of insts,
// one per distinct address. Instances at a host name contribute a single
// CNAME, and only when no instance has an IP of the asked family: a CNAME
// cannot share its owner name with other data.
func addressRecords(name string, insts []instance, qtype uint16, ttl uint32) []record {
	seen := make(map[netip.Addr]bool, len(insts))
	var out []record
	cname := ""
	for _, in := range insts {
		if !in.ip.IsValid() {
			if cname == "" && in.addr != "" {
				cname = in.addr
			}
			continue
		}
		if seen[in.ip] || !wants(qtype, in.ip) {
			continue
		}
		seen[in.ip] = true
		out = append(out, record{rr: addrRR(name, in.ip, ttl)})
	}
	if len(out) == 0 && cname != "" {
		out = append(out, record{rr: cnameRR(name, cname, ttl)})
	}
	return out
}

// srvRecords are the SRV answers of insts. The target is the node's name
// when the instance uses the node's address, else a synthetic .addr name,
// with the address in the additional section either way; an instance at a
// host name targets that host name, without glue.
func (s *Server) srvRecords(qr query, insts []instance, ttl uint32) []record {
	out := make([]record, 0, len(insts))
	for _, in := range insts {
		var target string
		switch {
		case in.nodeAddr:
			target = nodeTarget(in.node.Node, qr.dc, qr.domain)
		case in.ip.IsValid():
			target = addrTarget(in.ip, qr.dc, qr.domain)
		default:
			target = dns.Fqdn(in.addr)
		}
		r := record{rr: &dns.SRV{
			Hdr:      dns.RR_Header{Name: qr.q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl},
			Priority: 1,
			Weight:   in.weight,
			Port:     uint16(in.svc.Port),
			Target:   target,
		}}
		if in.ip.IsValid() {
			r.extra = []dns.RR{addrRR(target, in.ip, ttl)}
		}
		out = append(out, r)
	}
	return out
}

func nodeTarget(node, dc, domain string) string {
	return dns.Fqdn(node + ".node." + dc + "." + domain)
}

func addrTarget(ip netip.Addr, dc, domain string) string {
	return hex.EncodeToString(ip.AsSlice()) + ".addr." + dc + "." + domain
}

// wants reports whether qtype asks for ip's family.
func wants(qtype uint16, ip netip.Addr) bool {
	switch qtype {
	case dns.TypeANY:
		return true
	case dns.TypeA:
		return ip.Is4()
	case dns.TypeAAAA:
		return ip.Is6()
	}
	return false
}

// addressRR is the answer for address (an IP or a host name) to qtype, or
// nil when it has none (an IPv6 address asked for A, say).
func addressRR(name, address string, qtype uint16, ttl uint32) dns.RR {
	ip, err := netip.ParseAddr(address)
	if err != nil {
		if address == "" {
			return nil
		}
		return cnameRR(name, address, ttl)
	}
	ip = ip.Unmap()
	if !wants(qtype, ip) {
		return nil
	}
	return addrRR(name, ip, ttl)
}

func addrRR(name string, ip netip.Addr, ttl uint32) dns.RR {
	if ip.Is4() {
		return &dns.A{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   ip.AsSlice(),
		}
	}
	return &dns.AAAA{
		Hdr:  dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl},
		AAAA: ip.AsSlice(),
	}
}

func cnameRR(name, target string, ttl uint32) dns.RR {
	return &dns.CNAME{
		Hdr:    dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl},
		Target: dns.Fqdn(target),
	}
}

// metaTXT renders node meta as one TXT record of "key=value" strings,
// sorted by key. Keys prefixed "rfc1035-" contribute the bare value, as in
// Consul, for records that must hold exactly a given string.
func metaTXT(name string, meta map[string]string, ttl uint32) dns.RR {
	if len(meta) == 0 {
		return nil
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	txt := make([]string, 0, len(keys))
	for _, k := range keys {
		if strings.HasPrefix(k, "rfc1035-") {
			txt = append(txt, meta[k])
		} else {
			txt = append(txt, k+"="+meta[k])
		}
	}
	return &dns.TXT{
		Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
		Txt: txt,
	}
}
