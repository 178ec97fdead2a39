package structs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that encodes as a Go duration string ("10s")
// and decodes from either a duration string or a number of nanoseconds, as
// Consul's API accepts both.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText encodes d as a duration string; encoding/json quotes it.
// (A MarshalJSON that called json.Marshal cost a nested encode per field.)
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// UnmarshalJSON accepts "10s", "1.5m", "" (zero) or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	v, err := ParseDurationJSON(b)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDurationJSON parses a JSON string or number as a duration.
func ParseDurationJSON(b []byte) (time.Duration, error) {
	s := strings.TrimSpace(string(b))
	if s == "null" || s == `""` {
		return 0, nil
	}
	if strings.HasPrefix(s, `"`) {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return 0, err
		}
		return ParseDuration(str)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %s", s)
	}
	return time.Duration(f), nil
}

// ParseDuration parses a Go duration string; a bare number is taken as
// seconds, as Consul's config does for some fields.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return v, nil
}
