// Package connect holds what the service mesh's parts share about
// identity: the SPIFFE IDs that name services in certificates and in
// authorization requests.
package connect

import (
	"fmt"
	"net/url"
	"strings"
)

// DefaultNamespace is the only namespace Trellis has; it still appears in
// every SPIFFE ID, as in Consul's.
const DefaultNamespace = "default"

// TrustDomain is the SPIFFE trust domain of a cluster: its cluster ID (a
// UUID chosen when the CA is first set up) under "consul".
func TrustDomain(clusterID string) string { return clusterID + ".consul" }

// ServiceID is a service's SPIFFE identity:
// spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>.
type ServiceID struct {
	TrustDomain string
	Namespace   string
	Datacenter  string
	Service     string
}

// URI returns the ID as a URI, as it appears in a certificate's URI SAN.
func (id ServiceID) URI() *url.URL {
	ns := id.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	return &url.URL{
		Scheme: "spiffe",
		Host:   id.TrustDomain,
		Path:   fmt.Sprintf("/ns/%s/dc/%s/svc/%s", ns, id.Datacenter, id.Service),
	}
}

// String returns the URI's text.
func (id ServiceID) String() string { return id.URI().String() }

// ParseServiceID reads a service SPIFFE ID from its URI text. Anything
// else, including the IDs of agents and of the CA itself, is an error.
func ParseServiceID(s string) (ServiceID, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ServiceID{}, fmt.Errorf("connect: invalid SPIFFE ID %q: %v", s, err)
	}
	return ServiceIDFromURI(u)
}

// ServiceIDFromURI reads a service SPIFFE ID from a parsed URI.
func ServiceIDFromURI(u *url.URL) (ServiceID, error) {
	if u == nil || u.Scheme != "spiffe" {
		return ServiceID{}, fmt.Errorf("connect: SPIFFE ID %q: scheme must be spiffe", u)
	}
	if u.Host == "" {
		return ServiceID{}, fmt.Errorf("connect: SPIFFE ID %q: no trust domain", u)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" {
		return ServiceID{}, fmt.Errorf("connect: SPIFFE ID %q: must have no port, user, query or fragment", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 6 || parts[0] != "ns" || parts[2] != "dc" || parts[4] != "svc" {
		return ServiceID{}, fmt.Errorf("connect: SPIFFE ID %q: not a service ID (spiffe://<domain>/ns/<ns>/dc/<dc>/svc/<service>)", u)
	}
	for _, p := range []string{parts[1], parts[3], parts[5]} {
		if p == "" {
			return ServiceID{}, fmt.Errorf("connect: SPIFFE ID %q: empty path segment", u)
		}
	}
	return ServiceID{
		TrustDomain: strings.ToLower(u.Host),
		Namespace:   parts[1],
		Datacenter:  parts[3],
		Service:     parts[5],
	}, nil
}
