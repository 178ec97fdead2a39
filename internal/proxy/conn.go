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

// serve carries one accepted tcp_proxy connection: TLS and RBAC if the
// listener has them, then to a host of its cluster.
func (p *Proxy) serve(spec *listenerSpec, c net.Conn) {
	down, ids, ok := p.admit(spec, c)
	if !ok {
		return
	}
	st := p.cur.Load()
	cl := st.clusters[spec.cluster]
	if cl == nil {
		return // a newer Config removed the cluster: as Envoy, no route
	}
	h := cl.picker.pick(pickRequest{})
	if h == nil {
		p.log.Debug("proxy: no healthy upstream", "listener", spec.name, "cluster", cl.name, "peer", ids)
		return
	}
	if !cl.guard.admitConnection(h) {
		cl.m.overflowConnections.Inc()
		return
	}
	g := cl.guard
	g.attemptStarted(h)
	up, raw, err := p.connect(context.Background(), st, h.addr, cl.connectTimeout, cl.tls, func() { g.connectionClosed(h) })
	if err != nil {
		g.attemptEnded(h, outcome{failure: failConnect})
		if !errors.Is(err, errClosed) {
			cl.m.connectErrors.Inc()
		}
		p.log.Debug("proxy: upstream connect failed", "listener", spec.name, "cluster", cl.name, "err", err)
		return
	}
	defer p.untrack(raw)
	pipe(down, up, spec.idle, spec.m.rx, spec.m.tx)
	g.attemptEnded(h, outcome{})
}

// admit runs a new connection's TLS handshake, if the listener has TLS,
// and its network RBAC. It returns the connection to read and write (c,
// or TLS over it) and the peer's URI SANs.
func (p *Proxy) admit(spec *listenerSpec, c net.Conn) (down net.Conn, ids []string, ok bool) {
	down = c
	if spec.tls != nil {
		var hello bool
		tc := tls.Server(c, p.serverTLS(spec.tls, &hello))
		c.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			if silent(err, hello) {
				// A TCP health check (the agent's "Connect Sidecar
				// Listening") connects and closes: no TLS was tried.
				spec.m.tlsEmpty.Inc()
				return nil, nil, false
			}
			spec.m.tlsErrors.Inc()
			p.log.Debug("proxy: inbound handshake failed", "listener", spec.name, "remote", c.RemoteAddr(), "err", err)
			return nil, nil, false
		}
		c.SetDeadline(time.Time{})
		ids = peerIDs(tc)
		down = tc
	}
	for _, e := range spec.rbac {
		if !e.allowed(ids, nil) {
			spec.m.denied.Inc()
			p.log.Debug("proxy: connection denied by RBAC", "listener", spec.name, "peer", ids)
			return nil, nil, false
		}
	}
	return down, ids, true
}

// silent reports whether a failed handshake ended because the peer
// closed the connection before sending any byte: crypto/tls reports a
// clean EOF only at a record boundary, and hello says whether a
// ClientHello (the first record) was read, so an EOF without one means
// nothing was sent (short of a ClientHello split into several records
// and cut after one, which no TLS client sends).
func silent(err error, hello bool) bool {
	return !hello && errors.Is(err, io.EOF)
}

// peerIDs are the URI SANs of tc's verified peer certificate.
func peerIDs(tc *tls.Conn) []string {
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(certs[0].URIs))
	for _, u := range certs[0].URIs {
		ids = append(ids, u.String())
	}
	return ids
}

// serverTLS is the listener's TLS configuration for one connection; the
// certificate and roots are read from the current state at every
// handshake, so that rotated secrets apply to the next connection.
// Session tickets are off: every connection is verified against the
// current roots. *hello is set once the client's ClientHello was read.
func (p *Proxy) serverTLS(d *downstreamTLS, hello *bool) *tls.Config {
	return &tls.Config{
		MinVersion:             d.minVersion,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			*hello = true
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
				NextProtos:             d.alpn,
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
		NextProtos:         u.alpn,
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

// pipeBufs are the copy buffers of tcp_proxy connections, shared so
// that a connection's end hands its buffers to the next one rather than
// to the GC. 16 KiB is a TLS record's payload: a read from the mTLS side
// never returns more.
var pipeBufs = sync.Pool{New: func() any {
	b := make([]byte, 16<<10)
	return &b
}}

func copyHalf(dst, src net.Conn, idle time.Duration, last *atomic.Int64, closeBoth func(), bytes prometheus.Counter) {
	bufp := pipeBufs.Get().(*[]byte)
	defer pipeBufs.Put(bufp)
	buf := *bufp
	// src's read deadline is moved on by the reads only once an eighth
	// of idle has passed since it was set, rather than on each read (a
	// timer update each time); one that fires early is set again to the
	// last activity either way plus idle.
	var deadline time.Time
	if idle > 0 {
		deadline = time.Now().Add(idle)
		src.SetReadDeadline(deadline)
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			last.Store(now.UnixNano())
			if idle > 0 && deadline.Sub(now) < idle-idle/8 {
				deadline = now.Add(idle)
				src.SetReadDeadline(deadline)
			}
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
			if l := time.Unix(0, last.Load()); time.Since(l) < idle {
				// Set early, or the other direction is busy.
				deadline = l.Add(idle)
				src.SetReadDeadline(deadline)
				continue
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
