package snapshot

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
	snap "github.com/trellis-mesh/trellis/internal/snapshot"
)

const saveHelp = `
Usage: trellis snapshot save [options] FILE

  Retrieves an atomic, point-in-time snapshot of the state of the servers
  and saves it to FILE. The archive is written to a temporary file next to
  FILE, verified, and only then renamed to FILE: when saving fails, FILE
  is left as it was (absent, or its earlier content). A new FILE is
  readable by its owner only: a snapshot holds every key and token.

      $ trellis snapshot save backup.snap
      Saved and verified snapshot to index 8419

  With -stale any server may answer, not only the leader: useful when the
  cluster has lost its leader, at the risk of an out of date snapshot.
`

func save(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("snapshot save")
	h.Flags(fs)
	h.StaleFlag(fs)
	if code, ok := cliflags.Parse(fs, args, saveHelp, stdout, stderr); !ok {
		return code
	}
	file, ok := fileArg(fs, stderr)
	if !ok {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	// The agent is asked only once the temporary file exists, so that an
	// unwritable destination costs the servers no snapshot.
	var agentErr error
	meta, err := saveVerified(file, func() (io.ReadCloser, error) {
		body, _, err := client.Snapshot().Save(h.QueryOptions())
		agentErr = err
		return body, err
	})
	switch {
	case agentErr != nil:
		return cliflags.Report(stderr, "Error saving snapshot", agentErr)
	case err != nil:
		fmt.Fprintf(stderr, "Error saving snapshot to %s: %v\n", file, err)
		return 1
	}
	// The index is the one recorded in the archive just verified; the
	// agent sends the same in X-Consul-Index.
	fmt.Fprintf(stdout, "Saved and verified snapshot to index %d\n", meta.Index)
	return 0
}

// saveVerified writes the archive that fetch returns to a temporary file
// in path's directory, verifies it, and renames it to path. On error the
// temporary file is removed and whatever was at path is untouched.
func saveVerified(path string, fetch func() (io.ReadCloser, error)) (meta raft.SnapshotMeta, err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.unverified")
	if err != nil {
		return meta, fmt.Errorf("creating temporary file in %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	body, err := fetch()
	if err != nil {
		return meta, err
	}
	defer body.Close()
	if _, err := io.Copy(tmp, body); err != nil {
		return meta, fmt.Errorf("receiving snapshot: %w", err)
	}
	// Sync before the rename, so that a crash cannot leave FILE naming
	// an archive whose content never reached the disk.
	if err := tmp.Sync(); err != nil {
		return meta, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return meta, err
	}
	a, err := snap.Read(tmp)
	if err != nil {
		return meta, fmt.Errorf("verifying snapshot: %w", err)
	}
	meta = a.Meta
	a.Close()
	if err := tmp.Close(); err != nil {
		return meta, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return meta, err
	}
	syncDir(dir)
	return meta, nil
}

// syncDir makes a rename in dir durable where the platform allows it;
// failing that, the rename is still atomic, only perhaps not yet on disk.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}
