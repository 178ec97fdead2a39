package balance

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// HashString is the hash Envoy's hash policies give a value (a header,
// cookie or query parameter): XXH64 with seed 0.
func HashString(s string) uint64 { return xxhash.Sum64String(s) }

// Hasher combines the hashes of a route's hash policies the way Envoy
// does: each new hash is XORed into the running one rotated left by one
// bit, so that two identical policies do not cancel out. The zero value
// holds no hash.
type Hasher struct {
	sum uint64
	ok  bool
}

// Add folds in the hash of one policy that yielded one.
func (h *Hasher) Add(v uint64) {
	if h.ok {
		v ^= bits.RotateLeft64(h.sum, 1)
	}
	h.sum, h.ok = v, true
}

// Sum is the combined hash, and whether any policy yielded one (if not,
// use Pick rather than PickHash).
func (h *Hasher) Sum() (uint64, bool) { return h.sum, h.ok }

// byAddress is the indices of addrs in address order: the hash tables are
// built in that order so that they depend on the set of hosts, not on the
// order EDS lists them in.
func byAddress(addrs []string) []int {
	order := make([]int, len(addrs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(addrs[a], addrs[b]) })
	return order
}

// buildRing is Envoy's ketama ring: the scale is chosen so that the
// lightest host gets a whole number of points and the ring has at least
// lo points, capped at hi; each host gets scale×(its share of the weight)
// points (running sums carry the fractions), point k of a host hashing
// "<address>_<k>" with XXH64. Points are sorted by hash.
func buildRing(addrs []string, weights []uint32, lo, hi uint64) (hashes []uint64, hosts []uint32) {
	var sum float64
	minW := uint32(math.MaxUint32)
	for _, w := range weights {
		sum += float64(w)
		minW = min(minW, w)
	}
	minNorm := float64(minW) / sum
	scale := min(math.Ceil(minNorm*float64(lo))/minNorm, float64(hi))
	size := uint64(math.Ceil(scale))

	type point struct {
		hash uint64
		host uint32
	}
	points := make([]point, 0, size)
	var current, target float64
	buf := make([]byte, 0, 64)
	for _, i := range byAddress(addrs) {
		target += scale * float64(weights[i]) / sum
		for k := uint64(0); current < target; k++ {
			buf = append(buf[:0], addrs[i]...)
			buf = append(buf, '_')
			buf = strconv.AppendUint(buf, k, 10)
			points = append(points, point{xxhash.Sum64(buf), uint32(i)})
			current++
		}
	}
	slices.SortFunc(points, func(a, b point) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return cmp.Compare(a.host, b.host)
	})
	hashes = make([]uint64, len(points))
	hosts = make([]uint32, len(points))
	for i, p := range points {
		hashes[i], hosts[i] = p.hash, p.host
	}
	return hashes, hosts
}

// ringIndex is the first point at or after hash, wrapping around.
func (t *table) ringIndex(hash uint64) int {
	lo, hi := 0, len(t.ringHash)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.ringHash[m] >= hash {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo == len(t.ringHash) {
		return 0
	}
	return lo
}

// pickRing takes the host of the first point at or after hash; if it
// cannot be used, the next points' hosts, as if it were not on the ring
// (which is where its keys go when Envoy rebuilds the ring without it).
func (t *table) pickRing(hash uint64, exclude func(*Host) bool) *Host {
	n := len(t.ringHash)
	i := t.ringIndex(hash)
	for a := range min(fastAttempts, n) {
		if h := t.hosts[t.ringHost[(i+a)%n]]; usable(h, exclude) {
			return h
		}
	}
	exclude, ok := t.settle(exclude)
	if !ok {
		return nil
	}
	for a := range n {
		if h := t.hosts[t.ringHost[(i+a)%n]]; usable(h, exclude) {
			return h
		}
	}
	return t.first(exclude)
}

// buildMaglev is Envoy's weighted Maglev table of size m (a prime): host
// j's preference list is offset_j + k·skip_j (mod m), offset the XXH64 of
// its address mod m and skip its XXH64 with seed 1 mod (m-1), plus 1.
// Hosts take turns claiming their next free preferred slot, a host of
// weight w taking a turn in w of every max-weight rounds.
func buildMaglev(addrs []string, weights []uint32, m uint64) ([]uint32, error) {
	if uint64(len(addrs)) > m {
		return nil, fmt.Errorf("maglev: %d hosts exceed the table size %d", len(addrs), m)
	}
	type entry struct {
		host                 uint32
		offset, skip, next   uint64
		weight, targetWeight uint64
	}
	var maxW uint64
	entries := make([]entry, 0, len(addrs))
	seeded := xxhash.NewWithSeed(1)
	for _, i := range byAddress(addrs) {
		seeded.ResetWithSeed(1)
		seeded.WriteString(addrs[i])
		entries = append(entries, entry{
			host:   uint32(i),
			offset: xxhash.Sum64String(addrs[i]) % m,
			skip:   seeded.Sum64()%(m-1) + 1,
			weight: uint64(weights[i]),
		})
		maxW = max(maxW, uint64(weights[i]))
	}
	const empty = math.MaxUint32
	tab := make([]uint32, m)
	for i := range tab {
		tab[i] = empty
	}
	filled := uint64(0)
	for round := uint64(1); filled < m; round++ {
		for j := range entries {
			if filled == m {
				break
			}
			e := &entries[j]
			if round*e.weight < e.targetWeight {
				continue
			}
			e.targetWeight += maxW
			c := (e.offset + e.skip*e.next) % m
			for tab[c] != empty {
				e.next++
				c = (e.offset + e.skip*e.next) % m
			}
			tab[c] = e.host
			e.next++
			filled++
		}
	}
	return tab, nil
}

// pickMaglev takes the host of slot hash mod size; if it cannot be used,
// the hash is mixed again (as Envoy re-hashes for a retry's next attempt)
// a few times, and then the slots after the first are walked.
func (t *table) pickMaglev(hash uint64, exclude func(*Host) bool) *Host {
	m := uint64(len(t.maglev))
	for a := range uint64(fastAttempts) {
		h := hash
		if a > 0 {
			h = mix(hash + a*0x9e3779b97f4a7c15)
		}
		if host := t.hosts[t.maglev[h%m]]; usable(host, exclude) {
			return host
		}
	}
	exclude, ok := t.settle(exclude)
	if !ok {
		return nil
	}
	s := hash % m
	for a := range m {
		if h := t.hosts[t.maglev[(s+a)%m]]; usable(h, exclude) {
			return h
		}
	}
	return t.first(exclude)
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
