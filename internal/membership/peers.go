package membership

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
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

// writePeers records the addresses of the members other than this one
// that may come back: alive, leaving or failed, not left.
func (p *Pool) writePeers() error {
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
	return os.Rename(tmp, p.peersPath)
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
			err = p.writePeers()
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

// rejoinPeers joins the members a previous run recorded, as serf's own
// snapshot rejoin does, in case that snapshot lost them.
func (p *Pool) rejoinPeers(addrs []string) {
	defer p.wg.Done()
	if len(addrs) == 0 {
		return
	}
	if n, err := p.Join(addrs); n == 0 && !errors.Is(err, ErrShutdown) {
		p.logger.Warn("membership: rejoining the members of the last run failed", "peers", addrs, "err", err)
	} else if n > 0 {
		p.logger.Info(fmt.Sprintf("membership: rejoined %d of the last run's members", n))
	}
}
