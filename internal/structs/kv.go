package structs

// DirEntry is one key of the KV store.
type DirEntry struct {
	LockIndex   uint64
	Key         string
	Flags       uint64
	Value       []byte
	Session     string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// Clone returns a copy of e that shares nothing mutable with it.
func (e *DirEntry) Clone() *DirEntry {
	c := *e
	if e.Value != nil {
		c.Value = append([]byte(nil), e.Value...)
	}
	return &c
}

// MaxKVSize is the largest value a key may hold (Consul's default
// kv_max_value_size).
const MaxKVSize = 512 * 1024

// Session behaviours.
const (
	SessionReleases = "release"
	SessionDeletes  = "delete"
)

// Session bounds and defaults, as Consul's.
const (
	SessionTTLMin      = 10e9        // 10s
	SessionTTLMax      = 24 * 3600e9 // 24h
	SessionTTLMultiple = 2           // the grace before a TTL session is invalidated
	DefaultLockDelay   = 15e9        // 15s
	MaxLockDelay       = 60e9        // 60s
	lockDelayThreshold = 1000        // numbers below this are seconds
)

// LockDelayThreshold is the value under which a numeric LockDelay is taken as
// seconds rather than nanoseconds.
const LockDelayThreshold = lockDelayThreshold

// Session is a KV session.
type Session struct {
	ID            string
	Name          string
	Node          string
	LockDelay     int64 // nanoseconds
	Behavior      string
	TTL           string
	NodeChecks    []string
	ServiceChecks []ServiceCheck
	CreateIndex   uint64
	ModifyIndex   uint64
}

// ServiceCheck names a service check a session depends on.
type ServiceCheck struct {
	ID        string
	Namespace string `json:",omitempty"`
}

// AllCheckIDs returns every check the session depends on.
func (s *Session) AllCheckIDs() []string {
	out := append([]string(nil), s.NodeChecks...)
	for _, c := range s.ServiceChecks {
		out = append(out, c.ID)
	}
	return out
}
