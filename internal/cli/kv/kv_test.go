package kv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// kvRun runs `trellis kv VERB -http-addr addr ARGS...` with the given stdin.
func kvRun(t *testing.T, stdin string, addr, verb string, args ...string) clitest.Result {
	t.Helper()
	return clitest.Run(t, Command(strings.NewReader(stdin)), append([]string{verb, "-http-addr", addr}, args...)...)
}

func mustOK(t *testing.T, r clitest.Result, wantStdout string) {
	t.Helper()
	if r.Code != 0 || r.Stdout != wantStdout {
		t.Fatalf("got exit %d stdout %q stderr %q; want exit 0 stdout %q", r.Code, r.Stdout, r.Stderr, wantStdout)
	}
}

func mustFail(t *testing.T, r clitest.Result, wantStderr string) {
	t.Helper()
	if r.Code != 1 || !strings.Contains(r.Stderr, wantStderr) {
		t.Fatalf("got exit %d stdout %q stderr %q; want exit 1 and stderr containing %q", r.Code, r.Stdout, r.Stderr, wantStderr)
	}
}

func get(t *testing.T, c *api.Client, key string) *api.KVPair {
	t.Helper()
	p, _, err := c.KV().Get(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPutGet(t *testing.T) {
	a, c := clitest.Agent(t)
	addr := a.HTTPAddr
	file := filepath.Join(t.TempDir(), "v.txt")
	if err := os.WriteFile(file, []byte("from file"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, kvRun(t, "", addr, "put", "foo", "bar"), "Success! Data written to: foo\n")
	mustOK(t, kvRun(t, "", addr, "put", "/lead/slash", "x"), "Success! Data written to: lead/slash\n")
	mustOK(t, kvRun(t, "", addr, "put", "file", "@"+file), "Success! Data written to: file\n")
	mustOK(t, kvRun(t, "from stdin", addr, "put", "stdin", "-"), "Success! Data written to: stdin\n")
	mustOK(t, kvRun(t, "", addr, "put", "-base64", "b64", "aGVsbG8="), "Success! Data written to: b64\n")
	mustOK(t, kvRun(t, "", addr, "put", "-flags", "42", "flagged", "v"), "Success! Data written to: flagged\n")
	mustOK(t, kvRun(t, "", addr, "put", "empty"), "Success! Data written to: empty\n")

	for key, want := range map[string]string{"foo": "bar", "lead/slash": "x", "file": "from file", "stdin": "from stdin", "b64": "hello", "empty": ""} {
		if p := get(t, c, key); p == nil || string(p.Value) != want {
			t.Errorf("%s = %v, want %q", key, p, want)
		}
		mustOK(t, kvRun(t, "", addr, "get", key), want+"\n")
	}
	if p := get(t, c, "flagged"); p == nil || p.Flags != 42 {
		t.Errorf("flagged = %+v, want flags 42", p)
	}
	mustOK(t, kvRun(t, "", addr, "get", "-base64", "foo"), "YmFy\n")
	mustOK(t, kvRun(t, "", addr, "get", "-stale", "/foo"), "bar\n")

	p := get(t, c, "flagged")
	want := fmt.Sprintf("CreateIndex      %d\nFlags            42\nKey              flagged\nLockIndex        0\nModifyIndex      %d\nSession          -\nValue            v\n",
		p.CreateIndex, p.ModifyIndex)
	mustOK(t, kvRun(t, "", addr, "get", "-detailed", "flagged"), want)

	mustFail(t, kvRun(t, "", addr, "get", "nope"), "Error! No key exists at: nope")
	mustFail(t, kvRun(t, "", addr, "get"), "Error! Missing KEY argument")
	mustFail(t, kvRun(t, "", addr, "put"), "Error! Missing KEY argument")
	mustFail(t, kvRun(t, "", addr, "put", "k", "@"+filepath.Join(t.TempDir(), "missing")), "Failed to read file")
	mustFail(t, kvRun(t, "", addr, "put", "-base64", "k", "!!"), "Cannot base 64 decode")
}

func TestGetRecurseAndKeys(t *testing.T) {
	a, _ := clitest.Agent(t)
	addr := a.HTTPAddr
	for _, kv := range [][2]string{{"app/a", "1"}, {"app/b/c", "2"}, {"app/b/d", "3"}, {"other", "4"}} {
		mustOK(t, kvRun(t, "", addr, "put", kv[0], kv[1]), "Success! Data written to: "+kv[0]+"\n")
	}
	mustOK(t, kvRun(t, "", addr, "get", "-recurse", "app"), "app/a:1\napp/b/c:2\napp/b/d:3\n")
	mustOK(t, kvRun(t, "", addr, "get", "-recurse"), "app/a:1\napp/b/c:2\napp/b/d:3\nother:4\n")
	mustOK(t, kvRun(t, "", addr, "get", "-recurse", "none/"), "")
	mustOK(t, kvRun(t, "", addr, "get", "-keys", "app/"), "app/a\napp/b/\n")
	mustOK(t, kvRun(t, "", addr, "get", "-keys"), "app/\nother\n")
	mustOK(t, kvRun(t, "", addr, "get", "-keys", "-separator", "", "app/"), "app/a\napp/b/c\napp/b/d\n")
	mustOK(t, kvRun(t, "", addr, "get", "-keys", "none/"), "")

	r := kvRun(t, "", addr, "get", "-recurse", "-detailed", "app/b")
	blocks := strings.Split(r.Stdout, "\n\n")
	if r.Code != 0 || len(blocks) != 2 || !strings.Contains(blocks[0], "Key              app/b/c\n") ||
		!strings.Contains(blocks[1], "Value            3\n") {
		t.Errorf("-recurse -detailed: %+v", r)
	}
	mustFail(t, kvRun(t, "", addr, "get", "-keys", "-recurse"), "Cannot specify both")
}

func TestPutCAS(t *testing.T) {
	a, c := clitest.Agent(t)
	addr := a.HTTPAddr
	mustOK(t, kvRun(t, "", addr, "put", "-cas", "k", "v1"), "Success! Data written to: k\n") // index 0: create only
	mustFail(t, kvRun(t, "", addr, "put", "-cas", "k", "v2"), "Error! Did not write to k: CAS failed")
	idx := get(t, c, "k").ModifyIndex
	mustFail(t, kvRun(t, "", addr, "put", "-cas", "-modify-index", fmt.Sprint(idx+100), "k", "v2"), "Error! Did not write to k: CAS failed")
	if r := kvRun(t, "", addr, "put", "-cas", "-modify-index", fmt.Sprint(idx+100), "k", "v2"); r.Stderr != "Error! Did not write to k: CAS failed\n" {
		t.Errorf("CAS failure message = %q", r.Stderr)
	}
	mustOK(t, kvRun(t, "", addr, "put", "-cas", "-modify-index", fmt.Sprint(idx), "k", "v2"), "Success! Data written to: k\n")
	if p := get(t, c, "k"); string(p.Value) != "v2" {
		t.Errorf("k = %q, want v2", p.Value)
	}
	mustFail(t, kvRun(t, "", addr, "put", "-modify-index", "3", "k", "v"), "Cannot specify -modify-index without -cas")
}

func TestPutAcquireRelease(t *testing.T) {
	a, c := clitest.Agent(t)
	addr := a.HTTPAddr
	s1, _, err := c.Session().Create(&api.SessionEntry{Name: "one"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, err := c.Session().Create(&api.SessionEntry{Name: "two"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, kvRun(t, "", addr, "put", "-acquire", "-session", s1, "l", "held"), "Success! Lock acquired on: l\n")
	if p := get(t, c, "l"); p.Session != s1 || string(p.Value) != "held" {
		t.Errorf("after acquire: %+v", p)
	}
	mustFail(t, kvRun(t, "", addr, "put", "-acquire", "-session", s2, "l"), "Error! Did not acquire lock")
	mustFail(t, kvRun(t, "", addr, "put", "-release", "-session", s2, "l"), "Error! Did not release lock")
	mustOK(t, kvRun(t, "", addr, "put", "-release", "-session", s1, "l", "free"), "Success! Lock released on: l\n")
	if p := get(t, c, "l"); p.Session != "" {
		t.Errorf("after release: session %q", p.Session)
	}
	r := kvRun(t, "", addr, "get", "-detailed", "l")
	if !regexp.MustCompile(`(?m)^LockIndex +1$`).MatchString(r.Stdout) {
		t.Errorf("-detailed after a lock: %q", r.Stdout)
	}
	mustFail(t, kvRun(t, "", addr, "put", "-acquire", "l"), "Missing -session")
	mustFail(t, kvRun(t, "", addr, "put", "-acquire", "-release", "-session", s1, "l"), "Cannot specify both -acquire and -release")
}

func TestDelete(t *testing.T) {
	a, c := clitest.Agent(t)
	addr := a.HTTPAddr
	for _, k := range []string{"a", "t/1", "t/2", "tx"} {
		mustOK(t, kvRun(t, "", addr, "put", k, "v"), "Success! Data written to: "+k+"\n")
	}
	mustOK(t, kvRun(t, "", addr, "delete", "a"), "Success! Deleted key: a\n")
	if get(t, c, "a") != nil {
		t.Error("a still exists")
	}
	mustOK(t, kvRun(t, "", addr, "delete", "-recurse", "t/"), "Success! Deleted keys with prefix: t/\n")
	if keys, _, _ := c.KV().Keys("", "", nil); len(keys) != 1 || keys[0] != "tx" {
		t.Errorf("keys after recursive delete = %v, want [tx]", keys)
	}
	idx := get(t, c, "tx").ModifyIndex
	mustFail(t, kvRun(t, "", addr, "delete", "-cas", "-modify-index", fmt.Sprint(idx+1), "tx"), "Error! Did not delete key tx: CAS failed")
	mustOK(t, kvRun(t, "", addr, "delete", "-cas", "-modify-index", fmt.Sprint(idx), "tx"), "Success! Deleted key: tx\n")
	if get(t, c, "tx") != nil {
		t.Error("tx still exists")
	}
	mustFail(t, kvRun(t, "", addr, "delete"), "Error! Missing KEY argument")
	mustFail(t, kvRun(t, "", addr, "delete", "-cas", "x"), "Must specify -modify-index with -cas")
	mustFail(t, kvRun(t, "", addr, "delete", "-cas", "-modify-index", "1", "-recurse", "x"), "Cannot specify both -cas and -recurse")
}

func TestExportImportRoundTrip(t *testing.T) {
	src, srcC := clitest.Agent(t)
	dst, dstC := clitest.Agent(t)
	binary := []byte{0, 1, 2, 0xff, '\n'}
	for _, p := range []*api.KVPair{
		{Key: "cfg/a", Value: []byte("alpha")},
		{Key: "cfg/b/c", Value: binary, Flags: 7},
		{Key: "cfg/empty"},
		{Key: "other", Value: []byte("not exported")},
	} {
		if _, err := srcC.KV().Put(p, nil); err != nil {
			t.Fatal(err)
		}
	}
	exp := kvRun(t, "", src.HTTPAddr, "export", "cfg/")
	if exp.Code != 0 {
		t.Fatalf("export: %+v", exp)
	}
	want := "[\n\t{\n\t\t\"key\": \"cfg/a\",\n\t\t\"flags\": 0,\n\t\t\"value\": \"YWxwaGE=\"\n\t},\n" +
		"\t{\n\t\t\"key\": \"cfg/b/c\",\n\t\t\"flags\": 7,\n\t\t\"value\": \"AAEC/wo=\"\n\t},\n" +
		"\t{\n\t\t\"key\": \"cfg/empty\",\n\t\t\"flags\": 0,\n\t\t\"value\": \"\"\n\t}\n]\n"
	if exp.Stdout != want {
		t.Errorf("export =\n%s\nwant\n%s", exp.Stdout, want)
	}

	// Through stdin into a fresh agent, then compare the exports.
	imp := kvRun(t, exp.Stdout, dst.HTTPAddr, "import", "-")
	mustOK(t, imp, "Imported: cfg/a\nImported: cfg/b/c\nImported: cfg/empty\n")
	if again := kvRun(t, "", dst.HTTPAddr, "export"); again.Stdout != exp.Stdout {
		t.Errorf("export after import =\n%s\nwant\n%s", again.Stdout, exp.Stdout)
	}
	if p := get(t, dstC, "cfg/b/c"); p == nil || !bytes.Equal(p.Value, binary) || p.Flags != 7 {
		t.Errorf("cfg/b/c after import = %+v", p)
	}

	// From a file, with no argument (stdin), inline, and with -prefix.
	file := filepath.Join(t.TempDir(), "kv.json")
	if err := os.WriteFile(file, []byte(exp.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, kvRun(t, "", dst.HTTPAddr, "import", "-prefix", "copy/", "@"+file), "Imported: copy/cfg/a\nImported: copy/cfg/b/c\nImported: copy/cfg/empty\n")
	mustOK(t, kvRun(t, `[{"key":"s","flags":0,"value":"eA=="}]`, dst.HTTPAddr, "import"), "Imported: s\n")
	mustOK(t, kvRun(t, "", dst.HTTPAddr, "import", `[{"key":"inline","flags":1,"value":"eQ=="}]`), "Imported: inline\n")
	if p := get(t, dstC, "inline"); string(p.Value) != "y" || p.Flags != 1 {
		t.Errorf("inline = %+v", p)
	}

	var entries []map[string]any
	if err := json.Unmarshal([]byte(kvRun(t, "", dst.HTTPAddr, "export", "nothing/").Stdout), &entries); err != nil || len(entries) != 0 {
		t.Errorf("empty export: %v %v, want []", entries, err)
	}
	mustFail(t, kvRun(t, "not json", dst.HTTPAddr, "import"), "Cannot unmarshal data")
	mustFail(t, kvRun(t, `[{"key":"bad","value":"%%%"}]`, dst.HTTPAddr, "import"), "Error base 64 decoding value for key bad")
	if get(t, dstC, "bad") != nil {
		t.Error("a rejected import wrote a key")
	}
}

func TestUsageAndUnreachable(t *testing.T) {
	cmd := Command(strings.NewReader(""))
	if r := clitest.Run(t, cmd); r.Code != 1 || !strings.Contains(r.Stderr, "Usage: trellis kv <subcommand>") {
		t.Errorf("no verb: %+v", r)
	}
	if r := clitest.Run(t, cmd, "get", "-h"); r.Code != 0 || !strings.Contains(r.Stdout, "Usage: trellis kv get") {
		t.Errorf("get -h: %+v", r)
	}
	dead := clitest.DeadAddr(t)
	for _, args := range [][]string{{"get", "k"}, {"put", "k", "v"}, {"delete", "k"}, {"export"}, {"import", "[]"}} {
		r := kvRun(t, "", dead, args[0], args[1:]...)
		if args[0] == "import" {
			// Nothing to write: the agent is never asked.
			mustOK(t, r, "")
			continue
		}
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, "Error querying agent: ") || !strings.Contains(r.Stderr, dead) {
			t.Errorf("%v against a dead agent: %+v", args, r)
		}
	}
}
