// Package lincheck records concurrent histories of KV operations over the
// HTTP API and checks them for linearizability with porcupine. Cluster
// tests run a Recorder while they kill, restart and partition servers.
package lincheck

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/consul/api"
)

// Input is one operation on one key: put, get (a consistent read), or cas
// (a compare-and-set by value, done as a read then a CAS on the index that
// read returned).
type Input struct {
	Op       string
	Key      string
	Value    string // put, cas: the new value
	Expected string // cas: the value the read saw
}

// Output is what an operation returned.
type Output struct {
	Value string // get: the value read ("" if missing)
	OK    bool   // cas: whether it took effect
}

// Model is one register per key, partitioned by key.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in, out, cur := input.(Input), output.(Output), state.(string)
		switch in.Op {
		case "put":
			return true, in.Value
		case "get":
			return out.Value == cur, cur
		default: // cas
			if !out.OK {
				// A failed CAS changes nothing. It may fail even when the
				// value matches (another write of the same value moved
				// the index), so failure is always allowed.
				return true, cur
			}
			return cur == in.Expected, in.Value
		}
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(Input), output.(Output)
		switch in.Op {
		case "put":
			return fmt.Sprintf("put(%s, %q)", in.Key, in.Value)
		case "get":
			return fmt.Sprintf("get(%s) -> %q", in.Key, out.Value)
		}
		return fmt.Sprintf("cas(%s, %q -> %q) -> %v", in.Key, in.Expected, in.Value, out.OK)
	},
}

// NotApplied reports whether a write's error proves it was never applied:
// the server could not be reached, or raft refused it for want of a
// leader. Anything else (a lost leadership, a cut connection, a timeout)
// leaves the outcome unknown.
func NotApplied(err error) bool {
	msg := err.Error()
	for _, sure := range []string{"connection refused", "Error while dialing", "No cluster leader"} {
		if strings.Contains(msg, sure) {
			return true
		}
	}
	return false
}

// Recorder runs clients that put, get and CAS a few keys and records what
// they saw.
type Recorder struct {
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	history []porcupine.Operation // guarded by mu
	unknown []porcupine.Operation // guarded by mu: writes with no answer
}

// Keys are the keys the clients use. More keys keep each key's history
// short, which is what the checker's cost grows with.
var Keys = []string{"lin/a", "lin/b", "lin/c", "lin/d", "lin/e", "lin/f"}

// Start runs n clients until Stop. Before each operation a client calls
// pick, which returns the API client of a server to use, or nil to skip
// this turn (say, the server it chose is down).
func Start(n int, pick func(rng *rand.Rand) *api.Client) *Recorder {
	r := &Recorder{start: time.Now(), stop: make(chan struct{})}
	for client := range n {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.run(client, pick)
		}()
	}
	return r
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *Recorder) record(op porcupine.Operation) {
	r.mu.Lock()
	r.history = append(r.history, op)
	r.mu.Unlock()
}

func (r *Recorder) recordUnknown(op porcupine.Operation) {
	r.mu.Lock()
	r.unknown = append(r.unknown, op)
	r.mu.Unlock()
}

func (r *Recorder) run(client int, pick func(rng *rand.Rand) *api.Client) {
	rng := rand.New(rand.NewPCG(uint64(client), 7))
	for i := 0; i < 50000; i++ { // bounded; Stop ends it much sooner
		select {
		case <-r.stop:
			return
		default:
		}
		c := pick(rng)
		if c == nil {
			// Nothing to talk to this turn; don't spin.
			select {
			case <-r.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		kv := c.KV()
		key := Keys[rng.IntN(len(Keys))]
		switch n := rng.IntN(10); {
		case n < 4:
			val := fmt.Sprintf("c%d-%d", client, i)
			call := r.now()
			_, err := kv.Put(&api.KVPair{Key: key, Value: []byte(val)}, nil)
			op := porcupine.Operation{ClientId: client, Input: Input{Op: "put", Key: key, Value: val}, Call: call, Output: Output{}, Return: r.now()}
			switch {
			case err == nil:
				r.record(op)
			case !NotApplied(err):
				r.recordUnknown(op) // decided after the run
			}
		case n < 8:
			call := r.now()
			p, _, err := kv.Get(key, &api.QueryOptions{RequireConsistent: true})
			ret := r.now()
			if err != nil {
				continue // a failed read constrains nothing
			}
			v := ""
			if p != nil {
				v = string(p.Value)
			}
			r.record(porcupine.Operation{ClientId: client, Input: Input{Op: "get", Key: key}, Call: call, Output: Output{Value: v}, Return: ret})
		default:
			// The read and the CAS form one operation, from the read's
			// call to the CAS's return.
			call := r.now()
			p, _, err := kv.Get(key, &api.QueryOptions{RequireConsistent: true})
			if err != nil {
				continue
			}
			expected, idx := "", uint64(0)
			if p != nil {
				expected, idx = string(p.Value), p.ModifyIndex
			}
			val := fmt.Sprintf("c%d-%d-cas", client, i)
			in := Input{Op: "cas", Key: key, Value: val, Expected: expected}
			ok, _, err := kv.CAS(&api.KVPair{Key: key, Value: []byte(val), ModifyIndex: idx}, nil)
			switch {
			case err == nil:
				r.record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: Output{OK: ok}, Return: r.now()})
			case NotApplied(err):
				r.record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: Output{OK: false}, Return: r.now()})
			default:
				// Unknown outcome: decided after the run, from whether
				// anyone saw its (unique) value.
				r.recordUnknown(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: Output{OK: true}, Return: math.MaxInt64})
			}
		}
	}
}

// Count returns how many operations have a known outcome so far.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.history)
}

// Stop ends the clients and waits for them.
func (r *Recorder) Stop() {
	close(r.stop)
	r.wg.Wait()
}

// Check decides whether the recorded history (after Stop) is
// linearizable, and reports how many operations it checked and how many of
// them had an unknown outcome.
//
// A write whose answer was lost is kept only if its (unique) value was
// ever seen: then it happened, at some time after its call (its return is
// left open). One never seen may be dropped: had it applied unseen,
// placing it after every later operation would explain the history just
// as well, so dropping it hides no violation, and it keeps the checker's
// search small.
func (r *Recorder) Check(timeout time.Duration) (res porcupine.CheckResult, ops, pending int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, op := range r.history {
		seen[op.Output.(Output).Value] = true
		seen[op.Input.(Input).Expected] = true
	}
	history := append([]porcupine.Operation(nil), r.history...)
	for _, op := range r.unknown {
		in := op.Input.(Input)
		if !seen[in.Value] {
			continue
		}
		op.Return = math.MaxInt64
		if in.Op == "cas" {
			op.Output = Output{OK: true}
		}
		history = append(history, op)
	}
	for _, op := range history {
		if op.Return == math.MaxInt64 {
			pending++
		}
	}
	return porcupine.CheckOperationsTimeout(Model, history, timeout), len(history), pending
}
