package ca

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults and bounds of the CA configuration, as Consul's.
const (
	DefaultLeafCertTTL         = 72 * time.Hour
	DefaultRootCertTTL         = 87600 * time.Hour // 10 years
	DefaultIntermediateCertTTL = 8760 * time.Hour  // 1 year
	MinLeafCertTTL             = time.Hour
	MaxLeafCertTTL             = 8760 * time.Hour
	DefaultPrivateKeyType      = "ec"
	DefaultECBits              = 256
	DefaultRSABits             = 2048
)

// ProviderConsul is the name of the built-in provider.
const ProviderConsul = "consul"

// Config is a provider's configuration: the CAConfiguration's Config map,
// parsed, checked and with its defaults filled in.
type Config struct {
	// LeafCertTTL is how long a leaf is valid: 1h to 8760h, default 72h.
	LeafCertTTL time.Duration
	// RootCertTTL is how long a generated root is valid: default 87600h,
	// and longer than IntermediateCertTTL.
	RootCertTTL time.Duration
	// IntermediateCertTTL is accepted and checked as Consul's (at least
	// 3 × LeafCertTTL); the built-in provider signs leaves with the root
	// itself, so it has no other effect.
	IntermediateCertTTL time.Duration
	// PrivateKeyType is the key type of a generated root: "ec" (default)
	// or "rsa".
	PrivateKeyType string
	// PrivateKeyBits: 224, 256 (default), 384 or 521 for ec; 2048
	// (default), 3072 or 4096 for rsa.
	PrivateKeyBits int
	// PrivateKey and RootCert, PEM, supply the root instead of
	// generating one; both or neither.
	PrivateKey string
	RootCert   string

	// keyTypeSet and keyBitsSet record whether PrivateKeyType and
	// PrivateKeyBits were given (not defaulted): see InheritKey.
	keyTypeSet, keyBitsSet bool

	// Extra holds the Consul settings Trellis accepts and stores with no
	// effect (RotationPeriod, CSRMaxPerSecond, CSRMaxConcurrent,
	// SkipValidate), by their canonical names.
	Extra map[string]any
}

// configKeys maps the folded form of each key (lowercase, no
// underscores) to its canonical name.
var configKeys = map[string]string{
	"leafcertttl":         "LeafCertTTL",
	"rootcertttl":         "RootCertTTL",
	"intermediatecertttl": "IntermediateCertTTL",
	"privatekeytype":      "PrivateKeyType",
	"privatekeybits":      "PrivateKeyBits",
	"privatekey":          "PrivateKey",
	"rootcert":            "RootCert",
	// Accepted for compatibility; no effect.
	"rotationperiod":   "RotationPeriod",
	"csrmaxpersecond":  "CSRMaxPerSecond",
	"csrmaxconcurrent": "CSRMaxConcurrent",
	"skipvalidate":     "SkipValidate",
}

// ParseConfig reads the Config map of a CAConfiguration for provider.
// Keys match as Consul's (CamelCase in any case, or snake_case);
// durations are strings such as "72h" (a number is nanoseconds). An
// unknown provider, an unknown key, a value of the wrong type or out of
// range is an error naming the key.
func ParseConfig(provider string, raw map[string]any) (*Config, error) {
	if _, ok := providers[provider]; !ok {
		return nil, fmt.Errorf("Provider: unknown CA provider %q (known: %s)", provider, strings.Join(Providers(), ", "))
	}
	c := &Config{Extra: map[string]any{}}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same error for the same bad input
	seen := map[string]string{}
	for _, k := range keys {
		name, ok := configKeys[strings.ToLower(strings.ReplaceAll(k, "_", ""))]
		if !ok {
			return nil, fmt.Errorf("Config: unknown key %q for provider %q", k, provider)
		}
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("Config.%s: given twice (%q and %q)", name, prev, k)
		}
		seen[name] = k
		v := raw[k]
		if v == nil {
			continue
		}
		var err error
		switch name {
		case "LeafCertTTL":
			c.LeafCertTTL, err = toDuration(v)
		case "RootCertTTL":
			c.RootCertTTL, err = toDuration(v)
		case "IntermediateCertTTL":
			c.IntermediateCertTTL, err = toDuration(v)
		case "PrivateKeyType":
			c.PrivateKeyType, err = toString(v)
			c.PrivateKeyType = strings.ToLower(c.PrivateKeyType)
			c.keyTypeSet = c.PrivateKeyType != ""
		case "PrivateKeyBits":
			c.PrivateKeyBits, err = toInt(v)
			c.keyBitsSet = c.PrivateKeyBits != 0
		case "PrivateKey":
			c.PrivateKey, err = toString(v)
		case "RootCert":
			c.RootCert, err = toString(v)
		case "RotationPeriod":
			var d time.Duration
			d, err = toDuration(v)
			c.Extra[name] = FormatDuration(d)
		default:
			c.Extra[name] = v
		}
		if err != nil {
			return nil, fmt.Errorf("Config.%s: %v", name, err)
		}
	}
	if c.RootCert != "" && c.PrivateKey != "" {
		if err := c.keyFromRoot(); err != nil {
			return nil, err
		}
	}
	if err := c.fill(); err != nil {
		return nil, err
	}
	return c, nil
}

// keyFromRoot sets PrivateKeyType and PrivateKeyBits to those of the
// supplied RootCert's key, so that the configuration stored (Map)
// describes the root in use. A type or size given that contradicts the
// key is an error naming it. The rest of RootCert's checks (a CA, its
// validity, PrivateKey its key) are the provider's, when it uses it.
func (c *Config) keyFromRoot() error {
	cert, err := ParseCert(c.RootCert)
	if err != nil {
		return fmt.Errorf("Config.RootCert: %v", err)
	}
	typ, bits, err := KeyInfo(cert.PublicKey)
	if err != nil {
		return fmt.Errorf("Config.RootCert: %v", err)
	}
	if c.keyTypeSet && c.PrivateKeyType != typ {
		return fmt.Errorf("Config.PrivateKeyType: %q contradicts RootCert, whose key is %s (%d bits): give %q or leave it out",
			c.PrivateKeyType, typ, bits, typ)
	}
	if c.keyBitsSet && c.PrivateKeyBits != bits {
		return fmt.Errorf("Config.PrivateKeyBits: %d contradicts RootCert, whose key is %s (%d bits): give %d or leave it out",
			c.PrivateKeyBits, typ, bits, bits)
	}
	if !validKeySize(typ, bits) {
		return fmt.Errorf("Config.RootCert: its %s key of %d bits is not supported: want ec of 224, 256, 384 or 521 bits, or rsa of 2048, 3072 or 4096", typ, bits)
	}
	c.PrivateKeyType, c.PrivateKeyBits = typ, bits
	return nil
}

// validKeySize reports whether a root key of typ and bits is one the
// configuration allows.
func validKeySize(typ string, bits int) bool {
	switch typ {
	case "ec":
		switch bits {
		case 224, 256, 384, 521:
			return true
		}
	case "rsa":
		switch bits {
		case 2048, 3072, 4096:
			return true
		}
	}
	return false
}

// KeySet reports whether the configuration, as parsed, gave
// PrivateKeyType or PrivateKeyBits (or a RootCert, which sets both).
func (c *Config) KeySet() bool {
	return c.keyTypeSet || c.keyBitsSet || c.RootCert != ""
}

// InheritKey makes a configuration that does not speak of the root key
// keep the one in use (typ and bits, the active root's): with neither
// PrivateKeyType nor PrivateKeyBits nor RootCert given it takes both,
// and with only PrivateKeyType given, equal to typ, it takes bits. So a
// configuration read back and written again (the stored one holds the
// active root's key) or one that only changes a TTL does not rotate the
// root. A key given otherwise is left as it is.
func (c *Config) InheritKey(typ string, bits int) {
	if c.RootCert != "" || c.keyBitsSet || !validKeySize(typ, bits) {
		return
	}
	if !c.keyTypeSet || c.PrivateKeyType == typ {
		c.PrivateKeyType, c.PrivateKeyBits = typ, bits
	}
}

// fill sets the defaults and checks the ranges.
func (c *Config) fill() error {
	if c.LeafCertTTL == 0 {
		c.LeafCertTTL = DefaultLeafCertTTL
	}
	if c.RootCertTTL == 0 {
		c.RootCertTTL = DefaultRootCertTTL
	}
	if c.IntermediateCertTTL == 0 {
		c.IntermediateCertTTL = DefaultIntermediateCertTTL
	}
	if c.PrivateKeyType == "" {
		c.PrivateKeyType = DefaultPrivateKeyType
	}
	switch c.PrivateKeyType {
	case "ec":
		if c.PrivateKeyBits == 0 {
			c.PrivateKeyBits = DefaultECBits
		}
		switch c.PrivateKeyBits {
		case 224, 256, 384, 521:
		default:
			return fmt.Errorf("Config.PrivateKeyBits: %d is not valid for an ec key: want 224, 256, 384 or 521", c.PrivateKeyBits)
		}
	case "rsa":
		if c.PrivateKeyBits == 0 {
			c.PrivateKeyBits = DefaultRSABits
		}
		switch c.PrivateKeyBits {
		case 2048, 3072, 4096:
		default:
			return fmt.Errorf("Config.PrivateKeyBits: %d is not valid for an rsa key: want 2048, 3072 or 4096", c.PrivateKeyBits)
		}
	default:
		return fmt.Errorf("Config.PrivateKeyType: %q is not valid: want \"ec\" or \"rsa\"", c.PrivateKeyType)
	}
	switch {
	case c.LeafCertTTL < MinLeafCertTTL:
		return fmt.Errorf("Config.LeafCertTTL: %s is below the minimum of 1h", FormatDuration(c.LeafCertTTL))
	case c.LeafCertTTL > MaxLeafCertTTL:
		return fmt.Errorf("Config.LeafCertTTL: %s is above the maximum of 8760h (1 year)", FormatDuration(c.LeafCertTTL))
	case c.IntermediateCertTTL < 3*c.LeafCertTTL:
		return fmt.Errorf("Config.IntermediateCertTTL: %s must be at least 3 × LeafCertTTL (%s)",
			FormatDuration(c.IntermediateCertTTL), FormatDuration(3*c.LeafCertTTL))
	case c.RootCertTTL <= c.IntermediateCertTTL:
		return fmt.Errorf("Config.RootCertTTL: %s must be longer than IntermediateCertTTL (%s)",
			FormatDuration(c.RootCertTTL), FormatDuration(c.IntermediateCertTTL))
	}
	if (c.PrivateKey == "") != (c.RootCert == "") {
		if c.PrivateKey == "" {
			return fmt.Errorf("Config.PrivateKey: required with RootCert")
		}
		return fmt.Errorf("Config.RootCert: required with PrivateKey")
	}
	return nil
}

// Map is the configuration as it is stored and shown: canonical keys,
// durations as strings, with the defaults filled in. PrivateKey and
// RootCert are left out: a supplied root is kept, key and all, as a
// CARoot (the roots endpoint shows its certificate), and a configuration
// read back can be written again without the key. PrivateKeyType and
// PrivateKeyBits are those of the root in use (a supplied root's own,
// see keyFromRoot; the active root's, see InheritKey), so writing back
// what was read keeps that root.
func (c *Config) Map() map[string]any {
	m := map[string]any{
		"LeafCertTTL":         FormatDuration(c.LeafCertTTL),
		"RootCertTTL":         FormatDuration(c.RootCertTTL),
		"IntermediateCertTTL": FormatDuration(c.IntermediateCertTTL),
		"PrivateKeyType":      c.PrivateKeyType,
		"PrivateKeyBits":      c.PrivateKeyBits,
	}
	for k, v := range c.Extra {
		m[k] = v
	}
	return m
}

// FormatDuration writes d as Consul shows durations: "72h", "1h30m".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func toDuration(v any) (time.Duration, error) {
	switch t := v.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(t))
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as \"72h\"", t)
		}
		if d < 0 {
			return 0, fmt.Errorf("%q is negative", t)
		}
		return d, nil
	}
	n, err := toInt64(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as \"72h\", got %v", v)
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return time.Duration(n), nil
}

func toString(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %v", v)
	}
	return s, nil
}

func toInt(v any) (int, error) {
	if s, ok := v.(string); ok {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number", s)
		}
		return n, nil
	}
	n, err := toInt64(v)
	if err != nil || n > math.MaxInt32 || n < math.MinInt32 {
		return 0, fmt.Errorf("want a whole number, got %v", v)
	}
	return int(n), nil
}

// toInt64 accepts the number types JSON and msgpack decode to.
func toInt64(v any) (int64, error) {
	switch t := v.(type) {
	case int:
		return int64(t), nil
	case int64:
		return t, nil
	case int32:
		return int64(t), nil
	case uint64:
		if t > math.MaxInt64 {
			return 0, fmt.Errorf("out of range")
		}
		return int64(t), nil
	case float64:
		if t != math.Trunc(t) || math.Abs(t) > math.MaxInt64/2 {
			return 0, fmt.Errorf("not a whole number")
		}
		return int64(t), nil
	case json.Number:
		return t.Int64()
	}
	return 0, fmt.Errorf("not a number")
}
