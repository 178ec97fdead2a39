package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// `trellis agent -dev -log-json` serves, logs one JSON object per line and
// exits 0 when its context ends.
func TestCommandRunsAndLogsJSON(t *testing.T) {
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Command(ctx, []string{"-dev", "-log-json", "-log-level", "info", "-node", "cmd-test",
			"-http-port", "0", "-dns-port", "0", "-server-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0", "-grpc-port", "-1"}, &stdout, &stderr)
	}()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(stdout.String(), "HTTP API:") {
		select {
		case code := <-done:
			t.Fatalf("agent exited with %d before serving; stderr:\n%s", code, stderr.String())
		case <-deadline:
			t.Fatalf("agent did not serve within 30s; stdout:\n%s", stdout.String())
		case <-time.After(10 * time.Millisecond): // poll again
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop within 30s of its context ending")
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("no log lines")
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] == nil || m["level"] == nil {
			t.Errorf("log line is not a JSON record: %q (%v)", l, err)
		}
	}
	if !strings.Contains(stdout.String(), "Trellis agent stopped") {
		t.Errorf("stdout does not say the agent stopped:\n%s", stdout.String())
	}
}
