package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// clusterReport is everything one cluster run measured.
type clusterReport struct {
	started time.Time
	opts    *clusterOptions
	names   []string // the members', in order
	ips     []string
	// formed is from starting the first server to a leader that every
	// server names and that accepts a write.
	formed        time.Duration
	firstLeader   string
	idle, afterKV []memStatus // per member, before and after the PUT phases
	dataAfterKV   []int64     // per member, bytes in its data dir after the PUT phases
	put           *clusterPhase
	leaderPut     *clusterPhase // nil when skipped
	get           *clusterPhase
	afterPut      *clusterPhase // nil when skipped
	failovers     []failoverRound
	failoverErr   error // why the failover phase stopped short, if it did
	logs          []logSummary
}

// clusterCPU is the CPU time of each server, of this process and of the
// whole machine.
type clusterCPU struct {
	servers       []time.Duration
	self, machine time.Duration
}

func readClusterCPU(ms []*member) (clusterCPU, error) {
	var c clusterCPU
	for _, m := range ms {
		d, err := procCPU(m.pid())
		if err != nil {
			return clusterCPU{}, fmt.Errorf("%s: %w", m.name, err)
		}
		c.servers = append(c.servers, d)
	}
	var err error
	if c.self, err = selfCPU(); err != nil {
		return clusterCPU{}, err
	}
	if c.machine, err = machineBusy(); err != nil {
		return clusterCPU{}, err
	}
	return c, nil
}

func (c clusterCPU) sub(d clusterCPU) clusterCPU {
	out := clusterCPU{self: c.self - d.self, machine: c.machine - d.machine}
	for i := range c.servers {
		out.servers = append(out.servers, c.servers[i]-d.servers[i])
	}
	return out
}

func (c clusterCPU) serversTotal() time.Duration {
	var t time.Duration
	for _, d := range c.servers {
		t += d
	}
	return t
}

// other is the CPU time of processes other than the servers and this one.
func (c clusterCPU) other() time.Duration { return max(0, c.machine-c.serversTotal()-c.self) }

// clusterPhase is a timed phase whose workers each aim at one server.
type clusterPhase struct {
	name    string
	res     *result
	leader  string
	servers []serverStats // in member order
	cpu     clusterCPU
}

// serverStats is what the workers aimed at one server saw.
type serverStats struct {
	name    string
	leader  bool
	workers int
	errs    int
	lat     []time.Duration // sorted
}

// runPhase drives op with each worker aimed at target(w) and gathers the
// figures by server. The leader must not change during the phase.
func runPhase(ctx context.Context, c *cluster, leader *member, name string, workers, ops int,
	target func(w int) *member, op func(ctx context.Context, m *member, i int) error) (*clusterPhase, error) {
	before, err := readClusterCPU(c.members)
	if err != nil {
		return nil, err
	}
	res := drive(ctx, workers, ops, 0, func(ctx context.Context, w, i int) error {
		return op(ctx, target(w), i)
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: interrupted: %w", name, err)
	}
	after, err := readClusterCPU(c.members)
	if err != nil {
		return nil, err
	}
	res.name = name
	p := &clusterPhase{name: name, res: res, leader: leader.name, cpu: after.sub(before)}
	for _, m := range c.members {
		s := serverStats{name: m.name, leader: m == leader}
		for w := range workers {
			if target(w) == m {
				s.workers++
				s.errs += res.errsByWorker[w]
				s.lat = append(s.lat, res.byWorker[w]...)
			}
		}
		slices.Sort(s.lat)
		p.servers = append(p.servers, s)
	}
	return p, res.check(name)
}

// measureCluster starts the cluster, runs every phase in order and stops
// it, removing what it wrote unless -dir named the directory.
func measureCluster(ctx context.Context, o *clusterOptions, logw io.Writer) (rep *clusterReport, err error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, "load cluster: "+format+"\n", args...)
	}
	rep = &clusterReport{started: time.Now(), opts: o}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "trellis-bench-cluster"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	c, err := newCluster(o, dir)
	if err != nil {
		return nil, err
	}
	defer c.close()
	for _, m := range c.members {
		rep.names, rep.ips = append(rep.names, m.name), append(rep.ips, m.ip)
		logf("%s on %s: HTTP %d, serf %d, server %d", m.name, m.ip, m.httpPort, m.serfPort, m.rpcPort)
	}
	// A failure leaves the servers' logs as the clue.
	defer func() {
		if err == nil || ctx.Err() != nil {
			return
		}
		for _, m := range c.members {
			if _, serr := os.Stat(m.log); serr == nil {
				logf("last lines of %s's log:\n%s", m.name, tail(m.log, 15))
			}
		}
	}()

	launched := time.Now()
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	leader, err := c.waitLeader(ctx)
	if err != nil {
		return nil, fmt.Errorf("no leader: %w", err)
	}
	rep.formed, rep.firstLeader = time.Since(launched), leader.name
	logf("leader %s, serving writes %v after launch", leader.name, rep.formed.Round(time.Millisecond))

	readAll := func() ([]memStatus, error) {
		if err := sleepCtx(ctx, o.settle); err != nil {
			return nil, err
		}
		var out []memStatus
		for _, m := range c.members {
			ms, err := readMem(m.pid())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			out = append(out, ms)
		}
		return out, nil
	}
	if rep.idle, err = readAll(); err != nil {
		return nil, err
	}

	value := bytes.Repeat([]byte("trellis-"), o.valueSize/8+1)[:o.valueSize]
	put := func(ctx context.Context, m *member, i int) error {
		_, _, err := m.cl.do(ctx, http.MethodPut, kvKey(i, o.kvKeys), value, false)
		return err
	}
	spread := func(w int) *member { return c.members[w%len(c.members)] }

	logf("kv: %d PUTs of %d-byte values over %d keys, %d workers spread over %d servers",
		o.putOps, o.valueSize, o.kvKeys, o.workers, len(c.members))
	if rep.put, err = runPhase(ctx, c, leader, "kv put, all servers", o.workers, o.putOps, spread, put); err != nil {
		return nil, err
	}
	if o.leaderOps > 0 {
		logf("kv: %d PUTs to the leader only", o.leaderOps)
		if rep.leaderPut, err = runPhase(ctx, c, leader, "kv put, leader only", o.workers, o.leaderOps,
			func(int) *member { return leader }, put); err != nil {
			return nil, err
		}
	}
	if rep.afterKV, err = readAll(); err != nil {
		return nil, err
	}
	for _, m := range c.members {
		n, err := dirSize(m.dir)
		if err != nil {
			return nil, err
		}
		rep.dataAfterKV = append(rep.dataAfterKV, n)
	}

	logf("kv: %d ?consistent GETs spread over the servers", o.getOps)
	get := func(ctx context.Context, m *member, i int) error {
		_, _, err := m.cl.do(ctx, http.MethodGet, kvKey(i, o.kvKeys)+"?consistent", nil, false)
		return err
	}
	if rep.get, err = runPhase(ctx, c, leader, "kv get ?consistent, all servers", o.workers, o.getOps, spread, get); err != nil {
		return nil, err
	}
	// A phase whose leader changed measured an election too: say so.
	if now, err := c.waitLeader(ctx); err != nil {
		return nil, err
	} else if now != leader {
		return nil, fmt.Errorf("leadership moved from %s to %s during the KV phases; the figures mix in an election", leader.name, now.name)
	}

	for round := 1; round <= o.failovers; round++ {
		fr, next, err := failover(ctx, c, leader, round, o.failoverWait)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rep.failoverErr = fmt.Errorf("round %d: %w", round, err)
			logf("failover %v; stopping the failover phase", rep.failoverErr)
			break
		}
		rep.failovers = append(rep.failovers, fr)
		logf("failover %d: killed %s; %s leads, writes served after %v (elected %v, through every survivor %v); %s listening in %v, caught up in %v%s",
			round, fr.killed, fr.next, fr.served.Round(time.Millisecond), fr.elected.Round(time.Millisecond),
			fr.allServed.Round(time.Millisecond), fr.killed, fr.listening.Round(time.Millisecond), fr.rejoin.Round(time.Millisecond), fr.rejoinNote())
		leader = next
	}
	if o.afterOps > 0 && rep.failoverErr == nil {
		// Writes after the churn: the killed servers have restarted from
		// their data dirs and the followers forward over new connections.
		// Compare with the first phase to see anything the rounds left behind.
		if leader, err = c.waitLeader(ctx); err != nil {
			return nil, err
		}
		logf("kv: %d PUTs spread over the servers after the failovers; leader %s", o.afterOps, leader.name)
		if rep.afterPut, err = runPhase(ctx, c, leader, "kv put, all servers, after failovers", o.workers, o.afterOps, spread, put); err != nil {
			return nil, err
		}
	}
	c.close()
	for _, m := range c.members {
		rep.logs = append(rep.logs, summarizeLog(m.name, m.log))
	}
	return rep, nil
}

// dirSize adds up the sizes of the files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	return n, err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// failoverRound is one kill -9 of the leader.
type failoverRound struct {
	killed, next string
	via          string         // the survivor whose PUT succeeded first
	elected      time.Duration  // kill → a survivor names a new leader
	served       time.Duration  // kill → a PUT through a survivor succeeds
	allServed    time.Duration  // kill → a PUT through every survivor has succeeded; 0 if one never did
	rejoin       time.Duration  // restart → the killed server has caught up
	listening    time.Duration  // restart → the killed server prints its HTTP address
	errs         int            // failed PUTs before each survivor's first success
	errKinds     map[string]int // their errors, by shortErr
	// leaderAfter is the leader once the killed server has rejoined; it
	// differs from next when the rejoin caused an election.
	leaderAfter string
}

func (f failoverRound) rejoinNote() string {
	if f.leaderAfter != f.next {
		return fmt.Sprintf(" (leadership moved to %s on rejoin)", f.leaderAfter)
	}
	return ""
}

// failover kills the leader with SIGKILL and times, from just before the
// signal, until a survivor names a new leader and until a PUT through
// each survivor succeeds (the new leader serves its own; the other
// forwards); each survivor is probed every 10 ms. It then restarts the
// killed server on the same data dir and ports and waits until it has
// caught up. It returns the round and the leader after it.
func failover(ctx context.Context, c *cluster, leader *member, round int, timeout time.Duration) (failoverRound, *member, error) {
	fr := failoverRound{killed: leader.name, errKinds: map[string]int{}}
	var survivors []*member
	for _, m := range c.members {
		if m != leader && m.running() {
			survivors = append(survivors, m)
		}
	}
	const every = 10 * time.Millisecond
	var (
		mu        sync.Mutex
		electedAt time.Time                 // guarded by mu
		servedAt  = map[*member]time.Time{} // guarded by mu
	)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stopElect := make(chan struct{})
	var wg, writers sync.WaitGroup
	t0 := time.Now()
	leader.kill()
	for _, s := range survivors {
		wg.Go(func() {
			for pctx.Err() == nil {
				select {
				case <-stopElect:
					return
				default:
				}
				l, err := s.leaderOf(pctx)
				if err == nil && l != "" && l != leader.raftAddr() {
					now := time.Now()
					mu.Lock()
					if electedAt.IsZero() || now.Before(electedAt) {
						electedAt = now
					}
					mu.Unlock()
					return
				}
				_ = sleepCtx(pctx, every)
			}
		})
		writers.Go(func() {
			for pctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(pctx, 2*time.Second)
				_, _, err := s.cl.do(rctx, http.MethodPut, "/v1/kv/bench/failover/probe", []byte(s.name), false)
				rcancel()
				now := time.Now()
				mu.Lock()
				if err == nil {
					servedAt[s] = now
					mu.Unlock()
					return
				}
				if pctx.Err() == nil {
					fr.errs++
					fr.errKinds[shortErr(err)]++
				}
				mu.Unlock()
				_ = sleepCtx(pctx, every)
			}
		})
	}
	writers.Wait()
	close(stopElect)
	cancel()
	wg.Wait()
	var first, last time.Time
	for _, s := range survivors {
		at, ok := servedAt[s]
		if !ok {
			continue
		}
		if first.IsZero() || at.Before(first) {
			first, fr.via = at, s.name
		}
		if at.After(last) {
			last = at
		}
	}
	if first.IsZero() {
		err := fmt.Errorf("no PUT through %d survivors succeeded within %v of killing %s (errors: %v)", len(survivors), timeout, leader.name, fr.errKinds)
		// Put the cluster back together, so what follows can stop it cleanly.
		_ = leader.start(ctx, c)
		return fr, nil, err
	}
	fr.served = first.Sub(t0)
	if len(servedAt) == len(survivors) {
		fr.allServed = last.Sub(t0)
	}
	fr.elected = fr.served
	if !electedAt.IsZero() && electedAt.Before(first) {
		fr.elected = electedAt.Sub(t0)
	}
	next, err := c.waitLeader(ctx)
	if err != nil {
		return fr, nil, fmt.Errorf("after killing %s: %w", leader.name, err)
	}
	fr.next = next.name

	t1 := time.Now()
	if err := leader.start(ctx, c); err != nil {
		return fr, nil, fmt.Errorf("restarting %s: %w", leader.name, err)
	}
	fr.listening = time.Since(t1)
	after, err := c.waitCaughtUp(ctx, leader, round)
	if err != nil {
		return fr, nil, fmt.Errorf("%s rejoining: %w", leader.name, err)
	}
	fr.rejoin, fr.leaderAfter = time.Since(t1), after.name
	return fr, after, nil
}
