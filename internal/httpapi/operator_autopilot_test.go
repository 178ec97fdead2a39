package httpapi

import (
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestDecodeAutopilotConfig(t *testing.T) {
	full := structs.AutopilotConfig{CleanupDeadServers: true, LastContactThreshold: structs.Duration(200 * time.Millisecond),
		MaxTrailingLogs: 250, MinQuorum: 3, ServerStabilizationTime: structs.Duration(10 * time.Second),
		RedundancyZoneTag: "zone", DisableUpgradeMigration: true, UpgradeVersionTag: "ver"}
	for _, tc := range []struct {
		name string
		body string
		want structs.AutopilotConfig
	}{
		{"consul/api's shape", `{"CleanupDeadServers":true,"LastContactThreshold":"200ms","MaxTrailingLogs":250,"MinQuorum":3,
			"ServerStabilizationTime":"10s","RedundancyZoneTag":"zone","DisableUpgradeMigration":true,"UpgradeVersionTag":"ver",
			"CreateIndex":4,"ModifyIndex":4}`, full},
		{"snake_case and nanoseconds", `{"cleanup_dead_servers":true,"last_contact_threshold":200000000,"max_trailing_logs":250,
			"min_quorum":3,"server_stabilization_time":"10s","redundancy_zone_tag":"zone","disable_upgrade_migration":true,
			"upgrade_version_tag":"ver"}`, full},
		{"null is left out", `{"LastContactThreshold":"1s","ServerStabilizationTime":null,"RedundancyZoneTag":null}`,
			structs.AutopilotConfig{LastContactThreshold: structs.Duration(time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeAutopilotConfig(strings.NewReader(tc.body))
			if err != nil || *got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// Bad input is a 400 that names the field (by its Consul name, however
// it was spelt).
func TestDecodeAutopilotConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty", ``, "empty body"},
		{"not an object", `[1]`, "must be a JSON object"},
		{"broken JSON", `{"MinQuorum":`, "must be a JSON object"},
		{"unknown field", `{"LastContactThreshold":"1s","Foo":1}`, `unknown field "Foo"`},
		{"field twice", `{"LastContactThreshold":"1s","MinQuorum":1,"min_quorum":2}`, "MinQuorum given twice"},
		{"negative trailing logs", `{"LastContactThreshold":"1s","MaxTrailingLogs":-1}`, "MaxTrailingLogs: must not be negative, got -1"},
		{"fractional quorum", `{"LastContactThreshold":"1s","MinQuorum":1.5}`, "MinQuorum: must be a whole number, got 1.5"},
		{"quorum as a string", `{"LastContactThreshold":"1s","MinQuorum":"3"}`, `MinQuorum: must be a whole number, got "3"`},
		{"huge trailing logs", `{"LastContactThreshold":"1s","MaxTrailingLogs":18446744073709551616}`, "MaxTrailingLogs: must be at most 18446744073709551615"},
		{"unparsable duration", `{"LastContactThreshold":"soon"}`, "LastContactThreshold: must be a duration"},
		{"duration of the wrong type", `{"LastContactThreshold":true}`, "LastContactThreshold: must be a duration"},
		{"negative duration", `{"last_contact_threshold":"-1s"}`, `LastContactThreshold: must not be negative, got "-1s"`},
		{"negative stabilization", `{"LastContactThreshold":"1s","ServerStabilizationTime":"-5s"}`, "ServerStabilizationTime: must not be negative"},
		{"no last contact threshold", `{"CleanupDeadServers":true}`, "LastContactThreshold must be a positive duration"},
		{"zero last contact threshold", `{"LastContactThreshold":"0s"}`, "LastContactThreshold must be a positive duration"},
		{"bool as a string", `{"LastContactThreshold":"1s","CleanupDeadServers":"false"}`, `CleanupDeadServers: must be true or false, got "false"`},
		{"tag as a number", `{"LastContactThreshold":"1s","RedundancyZoneTag":1}`, "RedundancyZoneTag: must be a string, got 1"},
		{"negative index", `{"LastContactThreshold":"1s","ModifyIndex":-4}`, "ModifyIndex: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeAutopilotConfig(strings.NewReader(tc.body))
			if err == nil || !structs.IsBadRequest(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %+v, %v; want a bad request containing %q", got, err, tc.want)
			}
		})
	}
}
