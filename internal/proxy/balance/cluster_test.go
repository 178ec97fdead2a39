package balance

import "testing"

func TestUpdateReusesUnchangedIndex(t *testing.T) {
	c := newCluster(t, withPolicy(Maglev), endpoints(3), Options{})
	first := &c.cur.Load().maglev[0]
	if err := c.Update(withPolicy(Maglev), endpoints(3)); err != nil {
		t.Fatal(err)
	}
	if &c.cur.Load().maglev[0] != first {
		t.Error("unchanged Maglev cluster: table rebuilt")
	}
	// A changed weight rebuilds it.
	if err := c.Update(withPolicy(Maglev), endpoints(3, 1, 1, 5)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range c.cur.Load().maglev {
		if h == 2 {
			n++
		}
	}
	if n < MaglevTableSize*5/7-10 || n > MaglevTableSize*5/7+10 {
		t.Errorf("weight 5 of 7 after Update: %d slots", n)
	}

	// Round robin: new weights take effect, the position carries over.
	c = newCluster(t, withPolicy(RoundRobin), endpoints(3), Options{})
	if got := sequence(c, 2); got != "ab" {
		t.Fatalf("got %s", got)
	}
	if err := c.Update(withPolicy(RoundRobin), endpoints(3)); err != nil {
		t.Fatal(err)
	}
	if got := sequence(c, 1); got != "c" {
		t.Errorf("after Update: got %s, want c (the position kept)", got)
	}
	if err := c.Update(withPolicy(RoundRobin), endpoints(2, 3, 1)); err != nil {
		t.Fatal(err)
	}
	if got := counts(400, func() *Host { return c.Pick(nil) }); got[addr(0)] != 300 {
		t.Errorf("weights 3:1 after Update: %v", got)
	}

	// Ring bounds are part of the index.
	cfg := withPolicy(RingHash)
	c = newCluster(t, cfg, endpoints(2), Options{})
	cfg.MinRingSize = 4096
	if err := c.Update(cfg, endpoints(2)); err != nil {
		t.Fatal(err)
	}
	if n := len(c.cur.Load().ringHash); n != 4096 {
		t.Errorf("minimum_ring_size 4096: ring of %d", n)
	}
}
