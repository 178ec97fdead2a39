package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// parseSource parses a JSON or HCL document into a generic tree of
// map[string]any, []any and scalars.
func parseSource(name, format string, data []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return map[string]any{}, nil
	}
	switch format {
	case "json":
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var tree any
		if err := dec.Decode(&tree); err != nil {
			return nil, fmt.Errorf("config: parse %s: %w", name, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("config: parse %s: trailing data after the top-level object", name)
		}
		m, ok := tree.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("config: parse %s: top level must be an object", name)
		}
		return m, nil
	case "hcl":
		var m map[string]any
		if err := hcl.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("config: parse %s: %w", name, err)
		}
		return plainTree(m).(map[string]any), nil
	}
	return nil, fmt.Errorf("config: parse %s: unknown format %q: want json or hcl", name, format)
}

// plainTree rewrites the typed lists HCL produces ([]map[string]any for
// blocks) as []any, so that the rest of the package sees one tree shape.
func plainTree(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			t[k] = plainTree(val)
		}
		return t
	case []map[string]any:
		out := make([]any, len(t))
		for i, m := range t {
			out[i] = plainTree(m)
		}
		return out
	case []any:
		for i := range t {
			t[i] = plainTree(t[i])
		}
		return t
	}
	return v
}

// asObject returns v as an object. HCL decodes every block, and every
// "key = { ... }", as a list of objects, so a list whose elements are all
// objects is taken as those objects merged in order (usually just one).
func asObject(v any) (map[string]any, bool) {
	switch t := v.(type) {
	case map[string]any:
		return t, true
	case []any:
		if len(t) == 0 {
			return nil, false
		}
		out := map[string]any{}
		for _, e := range t {
			m, ok := asObject(e)
			if !ok {
				return nil, false
			}
			for k, val := range m {
				out[k] = val
			}
		}
		return out, true
	}
	return nil, false
}

// asList returns v as a list: a lone object or scalar is a list of one.
func asList(v any) []any {
	if l, ok := v.([]any); ok {
		return l
	}
	return []any{v}
}

// normKey folds a key for matching: lowercase, underscores dropped, so
// node_name, NodeName and nodename are the same key.
func normKey(k string) string {
	return strings.ToLower(strings.ReplaceAll(k, "_", ""))
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// cfgFields maps the folded cfg tag of each field of t to its index.
func cfgFields(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("cfg"), ",")
		if name != "" {
			out[normKey(name)] = i
		}
	}
	return out
}

var (
	ignoredType     = reflect.TypeOf(ignored{})
	unsupportedType = reflect.TypeOf(unsupported{})
	durationPtrType = reflect.TypeOf((*time.Duration)(nil))
	durationMapType = reflect.TypeOf(map[string]time.Duration(nil))
	checkTypeType   = reflect.TypeOf(structs.CheckType{})
	wireDuration    = reflect.TypeOf(structs.Duration(0))
)

// decoder decodes one source's tree into a fileConfig, collecting warnings.
type decoder struct {
	src      string // "file /etc/trellis/a.json", "-hcl fragment 1"
	warnings []string
	shapeErr error // first error found by shape
}

func (d *decoder) warnf(format string, args ...any) {
	d.warnings = append(d.warnings, fmt.Sprintf(format, args...))
}

func (d *decoder) keyErr(key string, err error) error {
	return fmt.Errorf("config: key %q in %s: %w", key, d.src, err)
}

// decode decodes tree into a new fileConfig.
func (d *decoder) decode(tree map[string]any) (*fileConfig, error) {
	fc := &fileConfig{}
	if err := d.object("", tree, reflect.ValueOf(fc).Elem()); err != nil {
		return nil, err
	}
	// "ui" is the older spelling of ui_config.enabled; within one source
	// the newer key wins.
	if fc.UI != nil && fc.UIConfig.Enabled == nil {
		fc.UIConfig.Enabled = fc.UI
	}
	fc.UI = nil
	return fc, nil
}

func (d *decoder) object(path string, m map[string]any, rv reflect.Value) error {
	fields := cfgFields(rv.Type())
	for _, k := range sortedKeys(m) {
		key := joinKey(path, k)
		i, ok := fields[normKey(k)]
		if !ok {
			d.warnf("config: unknown key %q in %s", key, d.src)
			continue
		}
		if err := d.value(key, m[k], rv.Field(i)); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) value(key string, v any, fv reflect.Value) error {
	if v == nil {
		// JSON null: treat the key as not set.
		return nil
	}
	t := fv.Type()
	switch t {
	case ignoredType:
		return nil
	case unsupportedType:
		d.warnf("config: key %q in %s is not supported by Trellis and has no effect", key, d.src)
		return nil
	case durationPtrType:
		dur, err := toDuration(v)
		if err != nil {
			return d.keyErr(key, err)
		}
		fv.Set(reflect.ValueOf(&dur))
		return nil
	case durationMapType:
		m, ok := asObject(v)
		if !ok {
			return d.keyErr(key, fmt.Errorf("want an object, got %s", describe(v)))
		}
		out := make(map[string]time.Duration, len(m))
		for k, val := range m {
			dur, err := toDuration(val)
			if err != nil {
				return d.keyErr(joinKey(key, k), err)
			}
			out[k] = dur
		}
		fv.Set(reflect.ValueOf(out))
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		x, err := toScalar(v, t.Elem().Kind())
		if err != nil {
			return d.keyErr(key, err)
		}
		p := reflect.New(t.Elem())
		p.Elem().Set(reflect.ValueOf(x).Convert(t.Elem()))
		fv.Set(p)
		return nil
	case reflect.Struct:
		m, ok := asObject(v)
		if !ok {
			return d.keyErr(key, fmt.Errorf("want an object, got %s", describe(v)))
		}
		return d.object(key, m, fv)
	case reflect.Map:
		m, ok := asObject(v)
		if !ok {
			return d.keyErr(key, fmt.Errorf("want an object, got %s", describe(v)))
		}
		out := make(map[string]string, len(m))
		for k, val := range m {
			s, err := toScalar(val, reflect.String)
			if err != nil {
				return d.keyErr(joinKey(key, k), err)
			}
			out[k] = s.(string)
		}
		fv.Set(reflect.ValueOf(out))
		return nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			var out []string
			for _, e := range asList(v) {
				s, err := toScalar(e, reflect.String)
				if err != nil {
					return d.keyErr(key, err)
				}
				out = append(out, s.(string))
			}
			fv.Set(reflect.ValueOf(out))
			return nil
		}
		return d.definitions(key, v, fv)
	}
	return d.keyErr(key, fmt.Errorf("internal error: no decoder for %s", t))
}

// definitions decodes a service or check definition, or a list of them,
// with structs.DecodeTree, appending to fv (a slice of pointers to structs).
func (d *decoder) definitions(key string, v any, fv reflect.Value) error {
	elem := fv.Type().Elem().Elem()
	items := asList(v)
	for i, item := range items {
		itemKey := key
		if len(items) > 1 {
			itemKey = fmt.Sprintf("%s[%d]", key, i)
		}
		m, ok := asObject(item)
		if !ok {
			return d.keyErr(itemKey, fmt.Errorf("want an object, got %s", describe(item)))
		}
		tree := d.shape(itemKey, m, elem)
		if d.shapeErr != nil {
			return d.shapeErr
		}
		p := reflect.New(elem)
		if err := structs.DecodeTree(tree, p.Interface()); err != nil {
			// DecodeTree words its errors for HTTP clients.
			return d.keyErr(itemKey, errors.New(strings.TrimPrefix(err.Error(), "Request decode failed: ")))
		}
		fv.Set(reflect.Append(fv, p))
	}
	return nil
}

// shape rewrites tree v to fit Go type t before it is handed to
// structs.DecodeTree: HCL's one-element block lists become objects where t
// wants an object, lone objects become lists where t wants a list, numbers
// and booleans written as strings are converted, and keys t has no field for
// are dropped with a warning. Two blocks where t wants one object set
// d.shapeErr rather than being merged.
func (d *decoder) shape(path string, v any, t reflect.Type) any {
	if v == nil {
		// JSON null: not set. Going through the slice case below it
		// would become a list of one zero value ("tags": [""]).
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if l, ok := v.([]any); ok && len(l) > 1 && (t.Kind() == reflect.Struct || t.Kind() == reflect.Map) {
		if d.shapeErr == nil {
			d.shapeErr = d.keyErr(path, fmt.Errorf("want one object, got %d", len(l)))
		}
		return v
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := asObject(v)
		if !ok {
			return v
		}
		fields := goFields(t)
		out := make(map[string]any, len(m))
		for _, k := range sortedKeys(m) {
			n := normKey(k)
			if t == checkTypeType && n == "id" {
				// Config files name a check's ID "id"; the wire type
				// calls it CheckID.
				if !hasKey(m, "checkid") {
					out["CheckID"] = m[k]
				}
				continue
			}
			if n == "scriptargs" {
				n = "args"
			}
			if t == checkTypeType && unsupportedChecks[n] != "" {
				if d.shapeErr == nil {
					d.shapeErr = d.keyErr(joinKey(path, k), fmt.Errorf("%s checks are not supported by Trellis", unsupportedChecks[n]))
				}
				continue
			}
			i, ok := fields[n]
			if !ok {
				d.warnf("config: unknown key %q in %s", joinKey(path, k), d.src)
				continue
			}
			out[k] = d.shape(joinKey(path, k), m[k], t.Field(i).Type)
		}
		return out
	case reflect.Map:
		m, ok := asObject(v)
		if !ok {
			return v
		}
		out := make(map[string]any, len(m))
		for k, val := range m {
			if t.Elem().Kind() == reflect.Interface {
				out[k] = opaque(k, val)
			} else {
				out[k] = d.shape(joinKey(path, k), val, t.Elem())
			}
		}
		return out
	case reflect.Slice:
		list := asList(v)
		out := make([]any, len(list))
		for i, e := range list {
			out[i] = d.shape(fmt.Sprintf("%s[%d]", path, i), e, t.Elem())
		}
		return out
	case reflect.Interface:
		return opaque("", v)
	case reflect.Bool:
		if s, ok := v.(string); ok {
			if b, err := strconv.ParseBool(s); err == nil {
				return b
			}
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if s, ok := v.(string); ok && t != wireDuration {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				return n
			}
		}
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

// unsupportedChecks maps the folded keys that make a Consul check a kind
// Trellis does not run to that kind. Loading such a check fails rather than
// dropping the key: a docker check also has "args", and without its
// container it would run as a script on the host.
var unsupportedChecks = map[string]string{
	"dockercontainerid": "docker",
	"shell":             "docker",
	"h2ping":            "h2ping",
	"h2pingusetls":      "h2ping",
	"udp":               "udp",
	"osservice":         "os_service",
}

// goFields maps each field name of t, lowercased, to its index.
func goFields(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		out[strings.ToLower(t.Field(i).Name)] = i
	}
	return out
}

// listKeys are the keys of opaque subtrees (proxy, connect) that hold lists
// of objects even when they hold only one.
var listKeys = map[string]bool{
	"upstreams": true,
	"paths":     true,
	"checks":    true,
	"services":  true,
}

// opaque shapes a subtree that has no Go type (a service's proxy or connect
// block): one-element lists of objects become objects, except under the
// keys known to be lists.
func opaque(key string, v any) any {
	if l, ok := v.([]any); ok && len(l) == 1 && !listKeys[normKey(key)] {
		if m, ok := l[0].(map[string]any); ok {
			v = m
		}
	}
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			out[k] = opaque(k, val)
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

// toScalar converts v to a Go string, bool or int. Like Consul, it accepts
// strings for numbers and booleans ("8500", "true") and numbers for strings.
func toScalar(v any, kind reflect.Kind) (any, error) {
	if l, ok := v.([]any); ok && len(l) == 1 {
		v = l[0]
	}
	switch kind {
	case reflect.String:
		switch t := v.(type) {
		case string:
			return t, nil
		case json.Number:
			return t.String(), nil
		case int, int64, float64:
			return fmt.Sprint(t), nil
		}
		return nil, fmt.Errorf("want a string, got %s", describe(v))
	case reflect.Bool:
		switch t := v.(type) {
		case bool:
			return t, nil
		case string:
			b, err := strconv.ParseBool(strings.TrimSpace(t))
			if err != nil {
				return nil, fmt.Errorf("%q is not a boolean", t)
			}
			return b, nil
		}
		return nil, fmt.Errorf("want a boolean, got %s", describe(v))
	case reflect.Int:
		var s string
		switch t := v.(type) {
		case int:
			return t, nil
		case int64:
			return int(t), nil
		case float64:
			if t != math.Trunc(t) || math.Abs(t) > math.MaxInt32 {
				return nil, fmt.Errorf("%v is not an integer", t)
			}
			return int(t), nil
		case json.Number:
			s = t.String()
		case string:
			s = strings.TrimSpace(t)
		default:
			return nil, fmt.Errorf("want an integer, got %s", describe(v))
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return n, nil
	}
	return nil, fmt.Errorf("internal error: no conversion to %s", kind)
}

// toDuration converts a duration string such as "10s" or "1h30m".
func toDuration(v any) (time.Duration, error) {
	if l, ok := v.([]any); ok && len(l) == 1 {
		v = l[0]
	}
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("want a duration string such as \"10s\", got %s", describe(v))
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if dur < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return dur, nil
}

// describe names the JSON kind of v for error messages.
func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", t)
	case bool:
		return fmt.Sprintf("boolean %v", t)
	case json.Number, int, int64, float64:
		return fmt.Sprintf("number %v", t)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// merge layers src onto dst, both fileConfig-shaped structs: a set pointer
// replaces, slices append, maps merge key by key.
func merge(dst, src reflect.Value) {
	for i := 0; i < dst.NumField(); i++ {
		d, s := dst.Field(i), src.Field(i)
		switch d.Kind() {
		case reflect.Pointer:
			if !s.IsNil() {
				d.Set(s)
			}
		case reflect.Slice:
			if s.Len() > 0 {
				d.Set(reflect.AppendSlice(d, s))
			}
		case reflect.Map:
			if s.Len() == 0 {
				continue
			}
			if d.IsNil() {
				d.Set(reflect.MakeMapWithSize(d.Type(), s.Len()))
			}
			iter := s.MapRange()
			for iter.Next() {
				d.SetMapIndex(iter.Key(), iter.Value())
			}
		case reflect.Struct:
			merge(d, s)
		}
	}
}
