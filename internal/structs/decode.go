package structs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// userKeyed names (lowercased, underscores removed) the fields whose object
// keys are user data, not field names: their keys are kept as written.
var userKeyed = map[string]bool{
	"meta":                   true,
	"nodemeta":               true,
	"servicemeta":            true,
	"header":                 true,
	"taggedaddresses":        true,
	"servicetaggedaddresses": true,
}

// rawKeyed names the fields whose whole subtree is opaque configuration,
// passed through as written.
var rawKeyed = map[string]bool{
	"config":    true, // a proxy's or an upstream's opaque config
	"arguments": true, // an Envoy extension's
}

// aliases maps a normalised key to the normalised field name it stands for,
// where the two differ by more than case and underscores.
var aliases = map[string]string{
	"scriptargs": "args",
}

// NormalizeKeys rewrites the object keys of a decoded JSON (or HCL) tree so
// that snake_case and lowercase keys match Go field names: underscores are
// dropped (encoding/json already matches case-insensitively). Keys of
// user-keyed maps such as Meta stay as they are.
func NormalizeKeys(v any) any {
	return normalize(v, false)
}

func normalize(v any, keepKeys bool) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			nk := k
			norm := strings.ToLower(strings.ReplaceAll(k, "_", ""))
			if !keepKeys {
				nk = norm
			}
			if !keepKeys && rawKeyed[norm] {
				out[nk] = val
				continue
			}
			out[nk] = normalize(val, !keepKeys && userKeyed[norm])
		}
		return out
	case []any:
		for i := range t {
			t[i] = normalize(t[i], false)
		}
		return t
	}
	return v
}

// DecodeJSON decodes a request body into out, accepting Consul's CamelCase
// keys as well as snake_case and lowercase ones. An empty body leaves out
// untouched. Errors name what could not be decoded.
func DecodeJSON(r io.Reader, out any) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	// Without an underscore anywhere, no key needs rewriting:
	// encoding/json already matches field names case-insensitively.
	if bytes.IndexByte(raw, '_') < 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("Request decode failed: %v", err)
		}
		return nil
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return fmt.Errorf("Request decode failed: %v", err)
	}
	return DecodeTree(tree, out)
}

// DecodeTree decodes an already parsed JSON or HCL tree into out, with the
// same key rules as DecodeJSON.
func DecodeTree(tree any, out any) error {
	tree = NormalizeKeys(tree)
	tree = applyAliases(tree)
	b, err := json.Marshal(tree)
	if err != nil {
		return fmt.Errorf("Request decode failed: %v", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("Request decode failed: %v", err)
	}
	return nil
}

func applyAliases(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for from, to := range aliases {
			if val, ok := t[from]; ok {
				if _, exists := t[to]; !exists {
					t[to] = val
				}
				delete(t, from)
			}
		}
		for k, val := range t {
			if userKeyed[k] || rawKeyed[k] {
				continue
			}
			t[k] = applyAliases(val)
		}
	case []any:
		for i := range t {
			t[i] = applyAliases(t[i])
		}
	}
	return v
}
