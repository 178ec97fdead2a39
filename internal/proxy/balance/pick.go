package balance

import (
	"container/heap"
	"math/bits"
)

// table is what picking reads: built by Update, never changed after, and
// swapped whole, so a pick is a lock-free read of it.
type table struct {
	cfg     Config
	hosts   []*Host  // endpoint order
	weights []uint32 // by host index
	equal   bool     // all weights equal

	total uint64 // sum of weights

	// RANDOM, LEAST_REQUEST: Walker's alias table, nil if weights are
	// equal. Column i is host i if a draw in [0, total) is below prob[i],
	// else host alias[i].
	prob  []uint64
	alias []uint32

	sched []uint32 // ROUND_ROBIN: host indices in order, nil if equal

	choices int // LEAST_REQUEST

	ringHash []uint64 // RING_HASH: sorted point hashes
	ringHost []uint32 // RING_HASH: the host of each point

	maglev []uint32 // MAGLEV: host index by slot
}

// fastAttempts is how many candidates a pick tries before it makes sure a
// usable host exists at all and searches exhaustively.
const fastAttempts = 4

// maxSchedule bounds a weighted round-robin cycle (4 bytes an entry);
// weights whose sum is larger are scaled down to fit, see buildSchedule.
const maxSchedule = 1 << 16

// buildTable builds the picking state for addrs. The index structures of
// prev (nil at first) are shared when the policy, its parameters and the
// weighted hosts are the same, so that an Apply that does not touch a
// cluster does not rebuild its Maglev table or ring.
func buildTable(cfg *Config, addrs []string, weights []uint32, prev *table) (*table, error) {
	t := &table{cfg: *cfg, hosts: make([]*Host, len(addrs)), weights: weights, equal: true}
	t.choices = cfg.choiceCount()
	for _, w := range weights {
		t.total += uint64(w)
		if w != weights[0] {
			t.equal = false
		}
	}
	if len(addrs) == 0 {
		return t, nil
	}
	if prev.sameIndex(cfg, addrs, weights) {
		t.prob, t.alias, t.sched = prev.prob, prev.alias, prev.sched
		t.ringHash, t.ringHost, t.maglev = prev.ringHash, prev.ringHost, prev.maglev
		return t, nil
	}
	switch cfg.Policy {
	case RoundRobin:
		if !t.equal {
			t.sched = buildSchedule(weights)
		}
	case Random, LeastRequest:
		if !t.equal {
			t.prob, t.alias = buildAlias(weights, t.total)
		}
	case RingHash:
		lo, hi := cfg.ringBounds()
		t.ringHash, t.ringHost = buildRing(addrs, weights, lo, hi)
	case Maglev:
		tab, err := buildMaglev(addrs, weights, MaglevTableSize)
		if err != nil {
			return nil, err
		}
		t.maglev = tab
	}
	return t, nil
}

// sameIndex reports whether t's index structures serve cfg over addrs
// and weights.
func (t *table) sameIndex(cfg *Config, addrs []string, weights []uint32) bool {
	if t == nil || t.cfg.Policy != cfg.Policy || len(t.hosts) != len(addrs) {
		return false
	}
	if lo, hi := t.cfg.ringBounds(); cfg.Policy == RingHash {
		if lo2, hi2 := cfg.ringBounds(); lo != lo2 || hi != hi2 {
			return false
		}
	}
	for i, h := range t.hosts {
		if h.addr != addrs[i] || t.weights[i] != weights[i] {
			return false
		}
	}
	return true
}

// Pick chooses a host for a request that has no hash (every policy; the
// hash policies then use a random hash, as Envoy does when no hash policy
// yields one). exclude, if not nil, names hosts to avoid (those a retry
// already tried); it is best-effort: if it excludes every host not
// ejected, it is ignored. Ejected hosts are never picked. Pick returns
// nil when every host is ejected or there are none.
func (c *Cluster) Pick(exclude func(*Host) bool) *Host {
	t := c.cur.Load()
	if t.cfg.Policy.hashed() {
		return t.pickHash(c.rand(), exclude)
	}
	return c.pick(t, exclude)
}

// PickHash is Pick for a request whose hash policies yielded hash: the
// hash policies place it by hash, the others ignore it.
func (c *Cluster) PickHash(hash uint64, exclude func(*Host) bool) *Host {
	t := c.cur.Load()
	if t.cfg.Policy.hashed() {
		return t.pickHash(hash, exclude)
	}
	return c.pick(t, exclude)
}

func (c *Cluster) pick(t *table, exclude func(*Host) bool) *Host {
	if len(t.hosts) == 0 {
		return nil
	}
	switch t.cfg.Policy {
	case RoundRobin:
		return c.pickRoundRobin(t, exclude)
	case LeastRequest:
		return c.pickLeastRequest(t, exclude)
	default:
		return c.pickRandom(t, exclude)
	}
}

func (t *table) pickHash(hash uint64, exclude func(*Host) bool) *Host {
	if len(t.hosts) == 0 {
		return nil
	}
	if t.cfg.Policy == RingHash {
		return t.pickRing(hash, exclude)
	}
	return t.pickMaglev(hash, exclude)
}

func usable(h *Host, exclude func(*Host) bool) bool {
	return !h.ejected.Load() && (exclude == nil || !exclude(h))
}

// settle is the slow path's check that some host is usable: it returns
// the exclusion to honour (nil if it excludes every host not ejected)
// and false if every host is ejected.
func (t *table) settle(exclude func(*Host) bool) (func(*Host) bool, bool) {
	up := false
	for _, h := range t.hosts {
		if h.ejected.Load() {
			continue
		}
		if exclude == nil || !exclude(h) {
			return exclude, true
		}
		up = true
	}
	return nil, up
}

// first is the last resort when hosts were ejected while a pick searched.
func (t *table) first(exclude func(*Host) bool) *Host {
	for _, h := range t.hosts {
		if usable(h, exclude) {
			return h
		}
	}
	return nil
}

// pickRoundRobin takes the next slot of the cycle. A slot whose host
// cannot be used is consumed and the next one taken, so the other hosts
// keep their relative shares exactly (a b c with b ejected goes a c a c).
func (c *Cluster) pickRoundRobin(t *table, exclude func(*Host) bool) *Host {
	for range fastAttempts {
		if h := t.rrAt(c.rr.Add(1) - 1); usable(h, exclude) {
			return h
		}
	}
	exclude, ok := t.settle(exclude)
	if !ok {
		return nil
	}
	n := len(t.hosts)
	if t.sched != nil {
		n = len(t.sched)
	}
	for range n {
		if h := t.rrAt(c.rr.Add(1) - 1); usable(h, exclude) {
			return h
		}
	}
	return t.first(exclude)
}

func (t *table) rrAt(i uint64) *Host {
	if t.sched == nil {
		return t.hosts[i%uint64(len(t.hosts))]
	}
	return t.hosts[t.sched[i%uint64(len(t.sched))]]
}

// draw is a host index drawn at random in proportion to weight, in
// constant time.
func (t *table) draw(rand func() uint64) int {
	i, _ := bits.Mul64(rand(), uint64(len(t.hosts))) // uniform in [0, n)
	if t.prob == nil {
		return int(i)
	}
	if x, _ := bits.Mul64(rand(), t.total); x < t.prob[i] {
		return int(i)
	}
	return int(t.alias[i])
}

// buildAlias is Vose's alias method in integers, so the odds are exact:
// every column holds total units, host i's weight counting n·w_i of them.
func buildAlias(weights []uint32, total uint64) (prob []uint64, alias []uint32) {
	n := uint64(len(weights))
	prob = make([]uint64, n)
	alias = make([]uint32, n)
	units := make([]uint64, n)
	var small, large []uint32
	for i, w := range weights {
		units[i] = uint64(w) * n
		if units[i] < total {
			small = append(small, uint32(i))
		} else {
			large = append(large, uint32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small, large = small[:len(small)-1], large[:len(large)-1]
		prob[s], alias[s] = units[s], l
		units[l] -= total - units[s]
		if units[l] < total {
			small = append(small, l)
		} else {
			large = append(large, l)
		}
	}
	// What is left fills its own column (exactly total units).
	for _, i := range append(small, large...) {
		prob[i], alias[i] = total, i
	}
	return prob, alias
}

// pickRandom draws hosts in proportion to weight until one is usable,
// then, rarely, draws among the usable ones only.
func (c *Cluster) pickRandom(t *table, exclude func(*Host) bool) *Host {
	for range fastAttempts {
		if h := t.hosts[t.draw(c.rand)]; usable(h, exclude) {
			return h
		}
	}
	exclude, ok := t.settle(exclude)
	if !ok {
		return nil
	}
	var total uint64
	for i, h := range t.hosts {
		if usable(h, exclude) {
			total += uint64(t.weights[i])
		}
	}
	if total == 0 {
		return nil
	}
	x, _ := bits.Mul64(c.rand(), total)
	for i, h := range t.hosts {
		if !usable(h, exclude) {
			continue
		}
		if w := uint64(t.weights[i]); x < w {
			return h
		} else {
			x -= w
		}
	}
	return t.first(exclude)
}

// pickLeastRequest is Envoy's power of N choices: N hosts drawn at random
// (in proportion to weight when weights differ), the one with the fewest
// requests in flight per unit of weight wins, ties going to the first
// drawn. With equal weights this is exactly Envoy's choice; with unequal
// ones Envoy schedules by weight/(active+1), which a lock-free pick
// approximates: idle hosts are chosen in proportion to weight, and under
// load the choice steers towards active ∝ weight, as that formula does.
func (c *Cluster) pickLeastRequest(t *table, exclude func(*Host) bool) *Host {
	for range fastAttempts {
		best := -1
		for range t.choices {
			i := t.draw(c.rand)
			if !usable(t.hosts[i], exclude) {
				continue
			}
			if best < 0 || t.lighter(i, best) {
				best = i
			}
		}
		if best >= 0 {
			return t.hosts[best]
		}
	}
	exclude, ok := t.settle(exclude)
	if !ok {
		return nil
	}
	n := len(t.hosts)
	start, _ := bits.Mul64(c.rand(), uint64(n))
	best := -1
	for j := range n {
		i := (int(start) + j) % n
		if usable(t.hosts[i], exclude) && (best < 0 || t.lighter(i, best)) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	return t.hosts[best]
}

// lighter reports whether host i has fewer requests in flight per unit of
// weight than host j.
func (t *table) lighter(i, j int) bool {
	ai, aj := t.hosts[i].active.Load(), t.hosts[j].active.Load()
	if t.equal {
		return ai < aj
	}
	return ai*int64(t.weights[j]) < aj*int64(t.weights[i])
}

// buildSchedule is one cycle of weighted round robin: host i appears
// weights[i]/g times (g the weights' gcd), spread by earliest deadline
// first with deadlines (k-½)/w for the k-th turn of a host of weight w —
// the Sainte-Laguë order, which interleaves as smoothly as nginx's smooth
// weighted round robin — ties going to the host listed first. A cycle
// longer than maxSchedule has its weights scaled down to fit (each at
// least 1), which changes the shares by less than one slot in a
// maxSchedule-long cycle per host.
func buildSchedule(weights []uint32) []uint32 {
	g := uint64(0)
	for _, w := range weights {
		g = gcd(g, uint64(w))
	}
	ws := make([]uint64, len(weights))
	var total uint64
	for i, w := range weights {
		ws[i] = uint64(w) / g
		total += ws[i]
	}
	if total > maxSchedule && total > uint64(len(weights)) {
		scaled := uint64(0)
		for i := range ws {
			ws[i] = max(1, ws[i]*maxSchedule/total)
			scaled += ws[i]
		}
		total = scaled
	}
	q := make(edfQueue, len(ws))
	for i, w := range ws {
		q[i] = edfEntry{host: uint32(i), w: w, turn: 1}
	}
	heap.Init(&q)
	sched := make([]uint32, 0, total)
	for range total {
		e := &q[0]
		sched = append(sched, e.host)
		e.turn++
		heap.Fix(&q, 0)
	}
	return sched
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// edfEntry is a host's next turn in buildSchedule: due at (2·turn-1)/(2w).
type edfEntry struct {
	host uint32
	w    uint64
	turn uint64
}

type edfQueue []edfEntry

func (q edfQueue) Len() int { return len(q) }
func (q edfQueue) Less(a, b int) bool {
	// (2ta-1)/wa < (2tb-1)/wb, exactly, in integers.
	x := (2*q[a].turn - 1) * q[b].w
	y := (2*q[b].turn - 1) * q[a].w
	if x != y {
		return x < y
	}
	return q[a].host < q[b].host
}
func (q edfQueue) Swap(a, b int) { q[a], q[b] = q[b], q[a] }
func (q *edfQueue) Push(x any)   { *q = append(*q, x.(edfEntry)) }
func (q *edfQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
