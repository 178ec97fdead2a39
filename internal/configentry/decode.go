package configentry

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The lenient decoder: it walks a document of JSON's types (map[string]any,
// []any, string, json.Number, bool, nil) or HCL v1's (which adds
// []map[string]any for blocks, int and float64) into an entry's struct,
// matching keys to fields as Consul does (case-insensitively, underscores
// ignored) and naming the field of any error by its path:
// "Sources[1].Permissions[0].HTTP.PathExact".

// normKey folds a key for matching: lowercase, underscores dropped.
func normKey(k string) string { return strings.ToLower(strings.ReplaceAll(k, "_", "")) }

var (
	durationType = reflect.TypeOf(time.Duration(0))
	timeType     = reflect.TypeOf(time.Time{})
)

func decodeInto(doc map[string]any, out any) error {
	return decodeValue("", doc, reflect.ValueOf(out).Elem())
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func fieldErr(path string, format string, args ...any) error {
	if path == "" {
		path = "(entry)"
	}
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

// describe names the JSON type of v for errors.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, int, int64, float64:
		return "a number"
	case []any, []map[string]any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func decodeValue(path string, in any, out reflect.Value) error {
	if in == nil {
		return nil // null is the same as leaving the key out
	}
	t := out.Type()
	switch t {
	case durationType:
		d, err := toDuration(in)
		if err != nil {
			return fieldErr(path, "%v", err)
		}
		out.SetInt(int64(d))
		return nil
	case timeType:
		s, ok := in.(string)
		if !ok {
			return fieldErr(path, "must be an RFC 3339 time string, got %s", describe(in))
		}
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return fieldErr(path, "must be an RFC 3339 time: %v", err)
		}
		out.Set(reflect.ValueOf(tm))
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		v := reflect.New(t.Elem())
		if err := decodeValue(path, in, v.Elem()); err != nil {
			return err
		}
		out.Set(v)
		return nil
	case reflect.Interface:
		out.Set(reflect.ValueOf(plain(in)))
		return nil
	case reflect.Struct:
		m, ok := asObject(in)
		if !ok {
			return fieldErr(path, "must be an object, got %s", describe(in))
		}
		return decodeStruct(path, m, out)
	case reflect.Slice:
		items, ok := asList(in)
		if !ok {
			return fieldErr(path, "must be a list, got %s", describe(in))
		}
		s := reflect.MakeSlice(t, len(items), len(items))
		for i, item := range items {
			if err := decodeValue(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i)); err != nil {
				return err
			}
		}
		out.Set(s)
		return nil
	case reflect.Map:
		m, ok := asObject(in)
		if !ok {
			return fieldErr(path, "must be an object, got %s", describe(in))
		}
		mv := reflect.MakeMapWithSize(t, len(m))
		for k, v := range m {
			ev := reflect.New(t.Elem()).Elem()
			if err := decodeValue(fmt.Sprintf("%s[%q]", path, k), v, ev); err != nil {
				return err
			}
			mv.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		out.Set(mv)
		return nil
	case reflect.String:
		s, ok := in.(string)
		if !ok {
			return fieldErr(path, "must be a string, got %s", describe(in))
		}
		out.SetString(s)
		return nil
	case reflect.Bool:
		b, ok := in.(bool)
		if !ok {
			return fieldErr(path, "must be true or false, got %s", describe(in))
		}
		out.SetBool(b)
		return nil
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := toInt(in)
		if err != nil {
			return fieldErr(path, "%v", err)
		}
		if out.OverflowInt(n) {
			return fieldErr(path, "%d is out of range", n)
		}
		out.SetInt(n)
		return nil
	case reflect.Uint, reflect.Uint32, reflect.Uint64:
		n, err := toInt(in)
		if err != nil {
			return fieldErr(path, "%v", err)
		}
		if n < 0 {
			return fieldErr(path, "must not be negative, got %d", n)
		}
		if out.OverflowUint(uint64(n)) {
			return fieldErr(path, "%d is out of range", n)
		}
		out.SetUint(uint64(n))
		return nil
	}
	return fieldErr(path, "cannot decode into %s", t)
}

// structFields maps the folded names of t's exported fields (and of the
// fields of structs it embeds) to their index paths and Go names.
type structField struct {
	index []int
	name  string
}

func structFields(t reflect.Type) map[string]structField {
	out := make(map[string]structField)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			for k, sf := range structFields(f.Type) {
				out[k] = structField{index: append([]int{i}, sf.index...), name: sf.name}
			}
			continue
		}
		out[normKey(f.Name)] = structField{index: []int{i}, name: f.Name}
	}
	return out
}

func decodeStruct(path string, m map[string]any, out reflect.Value) error {
	fields := structFields(out.Type())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Sorted, so that with several bad keys the error is always the same.
	sort.Strings(keys)
	seen := make(map[string]string, len(keys))
	for _, k := range keys {
		norm := normKey(k)
		f, ok := fields[norm]
		if !ok {
			return fieldErr(joinPath(path, k), "unknown field")
		}
		if prev, dup := seen[norm]; dup {
			return fieldErr(joinPath(path, f.name), "given twice (%q and %q)", prev, k)
		}
		seen[norm] = k
		if err := decodeValue(joinPath(path, f.name), m[k], out.FieldByIndex(f.index)); err != nil {
			return err
		}
	}
	return nil
}

// asObject accepts a JSON object, or an HCL block (a list of one object).
func asObject(in any) (map[string]any, bool) {
	switch v := in.(type) {
	case map[string]any:
		return v, true
	case []map[string]any:
		if len(v) == 1 {
			return v[0], true
		}
	case []any:
		if len(v) == 1 {
			m, ok := v[0].(map[string]any)
			return m, ok
		}
	}
	return nil, false
}

// asList accepts a JSON list, or HCL's repeated blocks.
func asList(in any) ([]any, bool) {
	switch v := in.(type) {
	case []any:
		return v, true
	case []map[string]any:
		out := make([]any, len(v))
		for i, m := range v {
			out[i] = m
		}
		return out, true
	}
	return nil, false
}

func toInt(in any) (int64, error) {
	switch v := in.(type) {
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("must be a whole number, got %s", v)
		}
		return n, nil
	case int:
		return int64(v), nil
	case int64:
		return v, nil
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return 0, fmt.Errorf("must be a whole number, got %v", v)
		}
		return int64(v), nil
	}
	return 0, fmt.Errorf("must be a number, got %s", describe(in))
}

// toDuration accepts a Go duration string ("10s") or a number of
// nanoseconds, as Consul's config entries do.
func toDuration(in any) (time.Duration, error) {
	if s, ok := in.(string); ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("must be a duration such as \"10s\": %v", err)
		}
		return d, nil
	}
	n, err := toInt(in)
	if err != nil {
		return 0, fmt.Errorf("must be a duration such as \"10s\", got %s", describe(in))
	}
	return time.Duration(n), nil
}

// plain turns a decoded document into plain JSON-like values for opaque
// fields (Config, Arguments): numbers become int64 or float64, HCL's
// block lists become lists of objects.
func plain(in any) any {
	switch v := in.(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		f, _ := v.Float64()
		return f
	case int:
		return int64(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = plain(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = plain(x)
		}
		return out
	case []map[string]any:
		if len(v) == 1 {
			return plain(v[0])
		}
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = plain(x)
		}
		return out
	}
	return in
}
