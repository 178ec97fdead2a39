package config

import (
	"bytes"
	"fmt"
	"reflect"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// serviceFile is the schema of a service definition file: the service keys
// of fileConfig and nothing else, so that a definition reads the same from
// either kind of file.
type serviceFile struct {
	Service  []*structs.ServiceDefinition `cfg:"service"`
	Services []*structs.ServiceDefinition `cfg:"services"`
}

// ParseServiceDefinitions parses a service definition file, as given to
// "trellis services register": a "service" object (or HCL block) and a
// "services" list, decoded and validated exactly as those keys of an agent
// config file are. name is the file's name, used in messages and to choose
// the format: a .json file is JSON and a .hcl file HCL; any other is JSON
// when it starts with "{" and HCL otherwise.
//
// Other top-level keys, and keys a definition has no field for, do not
// fail the parse: they are reported in warnings, which are returned even
// with an error. A file that does not parse, defines no service, or has a
// definition that fails validation (no name, a check of no kind, ...) is an
// error naming the file and the key, and no definitions are returned.
func ParseServiceDefinitions(name string, data []byte) (defs []*structs.ServiceDefinition, warnings []string, err error) {
	src := "file " + name
	format := formatOf(name)
	if format == "" {
		format = "hcl"
		if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
			format = "json"
		}
	}
	tree, err := parseSource(src, format, data)
	if err != nil {
		return nil, nil, err
	}
	d := &decoder{src: src}
	defTree := make(map[string]any, len(tree))
	for _, k := range sortedKeys(tree) {
		switch normKey(k) {
		case "service", "services":
			defTree[k] = tree[k]
		default:
			d.warnf("config: key %q in %s is not a service definition and is ignored", k, src)
		}
	}
	var sf serviceFile
	if err := d.object("", defTree, reflect.ValueOf(&sf).Elem()); err != nil {
		return nil, d.warnings, err
	}
	defs = append(sf.Service, sf.Services...)
	if len(defs) == 0 {
		return nil, d.warnings, fmt.Errorf("config: %s: no \"service\" or \"services\" definition found", src)
	}
	if err := validateServices(defs); err != nil {
		return nil, d.warnings, fmt.Errorf("config: %s: %w", src, err)
	}
	return defs, d.warnings, nil
}
