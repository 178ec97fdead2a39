package snapshot

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func run(t *testing.T, args ...string) clitest.Result {
	t.Helper()
	return clitest.Run(t, Run, args...)
}

func mustFail(t *testing.T, r clitest.Result, wantStderr ...string) {
	t.Helper()
	if r.Code != 1 || r.Stdout != "" {
		t.Fatalf("got exit %d stdout %q stderr %q; want exit 1, no stdout", r.Code, r.Stdout, r.Stderr)
	}
	for _, w := range wantStderr {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("stderr %q does not contain %q", r.Stderr, w)
		}
	}
}

// dirNames lists dir, to show that no temporary file was left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func putKV(t *testing.T, c *api.Client, key, value string) {
	t.Helper()
	if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}

func getKV(t *testing.T, c *api.Client, key string) *api.KVPair {
	t.Helper()
	p, _, err := c.KV().Get(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var savedRE = regexp.MustCompile(`^Saved and verified snapshot to index (\d+)\n$`)

// saveFrom saves a snapshot of the agent at addr to file and returns the
// index it reported.
func saveFrom(t *testing.T, addr, file string) uint64 {
	t.Helper()
	r := run(t, "save", "-http-addr", addr, file)
	m := savedRE.FindStringSubmatch(r.Stdout)
	if r.Code != 0 || m == nil || r.Stderr != "" {
		t.Fatalf("save: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	idx, _ := strconv.ParseUint(m[1], 10, 64)
	return idx
}

func TestSaveInspectRestore(t *testing.T) {
	a, ca := clitest.Agent(t)
	want := map[string]string{"app/config": "v1", "app/flags": "on", "top": "x"}
	for k, v := range want {
		putKV(t, ca, k, v)
	}
	if _, err := ca.Catalog().Register(&api.CatalogRegistration{
		Node: "ext-db", Address: "10.0.0.9",
		Service: &api.AgentService{ID: "db1", Service: "db", Port: 5432, Tags: []string{"primary"}},
	}, nil); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	index := saveFrom(t, a.HTTPAddr, file)
	if index == 0 {
		t.Errorf("saved at index 0")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"backup.snap"}) {
		t.Errorf("dir holds %q, want only backup.snap", got)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("stat %s: %v, %v; want mode 0600", file, st, err)
	}

	t.Run("inspect json", func(t *testing.T) {
		r := run(t, "inspect", "-format", "json", file)
		if r.Code != 0 || r.Stderr != "" {
			t.Fatalf("exit %d stderr %q", r.Code, r.Stderr)
		}
		var out inspectOutput
		if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
			t.Fatalf("%v in %s", err, r.Stdout)
		}
		if out.Meta.Index != index || out.Meta.ID == "" || out.Meta.Size == 0 || out.Meta.Version != 1 {
			t.Errorf("meta = %+v, want index %d", out.Meta, index)
		}
		counts := map[string]int{}
		for _, s := range out.Stats {
			counts[s.Name] = s.Count
		}
		if counts["kvs"] != len(want) {
			t.Errorf("kvs count = %d, want %d (stats %+v)", counts["kvs"], len(want), out.Stats)
		}
		// The agent's own node and the one registered above.
		if counts["nodes"] < 2 || counts["services"] < 1 {
			t.Errorf("stats %+v, want >= 2 nodes and >= 1 service", out.Stats)
		}
		if !slices.IsSortedFunc(out.Stats, func(a, b typeStat) int { return b.Count - a.Count }) {
			t.Errorf("stats not largest first: %+v", out.Stats)
		}
	})

	t.Run("inspect pretty", func(t *testing.T) {
		r := run(t, "inspect", file)
		if r.Code != 0 || r.Stderr != "" {
			t.Fatalf("exit %d stderr %q", r.Code, r.Stderr)
		}
		meta, table, ok := strings.Cut(r.Stdout, "\n\n")
		if !ok {
			t.Fatalf("no blank line between metadata and table:\n%s", r.Stdout)
		}
		metaRE := regexp.MustCompile(`^ID {11}\S+\nSize {9}\d+\nIndex {8}` + strconv.FormatUint(index, 10) + `\nTerm {9}\d+\nVersion {6}1$`)
		if !metaRE.MatchString(meta) {
			t.Errorf("metadata block:\n%s\nwant it to match %s", meta, metaRE)
		}
		lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
		if len(lines) < 5 || !regexp.MustCompile(`^Type +Count$`).MatchString(lines[0]) ||
			!regexp.MustCompile(`^---- +-----$`).MatchString(lines[1]) ||
			lines[len(lines)-2] != lines[1] {
			t.Fatalf("table:\n%s", table)
		}
		if !regexp.MustCompile(`(?m)^kvs +3$`).MatchString(table) {
			t.Errorf("table has no kvs row of 3:\n%s", table)
		}
		total := 0
		for _, l := range lines[2 : len(lines)-2] {
			f := strings.Fields(l)
			n, err := strconv.Atoi(f[len(f)-1])
			if len(f) != 2 || err != nil {
				t.Fatalf("bad row %q", l)
			}
			total += n
		}
		if got, want := strings.Fields(lines[len(lines)-1]), []string{"Total", strconv.Itoa(total)}; !slices.Equal(got, want) {
			t.Errorf("total row %q, want %q", got, want)
		}
	})

	t.Run("restore into a fresh agent", func(t *testing.T) {
		b, cb := clitest.Agent(t)
		putKV(t, cb, "only-on-b", "gone after restore")
		r := run(t, "restore", "-http-addr", b.HTTPAddr, file)
		if r.Code != 0 || r.Stdout != "Restored snapshot\n" || r.Stderr != "" {
			t.Fatalf("restore: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
		}
		for k, v := range want {
			if p := getKV(t, cb, k); p == nil || string(p.Value) != v {
				t.Errorf("B: %s = %+v, want %q", k, p, v)
			}
		}
		if p := getKV(t, cb, "only-on-b"); p != nil {
			t.Errorf("B kept only-on-b = %q: restore must replace the whole state", p.Value)
		}
		svcs, _, err := cb.Catalog().Service("db", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(svcs) != 1 || svcs[0].Node != "ext-db" || svcs[0].Address != "10.0.0.9" || svcs[0].ServicePort != 5432 ||
			!slices.Equal(svcs[0].ServiceTags, []string{"primary"}) {
			t.Errorf("B: catalog service db = %+v", svcs)
		}
	})
}

func TestSaveReplacesExistingFile(t *testing.T) {
	a, c := clitest.Agent(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	putKV(t, c, "k", "v")
	saveFrom(t, a.HTTPAddr, file)
	if r := run(t, "inspect", file); r.Code != 0 || !regexp.MustCompile(`(?m)^kvs +1$`).MatchString(r.Stdout) {
		t.Errorf("inspect after replacing: %+v", r)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"backup.snap"}) {
		t.Errorf("dir holds %q, want only backup.snap", got)
	}
}

// TestSaveFailureLeavesFileAlone checks that a failed save leaves FILE as
// it was, present or absent, and no temporary file beside it.
func TestSaveFailureLeavesFileAlone(t *testing.T) {
	dead := clitest.DeadAddr(t)
	fake := func(status int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Consul-Index", "7")
			w.WriteHeader(status)
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	garbage := fake(http.StatusOK, "not an archive")
	failing := fake(http.StatusInternalServerError, "raft: no leader")
	tests := []struct {
		name string
		addr string
		want []string
	}{
		{"unreachable agent", dead, []string{"Error querying agent: ", `"http://` + dead + `/v1/snapshot"`}},
		{"agent error", failing, []string{"Error saving snapshot: Unexpected response code: 500 (raft: no leader)"}},
		{"damaged archive from agent", garbage, []string{"Error saving snapshot to ", "backup.snap: verifying snapshot: snapshot: not a snapshot archive"}},
	}
	for _, tt := range tests {
		for _, exists := range []bool{true, false} {
			t.Run(tt.name+map[bool]string{true: " over old file", false: " to new file"}[exists], func(t *testing.T) {
				dir := t.TempDir()
				file := filepath.Join(dir, "backup.snap")
				if exists {
					if err := os.WriteFile(file, []byte("old snapshot"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				mustFail(t, run(t, "save", "-http-addr", tt.addr, file), tt.want...)
				if exists {
					if b, err := os.ReadFile(file); err != nil || string(b) != "old snapshot" {
						t.Errorf("old file now %q, %v", b, err)
					}
					if got := dirNames(t, dir); !slices.Equal(got, []string{"backup.snap"}) {
						t.Errorf("dir holds %q, want only backup.snap", got)
					}
				} else if got := dirNames(t, dir); len(got) != 0 {
					t.Errorf("dir holds %q, want nothing", got)
				}
			})
		}
	}
}

func TestSaveUnwritableDirDoesNotAskAgent(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "missing", "backup.snap")
	mustFail(t, run(t, "save", "-http-addr", srv.URL, file), "Error saving snapshot to "+file+": creating temporary file in ", "no such file or directory")
	if n := hits.Load(); n != 0 {
		t.Errorf("agent got %d requests", n)
	}
}

// damage returns copies of a good archive that must all be refused.
func damage(t *testing.T, good []byte) map[string][]byte {
	t.Helper()
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff

	// A byte of state.bin changed under intact compression: only the
	// checksum can tell.
	zr, err := gzip.NewReader(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	h := bytes.Index(raw, []byte("state.bin\x00"))
	if h < 0 || h%512 != 0 {
		t.Fatalf("no tar header for state.bin (at %d)", h)
	}
	raw[h+512+10] ^= 0xff
	var recompressed bytes.Buffer
	zw := gzip.NewWriter(&recompressed)
	zw.Write(raw)
	zw.Close()

	return map[string][]byte{
		"flipped byte":   flipped,
		"state changed":  recompressed.Bytes(),
		"truncated":      good[:len(good)/2],
		"not an archive": []byte("hello"),
	}
}

func TestRestoreDamagedFile(t *testing.T) {
	a, c := clitest.Agent(t)
	dead := clitest.DeadAddr(t)
	putKV(t, c, "before", "1")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.snap")
	saveFrom(t, a.HTTPAddr, good)
	// Written after the snapshot: any restore of it would remove this key.
	putKV(t, c, "after", "2")
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}

	for name, data := range damage(t, goodBytes) {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".snap")
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			mustFail(t, run(t, "restore", "-http-addr", a.HTTPAddr, file), "Error verifying snapshot file "+file+": snapshot: ")
			// Refused before the agent is contacted: no "Error querying agent".
			mustFail(t, run(t, "restore", "-http-addr", dead, file), "Error verifying snapshot file "+file+": ")
			mustFail(t, run(t, "inspect", file), "Error verifying snapshot file "+file+": ")
		})
	}
	t.Run("state changed is a checksum mismatch", func(t *testing.T) {
		file := filepath.Join(dir, "state-changed.snap")
		mustFail(t, run(t, "restore", "-http-addr", a.HTTPAddr, file), "checksum of state.bin does not match")
	})
	for k, v := range map[string]string{"before": "1", "after": "2"} {
		if p := getKV(t, c, k); p == nil || string(p.Value) != v {
			t.Errorf("%s = %+v, want %q: agent state changed", k, p, v)
		}
	}
}

func TestRestoreErrors(t *testing.T) {
	a, _ := clitest.Agent(t)
	dead := clitest.DeadAddr(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.snap")
	saveFrom(t, a.HTTPAddr, good)
	missing := filepath.Join(dir, "missing.snap")

	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "snapshot: archive has no meta.json", http.StatusBadRequest)
	}))
	defer refusing.Close()

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"missing file", []string{"-http-addr", a.HTTPAddr, missing}, []string{"Error opening snapshot file: open " + missing + ": no such file or directory"}},
		{"no file argument", []string{"-http-addr", a.HTTPAddr}, []string{"Missing FILE argument"}},
		{"two files", []string{"-http-addr", a.HTTPAddr, good, good}, []string{"Too many arguments (expected 1, got 2)"}},
		{"unreachable agent", []string{"-http-addr", dead, good}, []string{"Error querying agent: ", `"http://` + dead + `/v1/snapshot"`}},
		{"agent refuses", []string{"-http-addr", refusing.URL, good}, []string{"Error restoring snapshot: Unexpected response code: 400 (snapshot: archive has no meta.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustFail(t, run(t, append([]string{"restore"}, tt.args...)...), tt.want...)
		})
	}
}

func TestArgumentErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.snap")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"save"}, "Missing FILE argument"},
		{[]string{"save", file, file}, "Too many arguments (expected 1, got 2)"},
		{[]string{"inspect"}, "Missing FILE argument"},
		{[]string{"inspect", "-format", "yaml", file}, `Error! Unknown format "yaml": want pretty or json`},
		{[]string{"inspect", file}, "Error opening snapshot file: open " + file + ": no such file or directory"},
		{[]string{"save", "-bogus", file}, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			mustFail(t, run(t, tt.args...), tt.want)
		})
	}
}

func TestUsage(t *testing.T) {
	r := run(t)
	if r.Code != 1 || !strings.HasPrefix(r.Stderr, "Usage: trellis snapshot <subcommand>") {
		t.Fatalf("%+v", r)
	}
	for _, v := range []string{"inspect", "restore", "save"} {
		if !regexp.MustCompile(`(?m)^ +` + v + ` +\S`).MatchString(r.Stderr) {
			t.Errorf("usage does not list %q:\n%s", v, r.Stderr)
		}
	}
	if r := run(t, "save", "-h"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "Usage: trellis snapshot save [options] FILE") ||
		!strings.Contains(r.Stdout, "-stale") || !strings.Contains(r.Stdout, "-http-addr") {
		t.Errorf("save -h: %+v", r)
	}
}
