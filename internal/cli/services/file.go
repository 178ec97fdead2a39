package services

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// LoadFile reads the service definitions in the file at path: a "service"
// object or a "services" list, in JSON (a .json file) or HCL (a .hcl file;
// any other file is JSON if it starts with "{", else HCL). Keys the
// definition has no field for are dropped and reported through warn.
func LoadFile(path string, warn func(string)) ([]*structs.ServiceDefinition, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, warn)
}

// Parse is LoadFile on data already read; name is used for the format
// and in messages.
func Parse(name string, data []byte, warn func(string)) ([]*structs.ServiceDefinition, error) {
	tree, err := parseTree(name, data)
	if err != nil {
		return nil, err
	}
	var items []any
	found := false
	for _, k := range sortedKeys(tree) {
		switch normKey(k) {
		case "service":
			// HCL gives each "service { }" block as an element of a list.
			items = append(items, asList(tree[k])...)
			found = true
		case "services":
			items = append(items, asList(tree[k])...)
			found = true
		default:
			warn(fmt.Sprintf("%s: ignoring %q: only service definitions are read", name, k))
		}
	}
	if !found {
		return nil, fmt.Errorf("%s: no \"service\" or \"services\" definition found", name)
	}
	defs := make([]*structs.ServiceDefinition, 0, len(items))
	for i, item := range items {
		where := fmt.Sprintf("%s: service %d", name, i+1)
		if _, ok := item.(map[string]any); !ok {
			return nil, fmt.Errorf("%s: want an object, got %s", where, describe(item))
		}
		shaped, err := shape(where, item, defType, warn)
		if err != nil {
			return nil, err
		}
		def := new(structs.ServiceDefinition)
		if err := structs.DecodeTree(shaped, def); err != nil {
			return nil, fmt.Errorf("%s: %s", where, strings.TrimPrefix(err.Error(), "Request decode failed: "))
		}
		defs = append(defs, def)
	}
	return defs, nil
}

func parseTree(name string, data []byte) (map[string]any, error) {
	isJSON := false
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json":
		isJSON = true
	case ".hcl":
	default:
		isJSON = bytes.HasPrefix(bytes.TrimSpace(data), []byte("{"))
	}
	if isJSON {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var tree map[string]any
		if err := dec.Decode(&tree); err != nil {
			return nil, fmt.Errorf("%s: parsing JSON: %w", name, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%s: parsing JSON: trailing data after the top-level object", name)
		}
		return tree, nil
	}
	var tree map[string]any
	if err := hcl.Unmarshal(data, &tree); err != nil {
		return nil, fmt.Errorf("%s: parsing HCL: %w", name, err)
	}
	return plain(tree).(map[string]any), nil
}

// plain turns the []map[string]any that HCL makes of blocks into []any, so
// the tree has one shape whatever the source.
func plain(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = plain(e)
		}
		return t
	case []map[string]any:
		out := make([]any, len(t))
		for i, m := range t {
			out[i] = plain(m)
		}
		return out
	case []any:
		for i, e := range t {
			t[i] = plain(e)
		}
		return t
	}
	return v
}

var (
	defType      = reflect.TypeOf(structs.ServiceDefinition{})
	checkType    = reflect.TypeOf(structs.CheckType{})
	durationType = reflect.TypeOf(structs.Duration(0))
)

// shape fits tree v to Go type t for structs.DecodeTree. HCL writes every
// block, and "key = { }", as a list of objects, and JSON authors write a
// lone check where a list is allowed; shape turns a list of objects into
// one object where t is a struct or map, a lone value into a list where t
// is a slice, and "true"/"8080" into a bool or number where t wants one.
// Keys t has no field for are dropped with a warning.
func shape(where string, v any, t reflect.Type, warn func(string)) (any, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, err := asObject(where, v)
		if err != nil || m == nil {
			return v, err
		}
		fields := fieldsOf(t)
		out := make(map[string]any, len(m))
		for _, k := range sortedKeys(m) {
			n := normKey(k)
			if t == checkType && n == "id" {
				// Definition files name a check's ID "id"; the wire
				// type calls it CheckID.
				if !hasKey(m, "checkid") {
					out["CheckID"] = m[k]
				}
				continue
			}
			f, ok := fields[n]
			if !ok {
				warn(fmt.Sprintf("%s: ignoring unknown key %q", where, k))
				continue
			}
			sv, err := shape(where+"."+k, m[k], f.Type, warn)
			if err != nil {
				return nil, err
			}
			out[k] = sv
		}
		return out, nil
	case reflect.Map:
		if t.Elem().Kind() == reflect.Interface {
			return opaque("", v), nil
		}
		m, err := asObject(where, v)
		if err != nil || m == nil {
			return v, err
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			sv, err := shape(where+"."+k, e, t.Elem(), warn)
			if err != nil {
				return nil, err
			}
			out[k] = sv
		}
		return out, nil
	case reflect.Slice:
		if v == nil {
			return nil, nil
		}
		list := asList(v)
		out := make([]any, len(list))
		for i, e := range list {
			sv, err := shape(fmt.Sprintf("%s[%d]", where, i), e, t.Elem(), warn)
			if err != nil {
				return nil, err
			}
			out[i] = sv
		}
		return out, nil
	case reflect.Bool:
		if s, ok := v.(string); ok {
			if b, err := strconv.ParseBool(s); err == nil {
				return b, nil
			}
		}
	case reflect.Int, reflect.Int32, reflect.Int64:
		if s, ok := v.(string); ok && t != durationType {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				return n, nil
			}
		}
	}
	return v, nil
}

// asObject returns v as one object: a list of objects (HCL blocks) is
// merged in order. It returns nil and no error for a value that is no
// object at all, leaving it to DecodeTree to report.
func asObject(where string, v any) (map[string]any, error) {
	switch t := v.(type) {
	case map[string]any:
		return t, nil
	case []any:
		if len(t) > 1 {
			return nil, fmt.Errorf("%s: want one object, got %d", where, len(t))
		}
		if len(t) == 1 {
			if m, ok := t[0].(map[string]any); ok {
				return m, nil
			}
		}
	}
	return nil, nil
}

// asList returns v as a list: a lone object or scalar is a list of one.
func asList(v any) []any {
	if l, ok := v.([]any); ok {
		return l
	}
	return []any{v}
}

// isListKey reports whether k, in an opaque subtree (proxy, connect), holds
// a list of objects even when it holds one.
func isListKey(k string) bool {
	switch normKey(k) {
	case "upstreams", "paths", "exposepaths", "checks", "services":
		return true
	}
	return false
}

// opaque shapes a subtree that has no Go type (proxy, connect): HCL's
// one-object lists become objects, except under keys that are lists.
func opaque(key string, v any) any {
	if l, ok := v.([]any); ok && len(l) == 1 && !isListKey(key) {
		if m, ok := l[0].(map[string]any); ok {
			v = m
		}
	}
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = opaque(k, e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = opaque("", e)
		}
		return out
	}
	return v
}

// hasKey reports whether m has a key that folds to norm.
func hasKey(m map[string]any, norm string) bool {
	for k := range m {
		if normKey(k) == norm {
			return true
		}
	}
	return false
}

// fieldsOf maps t's field names, folded by normKey, to the fields.
func fieldsOf(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		out[normKey(f.Name)] = f
	}
	return out
}

// normKey folds a key: lowercase, underscores dropped, so that port_name,
// PortName and portname match.
func normKey(k string) string { return strings.ToLower(strings.ReplaceAll(k, "_", "")) }

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func describe(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case string:
		return "a string"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
