// Package dns owns the agent's DNS interface: a Consul-compatible
// authoritative server for the "consul." domain (and an optional alternate
// domain) that answers from the catalog and forwards every other name to
// the configured recursors. The wire format and the UDP/TCP servers are
// github.com/miekg/dns.
//
// # Names
//
//	[<tag>.]<service>.service[.<dc>[.dc]].<domain>   A, AAAA, ANY, SRV
//	_<service>._<tag>.service[.<dc>].<domain>       RFC 2782; _tcp means any tag
//	<service>.connect[.<dc>[.dc]].<domain>           A, AAAA, ANY, SRV of its proxies and native instances
//	<node>.node[.<dc>].<domain>                      A/AAAA (CNAME if a host name), TXT of node meta
//	<hex-ip>.addr[.<dc>].<domain>                    SRV targets of services with their own address
//	<domain>                                         SOA, NS
//
// Names are case-insensitive. A name in another datacenter is answered
// from that datacenter's catalog (the Catalog reaches its servers), with
// SRV targets in that datacenter; a datacenter no server knows is
// NXDOMAIN.
//
// # Answers
//
// A service answers with its healthy instances: those without a critical
// (or maintenance) check, node-level checks included; warning instances
// too unless Config.OnlyPassing. Answers are shuffled on every query. A
// records come from Service.Address, or the node's address when that is
// empty; SRV records have priority 1, the instance's passing (or warning)
// weight, and target <node>.node.<dc>.<domain> when the node's address is
// used, <hex-ip>.addr.<dc>.<domain> otherwise, with the address in the
// additional section.
//
// Over UDP at most Config.UDPAnswerLimit (3) address records are returned,
// and a reply is cut to the client's buffer size (512 bytes, or its EDNS0
// size); cutting to fit sets TC, cutting to the limit sets TC only with
// Config.EnableTruncate. Over TCP the whole answer is returned (up to 64KiB).
//
// An unknown service, node or name answers NXDOMAIN; a service with no
// healthy instance (or none with the tag) answers NOERROR without records.
// Both carry the domain's SOA in the authority section (ns.<domain>,
// hostmaster.<domain>, serial = unix time, refresh 3600, retry 600, expire
// 86400, minimum 0).
//
// Names outside our domains are forwarded as received to Config.Recursors
// in order; SERVFAIL if all fail, REFUSED if none are configured or the
// client did not set RD. Reverse (PTR) lookups and prepared queries are
// not answered from the catalog yet: they are forwarded like any other name
// (.query names answer NXDOMAIN).
//
// # Example
//
//	srv, err := dns.New(dns.Config{
//		Datacenter: "dc1",
//		NodeName:   "agent-1",
//		ServiceTTL: map[string]time.Duration{"*": 5 * time.Second},
//		Recursors:  []string{"8.8.8.8:53"},
//	}, catalog)
//	if err != nil {
//		return err
//	}
//	if err := srv.Start("127.0.0.1:8600"); err != nil {
//		return err
//	}
//	defer srv.Close()
//
// and then
//
//	$ dig @127.0.0.1 -p 8600 web.service.consul SRV
//	;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 3
//	;; ANSWER SECTION:
//	web.service.consul.	5	IN	SRV	1 1 8080 node-1.node.dc1.consul.
//	web.service.consul.	5	IN	SRV	1 1 8080 0a000007.addr.dc1.consul.
//	;; ADDITIONAL SECTION:
//	node-1.node.dc1.consul.	5	IN	A	10.0.0.1
//	0a000007.addr.dc1.consul.	5	IN	A	10.0.0.7
//
// Start may be called once per listen address; each binds UDP and TCP on
// the same port (with port 0 too) and Close stops them all.
package dns
