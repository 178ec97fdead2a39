package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// RaftStatsPath is where a server answers the leader's autopilot with its
// raft stats (structs.RaftStats). It is internal: served only to a request
// another server sent straight over the internal RPC (ForwardedHeader set,
// OriginNodeHeader not), so the public HTTP API, which strips
// ForwardedHeader, answers 404 for it, and a request relayed for a client
// (which carries OriginNodeHeader) too.
const RaftStatsPath = "/v1/internal/raft-stats"

// maxAutopilotBody bounds the body of PUT
// /v1/operator/autopilot/configuration: a handful of fields.
const maxAutopilotBody = 64 << 10

func (a *API) autopilotRoutes() {
	a.handle("GET", "/v1/operator/autopilot/configuration", a.operatorAutopilotGetConfiguration)
	a.handle("PUT", "/v1/operator/autopilot/configuration", a.operatorAutopilotSetConfiguration)
	a.handle("GET", "/v1/operator/autopilot/health", a.operatorAutopilotHealth)
	a.handle("GET", "/v1/operator/autopilot/state", a.operatorAutopilotState)
	a.handle("GET", RaftStatsPath, a.internalRaftStats)
}

// operatorAutopilotGetConfiguration answers the configuration in force:
// the stored one, or, while an operator has set none, the serving
// server's defaults from its agent config (CreateIndex and ModifyIndex 0).
func (a *API) operatorAutopilotGetConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	a.setMeta(w, nil)
	return a.deps.Server.AutopilotConfiguration(), nil
}

// operatorAutopilotSetConfiguration replaces the configuration with the
// body, whole (fields left out are zero, as in Consul), and answers true;
// with ?cas=<index>, only when index is the stored ModifyIndex (0 while
// none is stored), answering whether it did. A body that does not decode
// or holds a value out of range is a 400 naming the field, and nothing is
// stored.
func (a *API) operatorAutopilotSetConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var cas bool
	var casIndex uint64
	if _, ok := q["cas"]; ok {
		v, err := strconv.ParseUint(q.Get("cas"), 10, 64)
		if err != nil {
			return nil, badRequest("Invalid cas index: %v", err)
		}
		cas, casIndex = true, v
	}
	cfg, err := decodeAutopilotConfig(r.Body)
	if err != nil {
		return nil, err
	}
	return a.deps.Server.AutopilotSetConfiguration(cfg, cas, casIndex)
}

// operatorAutopilotHealth answers the servers' health as the leader's
// autopilot sees it: 200 when every server is healthy, 429 with the same
// body otherwise, as Consul.
func (a *API) operatorAutopilotHealth(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	reply, err := a.deps.Server.AutopilotHealth(r.Context())
	if err != nil {
		return nil, err
	}
	a.setMeta(w, nil)
	if reply.Healthy {
		return reply, nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	enc := json.NewEncoder(w)
	if _, ok := r.URL.Query()["pretty"]; ok {
		enc.SetIndent("", "    ")
	}
	if err := enc.Encode(reply); err != nil {
		a.log.Debug("writing response", "path", r.URL.Path, "error", err)
	}
	return nil, nil
}

// operatorAutopilotState answers the leader's autopilot state.
func (a *API) operatorAutopilotState(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	st, err := a.deps.Server.AutopilotState(r.Context())
	if err != nil {
		return nil, err
	}
	a.setMeta(w, nil)
	return st, nil
}

// errPageNotFound is ServeMux's answer for a path it does not know.
var errPageNotFound = httpError{code: http.StatusNotFound, msg: "404 page not found\n"}

// internalRaftStats answers another server's autopilot with this
// server's raft stats; see RaftStatsPath.
func (a *API) internalRaftStats(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Header.Get(ForwardedHeader) == "" || r.Header.Get(OriginNodeHeader) != "" || a.deps.Server == nil {
		return nil, errPageNotFound
	}
	return a.deps.Server.RaftStats(), nil
}

// autopilotFields are the keys of an autopilot configuration, by their
// normalised form (lowercase, no underscores), with the name errors use.
var autopilotFields = map[string]string{
	"cleanupdeadservers":      "CleanupDeadServers",
	"lastcontactthreshold":    "LastContactThreshold",
	"maxtrailinglogs":         "MaxTrailingLogs",
	"minquorum":               "MinQuorum",
	"serverstabilizationtime": "ServerStabilizationTime",
	"redundancyzonetag":       "RedundancyZoneTag",
	"disableupgrademigration": "DisableUpgradeMigration",
	"upgradeversiontag":       "UpgradeVersionTag",
	"createindex":             "CreateIndex",
	"modifyindex":             "ModifyIndex",
}

// decodeAutopilotConfig decodes and checks the body of PUT
// /v1/operator/autopilot/configuration. Keys match as Consul's
// (CamelCase, any case, or snake_case); null is the same as leaving a
// key out; CreateIndex and ModifyIndex are read-only and ignored. An
// unknown key, a value of the wrong type, a negative number or duration,
// and a LastContactThreshold that is not positive are 400s naming the
// field.
func decodeAutopilotConfig(body io.Reader) (*structs.AutopilotConfig, error) {
	raw, err := io.ReadAll(io.LimitReader(body, maxAutopilotBody+1))
	if err != nil {
		return nil, badRequest("Request decode failed: reading body: %v", err)
	}
	if len(raw) > maxAutopilotBody {
		return nil, badRequest("Request decode failed: body larger than %d bytes", maxAutopilotBody)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, badRequest("Request decode failed: empty body: want an autopilot configuration object")
	}
	var fields map[string]json.RawMessage
	if raw[0] != '{' || json.Unmarshal(raw, &fields) != nil {
		return nil, badRequest("Request decode failed: body must be a JSON object of autopilot settings")
	}
	// Sorted, so that with several bad keys the error is always the same.
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var c structs.AutopilotConfig
	given := map[string]string{}
	for _, k := range keys {
		norm := strings.ToLower(strings.ReplaceAll(k, "_", ""))
		name, ok := autopilotFields[norm]
		if !ok {
			return nil, badRequest("Request decode failed: unknown field %q", k)
		}
		if prev, dup := given[norm]; dup {
			return nil, badRequest("Request decode failed: %s given twice (%q and %q)", name, prev, k)
		}
		given[norm] = k
		v := fields[k]
		if string(v) == "null" {
			continue
		}
		switch norm {
		case "cleanupdeadservers":
			err = decodeJSONBool(v, &c.CleanupDeadServers)
		case "disableupgrademigration":
			err = decodeJSONBool(v, &c.DisableUpgradeMigration)
		case "redundancyzonetag":
			err = decodeJSONString(v, &c.RedundancyZoneTag)
		case "upgradeversiontag":
			err = decodeJSONString(v, &c.UpgradeVersionTag)
		case "maxtrailinglogs":
			c.MaxTrailingLogs, err = decodeJSONUint(v, 64)
		case "minquorum":
			var n uint64
			n, err = decodeJSONUint(v, strconv.IntSize)
			c.MinQuorum = uint(n)
		case "createindex", "modifyindex":
			_, err = decodeJSONUint(v, 64)
		case "lastcontactthreshold":
			err = decodeJSONDuration(v, &c.LastContactThreshold)
		case "serverstabilizationtime":
			err = decodeJSONDuration(v, &c.ServerStabilizationTime)
		}
		if err != nil {
			return nil, badRequest("Request decode failed: %s: %v", name, err)
		}
	}
	switch {
	case c.LastContactThreshold <= 0:
		return nil, badRequest("Invalid autopilot configuration: LastContactThreshold must be a positive duration, got %q", c.LastContactThreshold)
	case c.ServerStabilizationTime < 0:
		return nil, badRequest("Invalid autopilot configuration: ServerStabilizationTime must not be negative, got %q", c.ServerStabilizationTime)
	}
	return &c, nil
}

func decodeJSONBool(v json.RawMessage, out *bool) error {
	switch string(v) {
	case "true":
		*out = true
	case "false":
		*out = false
	default:
		return fmt.Errorf("must be true or false, got %s", v)
	}
	return nil
}

func decodeJSONString(v json.RawMessage, out *string) error {
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, out) != nil {
		return fmt.Errorf("must be a string, got %s", v)
	}
	return nil
}

// decodeJSONUint accepts a JSON integer from 0 to the largest of bits.
func decodeJSONUint(v json.RawMessage, bits int) (uint64, error) {
	n, err := strconv.ParseUint(string(v), 10, bits)
	switch {
	case err == nil:
		return n, nil
	case len(v) > 0 && v[0] == '-':
		return 0, fmt.Errorf("must not be negative, got %s", v)
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("must be at most %d, got %s", ^uint64(0)>>(64-bits), v)
	}
	return 0, fmt.Errorf("must be a whole number, got %s", v)
}

// decodeJSONDuration accepts a duration string ("200ms"; a bare number
// string is seconds) or a number of nanoseconds, as Consul's
// ReadableDuration does; negative ones are refused.
func decodeJSONDuration(v json.RawMessage, out *structs.Duration) error {
	if len(v) == 0 || (v[0] != '"' && v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return fmt.Errorf("must be a duration such as \"10s\", got %s", v)
	}
	d, err := structs.ParseDurationJSON(v)
	if err != nil {
		return fmt.Errorf("must be a duration such as \"10s\": %v", err)
	}
	if d < 0 {
		return fmt.Errorf("must not be negative, got %q", d.String())
	}
	*out = structs.Duration(d)
	return nil
}
