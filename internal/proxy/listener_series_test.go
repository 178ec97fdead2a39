package proxy

import (
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// A listener an Apply removes takes its series with it, so that a proxy
// whose upstreams come and go does not export them all forever.
func TestRemovedListenerSeries(t *testing.T) {
	ca := newCA(t, td)
	db := newEcho(t)
	snap := snapshot("web", ca.leaf(t, td, "web"), []string{ca.root.CertPEM}, db.port())
	snap.Upstreams = []proxycfg.Upstream{upstream("db", db.ln.Addr())}
	gone := upstreamName(snap.Upstreams[0])
	p := newProxy(t, configOf(t, snap))
	series := func(listener string) []string {
		t.Helper()
		mfs, err := p.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if hasLabel(m, "listener", listener) {
					have = append(have, mf.GetName())
				}
			}
		}
		return have
	}
	if len(series(gone)) == 0 {
		t.Fatalf("no series for listener %s before its removal", gone)
	}
	snap.Upstreams = nil
	if err := p.Apply(configOf(t, snap)); err != nil {
		t.Fatal(err)
	}
	if have := series(gone); len(have) > 0 {
		t.Errorf("series left for a removed listener: %v", have)
	}
	if len(series(publicName())) == 0 {
		t.Error("the remaining listener lost its series")
	}
}
