package configentry

import (
	"encoding/json"
	"fmt"
	"time"
)

// The discovery chain kinds: service-resolver and service-router, with
// the JSON shapes of Consul's api module (config_entry_discoverychain.go).
// Their durations (ConnectTimeout, RequestTimeout, a route's
// RequestTimeout and IdleTimeout) are answered as Go duration strings
// ("5s"), which is what that module's decoder requires; the lenient
// decoder takes a string or a number of nanoseconds, as for every other
// duration. Only part of each kind is acted on yet: the rest is refused
// with "not supported yet" naming the field (see discoverychain_validate.go).

// ServiceResolverConfigEntry is the service-resolver entry of one service:
// how its instances are chosen and reached.
type ServiceResolverConfigEntry struct {
	Kind      string
	Name      string
	Partition string `json:",omitempty"`
	Namespace string `json:",omitempty"`

	// Subsets, redirects and failover are not supported yet: kept opaque,
	// and refused when given.
	DefaultSubset        string         `json:",omitempty"`
	Subsets              map[string]any `json:",omitempty"`
	Redirect             map[string]any `json:",omitempty"`
	Failover             map[string]any `json:",omitempty"`
	PrioritizeByLocality map[string]any `json:",omitempty"`

	// ConnectTimeout bounds a new connection to an instance; 0 leaves it
	// to the downstream's upstream configuration (else 5 s).
	ConnectTimeout time.Duration `json:",omitempty"`
	// RequestTimeout bounds an HTTP request to the service, unless its
	// route sets its own; 0 leaves Envoy's default (15 s).
	RequestTimeout time.Duration `json:",omitempty"`
	// LoadBalancer chooses an instance for each request or connection.
	LoadBalancer *LoadBalancer `json:",omitempty"`

	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// Load-balancing policies of LoadBalancer.Policy; "" is round robin.
const (
	LBPolicyRoundRobin   = "round_robin"
	LBPolicyLeastRequest = "least_request"
	LBPolicyRandom       = "random"
	LBPolicyRingHash     = "ring_hash"
	LBPolicyMaglev       = "maglev"
)

// Hash policy fields of HashPolicy.Field.
const (
	HashPolicyHeader         = "header"
	HashPolicyCookie         = "cookie"
	HashPolicyQueryParameter = "query_parameter"
)

// LoadBalancer is a load-balancing policy and its settings.
type LoadBalancer struct {
	Policy             string              `json:",omitempty"`
	RingHashConfig     *RingHashConfig     `json:",omitempty"`
	LeastRequestConfig *LeastRequestConfig `json:",omitempty"`
	// HashPolicies say what a request is hashed on (ring_hash and maglev
	// only); with none, or none that applies, the host is random.
	HashPolicies []HashPolicy `json:",omitempty"`
}

// RingHashConfig sizes the ring of the ring_hash policy; 0 is Envoy's
// default (1024 and 8M entries).
type RingHashConfig struct {
	MinimumRingSize uint64 `json:",omitempty"`
	MaximumRingSize uint64 `json:",omitempty"`
}

// LeastRequestConfig tunes the least_request policy: the number of random
// hosts it picks the least loaded of (0: 2).
type LeastRequestConfig struct {
	ChoiceCount uint32 `json:",omitempty"`
}

// HashPolicy is one input of a request's hash: the request's Field named
// FieldValue (a header, a cookie, a query parameter), or the source IP.
// When Terminal and the input is present, later policies are skipped.
type HashPolicy struct {
	Field        string        `json:",omitempty"`
	FieldValue   string        `json:",omitempty"`
	CookieConfig *CookieConfig `json:",omitempty"`
	SourceIP     bool          `json:",omitempty"`
	Terminal     bool          `json:",omitempty"`
}

// CookieConfig makes the proxy set the hashed cookie when the request has
// none: a session cookie, or one that lives TTL, with Path.
type CookieConfig struct {
	Session bool          `json:",omitempty"`
	TTL     time.Duration `json:",omitempty"`
	Path    string        `json:",omitempty"`
}

// ServiceRouterConfigEntry is the service-router entry of one service: its
// HTTP routes, tried in order; a request no route matches goes to the
// service as if there were none.
type ServiceRouterConfigEntry struct {
	Kind      string
	Name      string
	Partition string `json:",omitempty"`
	Namespace string `json:",omitempty"`

	Routes []ServiceRoute `json:",omitempty"`

	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// ServiceRoute sends the requests Match matches (all, without Match) to
// Destination.
type ServiceRoute struct {
	Match       *ServiceRouteMatch       `json:",omitempty"`
	Destination *ServiceRouteDestination `json:",omitempty"`
}

// ServiceRouteMatch matches requests.
type ServiceRouteMatch struct {
	HTTP *ServiceRouteHTTPMatch `json:",omitempty"`
}

// ServiceRouteHTTPMatch matches HTTP requests: every rule given must
// match. At most one of the path rules is given.
type ServiceRouteHTTPMatch struct {
	PathExact       string `json:",omitempty"`
	PathPrefix      string `json:",omitempty"`
	PathRegex       string `json:",omitempty"`
	CaseInsensitive bool   `json:",omitempty"`

	Header     []ServiceRouteHTTPMatchHeader     `json:",omitempty"`
	QueryParam []ServiceRouteHTTPMatchQueryParam `json:",omitempty"`
	Methods    []string                          `json:",omitempty"`
}

// ServiceRouteHTTPMatchHeader matches one header by exactly one of
// Present, Exact, Prefix, Suffix or Regex; Invert negates the match.
type ServiceRouteHTTPMatchHeader struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Prefix  string `json:",omitempty"`
	Suffix  string `json:",omitempty"`
	Regex   string `json:",omitempty"`
	Invert  bool   `json:",omitempty"`
}

// ServiceRouteHTTPMatchQueryParam matches one query parameter by exactly
// one of Present, Exact or Regex.
type ServiceRouteHTTPMatchQueryParam struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Regex   string `json:",omitempty"`
}

// ServiceRouteDestination is what a route does with the requests it
// matches. Service, when given, must be the router's own service for now.
type ServiceRouteDestination struct {
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
	Namespace     string `json:",omitempty"`
	Partition     string `json:",omitempty"`
	// PrefixRewrite replaces the matched PathPrefix (or PathExact).
	PrefixRewrite string `json:",omitempty"`
	// RequestTimeout bounds the request, retries included; 0 leaves the
	// resolver's.
	RequestTimeout time.Duration `json:",omitempty"`
	// IdleTimeout bounds the time without activity on the request's
	// stream; 0 leaves Envoy's default.
	IdleTimeout time.Duration `json:",omitempty"`
	// NumRetries is the number of retries (0: Envoy's default, 1) on the
	// outcomes RetryOn, RetryOnConnectFailure and RetryOnStatusCodes name.
	NumRetries            uint32               `json:",omitempty"`
	RetryOnConnectFailure bool                 `json:",omitempty"`
	RetryOnStatusCodes    []uint32             `json:",omitempty"`
	RetryOn               []string             `json:",omitempty"`
	RequestHeaders        *HTTPHeaderModifiers `json:",omitempty"`
	ResponseHeaders       *HTTPHeaderModifiers `json:",omitempty"`
}

// HasRetries reports whether d asks for any retry.
func (d *ServiceRouteDestination) HasRetries() bool {
	return d != nil && (d.NumRetries > 0 || d.RetryOnConnectFailure || len(d.RetryOnStatusCodes) > 0 || len(d.RetryOn) > 0)
}

// HTTPHeaderModifiers change a request's or response's headers: Add
// appends values, Set replaces them, Remove drops headers.
type HTTPHeaderModifiers struct {
	Add    map[string]string `json:",omitempty"`
	Set    map[string]string `json:",omitempty"`
	Remove []string          `json:",omitempty"`
}

// durationString is d as the api module writes it, "" for 0 (omitted).
func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// parseDurationField reads a duration string written by durationString,
// naming field in the error.
func parseDurationField(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return d, nil
}

func (e *ServiceResolverConfigEntry) MarshalJSON() ([]byte, error) {
	type plain ServiceResolverConfigEntry
	return json.Marshal(&struct {
		ConnectTimeout string `json:",omitempty"`
		RequestTimeout string `json:",omitempty"`
		*plain
	}{durationString(e.ConnectTimeout), durationString(e.RequestTimeout), (*plain)(e)})
}

func (e *ServiceResolverConfigEntry) UnmarshalJSON(data []byte) error {
	type plain ServiceResolverConfigEntry
	aux := &struct {
		ConnectTimeout string
		RequestTimeout string
		*plain
	}{plain: (*plain)(e)}
	if err := json.Unmarshal(data, aux); err != nil {
		return err
	}
	var err error
	if e.ConnectTimeout, err = parseDurationField("ConnectTimeout", aux.ConnectTimeout); err != nil {
		return err
	}
	e.RequestTimeout, err = parseDurationField("RequestTimeout", aux.RequestTimeout)
	return err
}

func (d *ServiceRouteDestination) MarshalJSON() ([]byte, error) {
	type plain ServiceRouteDestination
	return json.Marshal(&struct {
		RequestTimeout string `json:",omitempty"`
		IdleTimeout    string `json:",omitempty"`
		*plain
	}{durationString(d.RequestTimeout), durationString(d.IdleTimeout), (*plain)(d)})
}

func (d *ServiceRouteDestination) UnmarshalJSON(data []byte) error {
	type plain ServiceRouteDestination
	aux := &struct {
		RequestTimeout string
		IdleTimeout    string
		*plain
	}{plain: (*plain)(d)}
	if err := json.Unmarshal(data, aux); err != nil {
		return err
	}
	var err error
	if d.RequestTimeout, err = parseDurationField("RequestTimeout", aux.RequestTimeout); err != nil {
		return err
	}
	d.IdleTimeout, err = parseDurationField("IdleTimeout", aux.IdleTimeout)
	return err
}

func (e *ServiceResolverConfigEntry) GetKind() string            { return ServiceResolver }
func (e *ServiceResolverConfigEntry) GetName() string            { return e.Name }
func (e *ServiceResolverConfigEntry) GetMeta() map[string]string { return e.Meta }
func (e *ServiceResolverConfigEntry) GetRaftIndex() (uint64, uint64) {
	return e.CreateIndex, e.ModifyIndex
}
func (e *ServiceResolverConfigEntry) SetRaftIndex(c, m uint64) { e.CreateIndex, e.ModifyIndex = c, m }

func (e *ServiceRouterConfigEntry) GetKind() string            { return ServiceRouter }
func (e *ServiceRouterConfigEntry) GetName() string            { return e.Name }
func (e *ServiceRouterConfigEntry) GetMeta() map[string]string { return e.Meta }
func (e *ServiceRouterConfigEntry) GetRaftIndex() (uint64, uint64) {
	return e.CreateIndex, e.ModifyIndex
}
func (e *ServiceRouterConfigEntry) SetRaftIndex(c, m uint64) { e.CreateIndex, e.ModifyIndex = c, m }
