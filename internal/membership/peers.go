package membership

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Serf's snapshot buffers what it writes and flushes it only with a later
// line, at least half a second on: in a quiet pool the last members to
// join can stay in memory indefinitely, and a crash (kill -9, power loss)
// loses them, so that the restarted agent knows no one to rejoin. The pool
// therefore also keeps the addresses of the members it knows in a small
// file of its own, "<snapshot>.peers", rewritten (atomically, synced)
// within peersWriteInterval of each change, and rejoins them at start.

// peersWriteInterval bounds how often the peers file is rewritten.
const peersWriteInterval = time.Second

// peersPath is the peers file kept next to a serf snapshot.
func peersPath(snapshot string) string { return snapshot + ".peers" }

// readPeers returns the addresses in a peers file: none if it is missing.
func readPeers(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if _, _, err := net.SplitHostPort(line); err == nil {
			out = append(out, line)
		}
	}
	return out, nil
}

// writePeersLocked records the addresses of the members other than this
// one that may come back: alive, leaving or failed, not left. peersMu must
// be held, so that a Leave that removed the file stays final.
func (p *Pool) writePeersLocked() error {
	var addrs []string
	for _, m := range p.Members() {
		if m.Name == p.name || m.Status == StatusLeft || m.Status == StatusNone {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port))))
	}
	slices.Sort(addrs)
	tmp := p.peersPath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strings.Join(addrs, "\n") + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p.peersPath); err != nil {
		return err
	}
	// The rename is durable once the directory is.
	dir, err := os.Open(filepath.Dir(p.peersPath))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// markPeersDirty asks for the peers file to be rewritten.
func (p *Pool) markPeersDirty() {
	if p.peersPath == "" {
		return
	}
	select {
	case p.peersDirty <- struct{}{}:
	default:
	}
}

// persistPeers rewrites the peers file after changes, at most once per
// peersWriteInterval, until the pool stops.
func (p *Pool) persistPeers() {
	defer p.wg.Done()
	for {
		select {
		case <-p.peersDirty:
		case <-p.stop:
			return
		}
		p.peersMu.Lock()
		var err error
		if !p.leaving.Load() { // else Leave removed the file: keep it gone
			err = p.writePeersLocked()
		}
		p.peersMu.Unlock()
		if err != nil {
			p.logger.Warn("membership: writing the peers file", "path", p.peersPath, "err", err)
		}
		select {
		case <-time.After(peersWriteInterval):
		case <-p.stop:
			return
		}
	}
}

// rejoinPeers joins the members a previous run recorded, in case serf's
// own snapshot lost them: in random order, one at a time, until one
// answers (a join learns the whole pool from that one), as serf's rejoin
// does. Nothing is done when serf's rejoin already found someone.
func (p *Pool) rejoinPeers(addrs []string) {
	defer p.wg.Done()
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	for _, addr := range addrs {
		select {
		case <-p.stop:
			return
		default:
		}
		if len(p.serf.Members()) > 1 {
			return // serf rejoined from its snapshot, or someone joined us
		}
		n, err := p.Join([]string{addr})
		if n > 0 {
			p.logger.Info("membership: rejoined the pool through a member of the last run", "peer", addr)
			return
		}
		if errors.Is(err, ErrShutdown) {
			return
		}
		p.logger.Debug("membership: rejoin attempt failed", "peer", addr, "err", err)
	}
	if len(addrs) > 0 {
		p.logger.Warn("membership: could not rejoin any member of the last run", "peers", len(addrs))
	}
}
