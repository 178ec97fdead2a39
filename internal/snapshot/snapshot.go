// Package snapshot reads and writes the archive that `/v1/snapshot` and
// `trellis snapshot` move between clusters: a gzipped tar holding
// meta.json (the raft snapshot metadata), state.bin (the state store
// snapshot) and SHA256SUMS over both, the layout Consul documents for its
// snapshots. Reading verifies the checksums before anything is restored.
package snapshot

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

const (
	metaName  = "meta.json"
	stateName = "state.bin"
	sumsName  = "SHA256SUMS"
)

// Write archives a raft snapshot: its metadata and the state read from
// state, which must hold meta.Size bytes.
func Write(w io.Writer, meta *raft.SnapshotMeta, state io.Reader) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	now := time.Now()
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("snapshot: encode meta: %w", err)
	}
	metaSum := sha256.Sum256(metaJSON)
	if err := tw.WriteHeader(&tar.Header{Name: metaName, Mode: 0o600, Size: int64(len(metaJSON)), ModTime: now}); err != nil {
		return err
	}
	if _, err := tw.Write(metaJSON); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: stateName, Mode: 0o600, Size: meta.Size, ModTime: now}); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), state)
	if err != nil {
		return fmt.Errorf("snapshot: copy state: %w", err)
	}
	if n != meta.Size {
		return fmt.Errorf("snapshot: state is %d bytes, meta says %d", n, meta.Size)
	}
	sums := fmt.Sprintf("%x  %s\n%s  %s\n", metaSum, metaName, hex.EncodeToString(h.Sum(nil)), stateName)
	if err := tw.WriteHeader(&tar.Header{Name: sumsName, Mode: 0o600, Size: int64(len(sums)), ModTime: now}); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, sums); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// Archive is a verified snapshot read back from an archive. Its state is
// kept in a temporary file; Close removes it.
type Archive struct {
	Meta  raft.SnapshotMeta
	state *os.File
}

// State returns a reader over the state, from its start.
func (a *Archive) State() (io.Reader, error) {
	if _, err := a.state.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return bufio.NewReader(a.state), nil
}

// Close removes the temporary copy of the state.
func (a *Archive) Close() error {
	name := a.state.Name()
	err := a.state.Close()
	os.Remove(name)
	return err
}

// Read reads and verifies an archive: every file must be present once and
// match its checksum. Errors say what is wrong with the archive.
func Read(r io.Reader) (*Archive, error) {
	br := bufio.NewReader(r)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("snapshot: not a snapshot archive: %w", err)
	}
	defer gz.Close()
	gz.Multistream(false) // one gzip member, then nothing
	tmp, err := os.CreateTemp("", "trellis-snapshot-*.bin")
	if err != nil {
		return nil, err
	}
	a := &Archive{state: tmp}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	tr := tar.NewReader(gz)
	var metaJSON, sums []byte
	got := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot: reading archive: %w", err)
		}
		if _, dup := got[hdr.Name]; dup {
			return nil, fmt.Errorf("snapshot: archive holds %s twice", hdr.Name)
		}
		h := sha256.New()
		switch hdr.Name {
		case metaName:
			if metaJSON, err = io.ReadAll(io.TeeReader(io.LimitReader(tr, 1<<20), h)); err != nil {
				return nil, fmt.Errorf("snapshot: reading %s: %w", metaName, err)
			}
		case stateName:
			if _, err := io.Copy(io.MultiWriter(tmp, h), tr); err != nil {
				return nil, fmt.Errorf("snapshot: reading %s: %w", stateName, err)
			}
		case sumsName:
			if sums, err = io.ReadAll(io.LimitReader(tr, 1<<16)); err != nil {
				return nil, fmt.Errorf("snapshot: reading %s: %w", sumsName, err)
			}
			got[hdr.Name] = ""
			continue
		default:
			return nil, fmt.Errorf("snapshot: unexpected file %q in archive", hdr.Name)
		}
		got[hdr.Name] = hex.EncodeToString(h.Sum(nil))
	}
	// Read the gzip stream to its end, so that its CRC is checked, and
	// refuse anything after it.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, fmt.Errorf("snapshot: reading archive: %w", err)
	}
	if _, err := br.Peek(1); err != io.EOF {
		return nil, fmt.Errorf("snapshot: unexpected data after the archive")
	}
	for _, name := range []string{metaName, stateName, sumsName} {
		if _, ok := got[name]; !ok {
			return nil, fmt.Errorf("snapshot: archive has no %s", name)
		}
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, found := strings.Cut(line, "  ")
		if !found {
			return nil, fmt.Errorf("snapshot: malformed %s line %q", sumsName, line)
		}
		want[name] = sum
	}
	for _, name := range []string{metaName, stateName} {
		if want[name] != got[name] {
			return nil, fmt.Errorf("snapshot: checksum of %s does not match: the archive is damaged", name)
		}
	}
	if err := json.NewDecoder(bytes.NewReader(metaJSON)).Decode(&a.Meta); err != nil {
		return nil, fmt.Errorf("snapshot: decode %s: %w", metaName, err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != a.Meta.Size {
		return nil, fmt.Errorf("snapshot: state is %d bytes, meta says %d", st.Size(), a.Meta.Size)
	}
	ok = true
	return a, nil
}
