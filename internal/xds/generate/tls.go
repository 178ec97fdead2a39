package generate

import (
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func (g *gen) secrets() []types.Resource {
	s := g.snap
	return []types.Resource{
		&tlsv3.Secret{Name: LeafSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(s.Leaf.CertPEM),
			PrivateKey:       inline(s.Leaf.PrivateKeyPEM),
		}}},
		&tlsv3.Secret{Name: RootsSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(joinPEM(s.Roots)),
		}}},
	}
}

func inline(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}

func joinPEM(pems []string) string {
	var b strings.Builder
	for _, p := range pems {
		b.WriteString(strings.TrimSpace(p))
		b.WriteByte('\n')
	}
	return b.String()
}

// httpALPN is what the public listener of an HTTP-like service offers a
// downstream sidecar: HTTP/2 or HTTP/1.1, as its cluster asks
// (upstreamALPN), or HTTP/1.1 if it asks for neither.
var httpALPN = []string{"h2", "http/1.1"}

// commonTLS presents the leaf and verifies the peer against the roots and
// san, both from SDS so that rotation never rebuilds listeners or
// clusters; alpn, when not nil, is offered (upstream) or chosen from
// (downstream). Sidecars are all ours, so TLS 1.3 is the minimum.
func commonTLS(san *matcherv3.StringMatcher, alpn []string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		AlpnProtocols: alpn,
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
			Name: LeafSecret, SdsConfig: adsSource(),
		}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: san,
				}},
			},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: RootsSecret, SdsConfig: adsSource()},
		}},
	}
}

// downstreamTLS requires a client certificate signed by the roots that
// names a service of our trust domain; which service may connect is the
// intentions' business (RBAC). alpn is as for commonTLS.
func downstreamTLS(trustDomain string, alpn []string) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         commonTLS(regexMatcher(anyServiceRegex(trustDomain)), alpn),
		RequireClientCertificate: wrapperspb.Bool(true),
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// upstreamTLS presents the leaf, sends the cluster name as SNI and
// accepts only a certificate naming the upstream service's SPIFFE ID.
func upstreamTLS(sni, spiffeID string) *corev3.TransportSocket {
	return upstreamTLSWithALPN(sni, spiffeID, nil)
}

// upstreamTLSWithALPN is upstreamTLS offering alpn (see commonTLS).
func upstreamTLSWithALPN(sni, spiffeID string, alpn []string) *corev3.TransportSocket {
	ctx := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: commonTLS(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: spiffeID}}, alpn),
		Sni:              sni,
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// anyServiceRegex matches the SPIFFE ID of any service of trustDomain, in
// any datacenter. Envoy's safe regexes are RE2 and match whole values.
func anyServiceRegex(trustDomain string) string {
	return "^spiffe://" + regexp.QuoteMeta(trustDomain) + "/ns/[^/]+/dc/[^/]+/svc/[^/]+$"
}

// serviceRegex matches the SPIFFE ID of service in any datacenter of
// trustDomain: intentions name services, not datacenters.
func serviceRegex(trustDomain, service string) string {
	return "^spiffe://" + regexp.QuoteMeta(trustDomain) + "/ns/[^/]+/dc/[^/]+/svc/" + regexp.QuoteMeta(service) + "$"
}
