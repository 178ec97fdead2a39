package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serve carries one accepted connection: TLS and RBAC if the listener
// has them, then to an endpoint of its cluster.
func (p *Proxy) serve(spec *listenerSpec, c net.Conn) {
	down := c
	var ids []string
	if spec.tls != nil {
		tc := tls.Server(c, p.serverTLS(spec.tls))
		c.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			spec.m.tlsErrors.Inc()
			p.log.Debug("proxy: inbound handshake failed", "listener", spec.name, "remote", c.RemoteAddr(), "err", err)
			return
		}
		c.SetDeadline(time.Time{})
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			for _, u := range certs[0].URIs {
				ids = append(ids, u.String())
			}
		}
		down = tc
	}
	for _, e := range spec.rbac {
		if !e.allowed(ids) {
			spec.m.denied.Inc()
			p.log.Debug("proxy: connection denied by RBAC", "listener", spec.name, "peer", ids)
			return
		}
	}
	st := p.cur.Load()
	cl := st.clusters[spec.cluster]
	if cl == nil {
		return // cannot happen: a Config's listeners name its clusters
	}
	up, raw, err := p.dial(st, cl)
	if err != nil {
		if !errors.Is(err, errClosed) {
			cl.connectErrors.Inc()
		}
		p.log.Debug("proxy: upstream connect failed", "listener", spec.name, "cluster", cl.name, "err", err)
		return
	}
	defer p.untrack(raw)
	pipe(down, up, spec.idle, spec.m.rx, spec.m.tx)
}

// serverTLS is the listener's TLS configuration; the certificate and
// roots are read from the current state at every handshake, so that
// rotated secrets apply to the next connection. Session tickets are off:
// every connection is verified against the current roots.
func (p *Proxy) serverTLS(d *downstreamTLS) *tls.Config {
	return &tls.Config{
		MinVersion:             d.minVersion,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			st := p.cur.Load()
			cert, roots := st.certs[d.certSecret], st.roots[d.rootsSecret]
			if cert == nil || roots == nil {
				return nil, errors.New("proxy: secrets gone") // a newer Config moved on
			}
			auth := tls.VerifyClientCertIfGiven
			if d.requireClientCert {
				auth = tls.RequireAndVerifyClientCert
			}
			return &tls.Config{
				MinVersion:             d.minVersion,
				SessionTicketsDisabled: true,
				Certificates:           []tls.Certificate{*cert},
				ClientAuth:             auth,
				ClientCAs:              roots,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return nil // only when not required
					}
					return matchSAN(cs.PeerCertificates[0], d.san)
				},
			}, nil
		},
	}
}

// matchSAN checks that one of leaf's URI SANs matches one of san (all
// pass when there are none, as in Envoy).
func matchSAN(leaf *x509.Certificate, san []stringMatcher) error {
	if len(san) == 0 {
		return nil
	}
	for _, u := range leaf.URIs {
		for _, m := range san {
			if m(u.String()) {
				return nil
			}
		}
	}
	return fmt.Errorf("proxy: peer certificate URI SANs %v match no allowed SAN", leaf.URIs)
}

// clientTLS presents the leaf and verifies the upstream's chain against
// the roots and its URI SAN against the cluster's matchers; the SNI is
// the cluster's and says nothing of the certificate's names (Trellis
// leaves carry the SPIFFE ID, not the SNI), hence the custom check.
func clientTLS(st *state, u *upstreamTLS) (*tls.Config, error) {
	cert, roots := st.certs[u.certSecret], st.roots[u.rootsSecret]
	if cert == nil || roots == nil {
		return nil, errors.New("secrets gone")
	}
	return &tls.Config{
		MinVersion:         u.minVersion,
		ServerName:         u.sni,
		Certificates:       []tls.Certificate{*cert},
		InsecureSkipVerify: true, // verified by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("proxy: upstream sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("proxy: upstream certificate: %w", err)
			}
			return matchSAN(cs.PeerCertificates[0], u.san)
		},
	}, nil
}

// dial connects to the cluster's next endpoint (round robin), with TLS if
// the cluster has it, within its connect timeout. Close cancels it. The
// TCP connection under the one returned is raw, tracked.
func (p *Proxy) dial(st *state, cl *cluster) (conn, raw net.Conn, err error) {
	if len(cl.endpoints) == 0 {
		return nil, nil, errors.New("no healthy endpoint")
	}
	addr := cl.endpoints[(cl.next.Add(1)-1)%uint64(len(cl.endpoints))]
	ctx, cancel := context.WithTimeout(context.Background(), cl.connectTimeout)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	p.wg.Go(func() {
		select {
		case <-p.done:
			cancel()
		case <-stop:
		}
	})
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if !p.track(c) {
		return nil, nil, errClosed
	}
	if cl.tls == nil {
		return c, c, nil
	}
	cfg, err := clientTLS(st, cl.tls)
	if err != nil {
		p.untrack(c)
		return nil, nil, err
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		p.untrack(c)
		return nil, nil, fmt.Errorf("%s: %w", addr, err)
	}
	return tc, c, nil
}

var errClosed = errors.New("proxy closed")

// pipe copies both ways until both directions ended, passing on
// half-closes, and closes both. idle > 0 closes both after that long
// with no bytes either way. rx counts the bytes from a, tx those to a.
func pipe(a, b net.Conn, idle time.Duration, rx, tx prometheus.Counter) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var once sync.Once
	closeBoth := func() { once.Do(func() { a.Close(); b.Close() }) }
	var wg sync.WaitGroup
	wg.Go(func() { copyHalf(b, a, idle, &last, closeBoth, rx) })
	copyHalf(a, b, idle, &last, closeBoth, tx)
	wg.Wait()
	closeBoth()
}

func copyHalf(dst, src net.Conn, idle time.Duration, last *atomic.Int64, closeBoth func(), bytes prometheus.Counter) {
	buf := make([]byte, 32<<10)
	for {
		if idle > 0 {
			src.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			bytes.Add(float64(n))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				closeBoth()
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			if cw, ok := dst.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
				closeBoth()
			}
			return
		case idle > 0 && isTimeout(err):
			if time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction is busy
			}
			closeBoth()
			return
		default:
			closeBoth()
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
