package dns

import "github.com/miekg/dns"

// connectLookup answers <service>.connect: the healthy instances that
// accept Connect traffic for service — its proxies, and its native
// instances — at the address and port a Connect client dials, as A/AAAA
// and SRV records like <service>.service. Tags do not apply.
func (s *Server) connectLookup(qr query, parts []string) *dns.Msg {
	if len(parts) != 1 || parts[0] == "" {
		return s.nxdomain(qr)
	}
	service := parts[0]
	entries, err := s.catalog.HealthConnect(qr.dc, service)
	return s.instancesAnswer(qr, service, "", entries, err)
}
