package configentry

import (
	"fmt"
	"strings"
	"time"
)

// Intention is one source of a service-intentions entry seen as Consul's
// api.Intention: the body of /v1/connect/intentions and its exact, match
// and PUT forms.
type Intention struct {
	ID              string `json:",omitempty"`
	Description     string `json:",omitempty"`
	SourceNS        string
	SourceName      string
	DestinationNS   string
	DestinationName string

	SourcePartition      string `json:",omitempty"`
	DestinationPartition string `json:",omitempty"`
	SourcePeer           string `json:",omitempty"`
	SourceSamenessGroup  string `json:",omitempty"`

	SourceType  string
	Action      string                 `json:",omitempty"`
	Permissions []*IntentionPermission `json:",omitempty"`
	DefaultAddr string                 `json:",omitempty"`
	DefaultPort int                    `json:",omitempty"`
	Meta        map[string]string      `json:",omitempty"`
	Precedence  int
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Hash        []byte `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// defaultNamespace is the only namespace Trellis has.
const defaultNamespace = "default"

// ToIntention is the view of source s of the entry for destination. The
// indexes are the entry's.
func ToIntention(destination string, s *SourceIntention, createIndex, modifyIndex uint64) *Intention {
	ixn := &Intention{
		ID:                  s.LegacyID,
		Description:         s.Description,
		SourceNS:            defaultNamespace,
		SourceName:          s.Name,
		DestinationNS:       defaultNamespace,
		DestinationName:     destination,
		SourcePeer:          s.Peer,
		SourceSamenessGroup: s.SamenessGroup,
		SourceType:          s.Type,
		Action:              s.Action,
		Permissions:         s.Permissions,
		Meta:                s.LegacyMeta,
		Precedence:          s.Precedence,
		CreateIndex:         createIndex,
		ModifyIndex:         modifyIndex,
	}
	if s.LegacyCreateTime != nil {
		ixn.CreatedAt = *s.LegacyCreateTime
	}
	if s.LegacyUpdateTime != nil {
		ixn.UpdatedAt = *s.LegacyUpdateTime
	}
	return ixn
}

// DecodeIntentionJSON decodes the body of PUT
// /v1/connect/intentions/exact, with the lenient key matching of config
// entries. The names are taken from the query, not the body.
func DecodeIntentionJSON(data []byte) (*Intention, error) {
	doc, err := parseJSONObject(data)
	if err != nil {
		return nil, err
	}
	var ixn Intention
	if err := decodeInto(doc, &ixn); err != nil {
		return nil, err
	}
	return &ixn, nil
}

// ParseIntentionName reads a source or destination of the intentions API:
// "name", or "namespace/name" and "partition/namespace/name" with the
// default namespace and partition only.
func ParseIntentionName(param, v string) (string, error) {
	parts := strings.Split(v, "/")
	name := parts[len(parts)-1]
	switch {
	case v == "" || name == "":
		return "", fmt.Errorf("%s: a service name is required", param)
	case len(parts) > 3:
		return "", fmt.Errorf("%s: %q: want name, namespace/name or partition/namespace/name", param, v)
	}
	for _, p := range parts[:len(parts)-1] {
		if p != "default" {
			return "", fmt.Errorf("%s: %q: only the default namespace and partition exist", param, v)
		}
	}
	return name, nil
}

// UpsertSource sets, in the service-intentions entry e (a copy the caller
// owns, or nil for none yet), the intention from source to the entry's
// destination to ixn's action and permissions, and returns the entry to
// write, normalised and validated.
func UpsertSource(e *ServiceIntentionsConfigEntry, destination, source string, ixn *Intention) (*ServiceIntentionsConfigEntry, error) {
	if e == nil {
		e = &ServiceIntentionsConfigEntry{Kind: ServiceIntentions, Name: destination}
	}
	src := &SourceIntention{Name: source}
	replaced := false
	for i, s := range e.Sources {
		if s != nil && s.Name == source && s.Peer == "" && s.SamenessGroup == "" {
			src = s
			e.Sources[i] = src
			replaced = true
			break
		}
	}
	src.Action = ixn.Action
	src.Permissions = ixn.Permissions
	src.Description = ixn.Description
	src.LegacyMeta = ixn.Meta
	if ixn.SourceType != "" {
		src.Type = ixn.SourceType
	}
	if !replaced {
		e.Sources = append(e.Sources, src)
	}
	e.Normalize()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	e.sortSources()
	return e, nil
}

// RemoveSource drops the intention from source in e (a copy the caller
// owns) and reports whether there was one.
func RemoveSource(e *ServiceIntentionsConfigEntry, source string) bool {
	for i, s := range e.Sources {
		if s != nil && s.Name == source && s.Peer == "" && s.SamenessGroup == "" {
			e.Sources = append(e.Sources[:i], e.Sources[i+1:]...)
			return true
		}
	}
	return false
}
