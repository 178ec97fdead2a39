package proxy

import (
	"io"
	"testing"
)

// A connection to a TLS listener that closes before sending a byte (the
// agent's TCP check "Connect Sidecar Listening", every 10 s) is no TLS
// error; one that sends something else than TLS is. The first used to
// count in trellis_proxy_tls_errors_total.
func TestEmptyConnectionIsNoTLSError(t *testing.T) {
	authority := newCA(t, td)
	for _, protocol := range []string{"tcp", "http"} {
		t.Run(protocol, func(t *testing.T) {
			snap := snapshot("db", authority.leaf(t, td, "db"), []string{authority.root.CertPEM}, newEcho(t).port())
			snap.Protocol = protocol
			snap.DefaultAllow = true
			p := newProxy(t, configOf(t, snap))
			pub := addr(t, p, publicName())

			dialTCP(t, pub).Close()
			waitMetric(t, p, 1, "trellis_proxy_tls_empty_connections_total", "listener", publicName())
			waitMetric(t, p, 0, "trellis_proxy_connections_active", "listener", publicName())
			if n := metric(t, p, "trellis_proxy_tls_errors_total"); n != 0 {
				t.Errorf("tls errors = %v after an empty connection, want 0", n)
			}

			c := dialTCP(t, pub)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: db\r\n\r\n")
			io.Copy(io.Discard, c) // until the proxy closes it
			c.Close()
			waitMetric(t, p, 1, "trellis_proxy_tls_errors_total", "listener", publicName())
			if n := metric(t, p, "trellis_proxy_tls_empty_connections_total"); n != 1 {
				t.Errorf("empty connections = %v, want 1", n)
			}
		})
	}
}
