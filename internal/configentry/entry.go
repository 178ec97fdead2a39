package configentry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Kind names, as Consul's.
const (
	ProxyDefaults     = "proxy-defaults"
	ServiceDefaults   = "service-defaults"
	ServiceIntentions = "service-intentions"
	MeshConfig        = "mesh"
	ServiceResolver   = "service-resolver"
	ServiceRouter     = "service-router"

	// ProxyConfigGlobal is the only name a proxy-defaults entry may have.
	ProxyConfigGlobal = "global"
	// MeshConfigMesh is the only name of the mesh entry.
	MeshConfigMesh = "mesh"
)

// Values of MeshConfigEntry.DefaultIntentionPolicy.
const (
	IntentionDefaultAllow = "allow"
	IntentionDefaultDeny  = "deny"
)

// Entry is one config entry of any kind.
//
// Entries handed out by the state store are shared: callers must not
// modify them, and use Clone to get a copy they may change.
type Entry interface {
	GetKind() string
	GetName() string
	GetMeta() map[string]string
	// GetRaftIndex returns the raft indexes of the entry's first and last
	// write.
	GetRaftIndex() (create, modify uint64)
	// SetRaftIndex sets them; only the state store calls it.
	SetRaftIndex(create, modify uint64)
	// Normalize fills in defaults and canonical forms (lowercase kind and
	// protocol, intention precedence) so that every server stores the same
	// thing. It runs before Validate.
	Normalize()
	// Validate checks the entry on its own; errors name the field.
	Validate() error
}

// kinds maps each supported kind to a constructor of its empty entry. It
// is a constant of the package, never changed at run time.
var kinds = map[string]func() Entry{
	ProxyDefaults:     func() Entry { return &ProxyConfigEntry{} },
	ServiceDefaults:   func() Entry { return &ServiceConfigEntry{} },
	ServiceIntentions: func() Entry { return &ServiceIntentionsConfigEntry{} },
	MeshConfig:        func() Entry { return &MeshConfigEntry{} },
	ServiceResolver:   func() Entry { return &ServiceResolverConfigEntry{} },
	ServiceRouter:     func() Entry { return &ServiceRouterConfigEntry{} },
}

// Kinds lists the supported kinds, sorted.
func Kinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// KindError is an unknown kind.
type KindError struct{ Kind string }

func (e KindError) Error() string { return fmt.Sprintf("invalid config entry kind: %s", e.Kind) }

// New returns an empty entry of kind (any case).
func New(kind string) (Entry, error) {
	mk, ok := kinds[strings.ToLower(kind)]
	if !ok {
		return nil, KindError{Kind: kind}
	}
	return mk(), nil
}

// ValidKind reports whether kind (any case) is supported.
func ValidKind(kind string) bool {
	_, ok := kinds[strings.ToLower(kind)]
	return ok
}

// Decode builds an entry from a decoded JSON or HCL document (a
// map[string]any whose values are JSON's or HCL v1's types), with the kind
// it names. Keys match the fields case-insensitively, with or without
// underscores; an unknown key, a value of the wrong type or an unknown
// kind is an error naming it. The entry is normalised and validated.
func Decode(doc map[string]any) (Entry, error) {
	var kind string
	for k, v := range doc {
		if normKey(k) == "kind" {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("Kind: must be a string, got %s", describe(v))
			}
			kind = s
		}
	}
	if kind == "" {
		return nil, fmt.Errorf("Kind: missing: a config entry must name its kind")
	}
	e, err := New(kind)
	if err != nil {
		return nil, err
	}
	if err := decodeInto(doc, e); err != nil {
		return nil, err
	}
	e.Normalize()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	if s, ok := e.(interface{ sortSources() }); ok {
		s.sortSources()
	}
	return e, nil
}

// DecodeJSON is Decode for a JSON document.
func DecodeJSON(data []byte) (Entry, error) {
	doc, err := parseJSONObject(data)
	if err != nil {
		return nil, err
	}
	return Decode(doc)
}

// DecodeJSONKind decodes a JSON document as an entry of kind, whether or
// not it names its kind; a different Kind in the document is an error.
func DecodeJSONKind(kind string, data []byte) (Entry, error) {
	doc, err := parseJSONObject(data)
	if err != nil {
		return nil, err
	}
	given := ""
	for k, v := range doc {
		if normKey(k) == "kind" {
			given, _ = v.(string)
			delete(doc, k)
		}
	}
	if given != "" && !strings.EqualFold(given, kind) {
		return nil, fmt.Errorf("Kind: %q does not match %q", given, kind)
	}
	doc["Kind"] = kind
	return Decode(doc)
}

func parseJSONObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("body is not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("body holds more than one JSON value")
	}
	doc, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("body must be a JSON object, got %s", describe(v))
	}
	return doc, nil
}

// Marshal encodes an entry as the API answers it.
func Marshal(e Entry) ([]byte, error) { return json.Marshal(e) }

// Unmarshal decodes an entry of kind that Marshal encoded, trusting it:
// no lenient key matching and no validation. The state store uses it for
// entries that were validated before they were written.
func Unmarshal(kind string, data []byte) (Entry, error) {
	e, err := New(kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("configentry: decode %s: %w", kind, err)
	}
	return e, nil
}

// Clone returns a deep copy of e.
func Clone(e Entry) Entry {
	data, err := Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("configentry: clone %s: %v", e.GetKind(), err))
	}
	c, err := Unmarshal(e.GetKind(), data)
	if err != nil {
		panic(fmt.Sprintf("configentry: clone %s: %v", e.GetKind(), err))
	}
	return c
}

// ValidProtocols are the service protocols of service-defaults and
// proxy-defaults.
var validProtocols = map[string]bool{"tcp": true, "http": true, "http2": true, "grpc": true}

// IsHTTPLike reports whether protocol carries HTTP requests, so that L7
// intentions can be enforced on it.
func IsHTTPLike(protocol string) bool {
	switch strings.ToLower(protocol) {
	case "http", "http2", "grpc":
		return true
	}
	return false
}
