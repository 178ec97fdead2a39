package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTP/1.1 upgrades (RFC 9110 7.8), WebSocket's handshake among them,
// as Envoy's upgrade_configs enable them: a request with Connection:
// upgrade and an Upgrade whose protocol the HTTP connection manager
// lists goes upstream with both fields, and a 101 answer turns the two
// connections into a tunnel that carries bytes both ways, half-closes
// passed on, until both ends are done (pipe, as tcp_proxy). An upgrade
// the listener does not list is refused with 403, as Envoy does; an
// h2c upgrade is dropped and the request served as HTTP/1.1, as Envoy's
// HTTP/1 codec does. The route's RBAC and routing apply to the upgrade
// request as to any other. Upgrades need HTTP/1.1 on both sides: from a
// downstream HTTP/1.1 connection to a cluster that speaks only
// HTTP/1.1 (an http service's, as the generator makes them).

// upgradeProtocol is the protocol r asks to upgrade to, its Upgrade
// field as it is ("websocket"); "" if r asks for none. As Envoy, the
// whole field is the protocol: a list of several matches no
// upgrade_type, so it is refused.
func upgradeProtocol(r *http.Request) string {
	up := r.Header["Upgrade"]
	if len(up) == 0 || r.ProtoMajor != 1 || r.ProtoMinor < 1 || !headerHasToken(r.Header["Connection"], "upgrade") {
		return ""
	}
	if len(up) > 1 {
		return strings.Join(up, ", ") // listed nowhere
	}
	return strings.TrimSpace(up[0])
}

// upgradeAllowed says whether hs lets requests upgrade to proto.
func (hs *httpSpec) upgradeAllowed(proto string) bool {
	for _, t := range hs.upgrades {
		if asciiEqualFold(t, proto) {
			return true
		}
	}
	return false
}

// tunneler is the downstream side of an upgrade: the HTTP/1.1 loop's
// response writer.
type tunneler interface {
	// tunnel sends the 101 response with the writer's header and hands
	// over the connection, with what the client sent ahead; the loop
	// closes it after the handler returns and serves it no more.
	tunnel() (net.Conn, error)
}

// tunnel sends a 101 answer to an upgrade downstream, and carries bytes
// both ways until both ends are done.
func (x *exchange) tunnel(resp *http.Response, asked string) outcome {
	up, ok := resp.Body.(net.Conn)
	tun, ok2 := x.w.(tunneler)
	if !ok || !ok2 {
		return outcome{failure: failReset} // forward checked both
	}
	if got := resp.Header["Upgrade"]; len(got) != 1 || !asciiEqualFold(strings.TrimSpace(got[0]), asked) {
		// Only the protocol the listener allows, and the client asked
		// for, may go through.
		up.Close()
		x.localReply(http.StatusBadGateway, "upstream switched to a protocol not asked for", -1)
		return outcome{failure: failReset}
	}
	x.stopTimers() // the request is over; the tunnel has its own idle timeout
	h := x.w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	upgrade := resp.Header["Upgrade"]
	removeHopHeaders(h, false)
	h["Connection"] = []string{"Upgrade"}
	if len(upgrade) > 0 {
		h["Upgrade"] = upgrade
	}
	applyMutations(x.rt.respHeaders, h, x.r)
	x.spec.m.responses.inc(http.StatusSwitchingProtocols)
	x.spec.m.upgradesTunneled.Inc()
	down, err := tun.tunnel()
	if err != nil {
		up.Close()
		return outcome{failure: failReset}
	}
	idle := x.hs.streamIdle
	if x.rt.hasIdle {
		idle = x.rt.idle
	}
	// The HTTP listener counts its bytes on the wire already.
	pipe(down, up, idle, uncounted, uncounted)
	return outcome{status: http.StatusSwitchingProtocols}
}

// uncounted takes the counts of bytes counted elsewhere.
var uncounted = prometheus.NewCounter(prometheus.CounterOpts{Name: "uncounted"})

// tunnel implements tunneler.
func (w *downResponse) tunnel() (net.Conn, error) {
	c := w.c
	w.disableContinue()
	w.wroteHeader, w.committed, w.status = true, true, http.StatusSwitchingProtocols
	w.tunneled = true
	c.contMu.Lock()
	c.writeStatusLine(true, http.StatusSwitchingProtocols)
	c.writeFields(w.header, fieldContentLength|fieldTransferEncoding, nil)
	c.bw.WriteString("\r\n")
	err := c.bw.Flush()
	c.contMu.Unlock()
	if err != nil {
		return nil, err
	}
	// From here on the connection is the tunnel's: no watch reads it.
	c.wmu.Lock()
	c.armable = false
	c.stopWatchLocked()
	// What the client sent ahead: first what the reader holds, then
	// the byte the watch read from the connection after it.
	var ahead []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		ahead = append(ahead, b...)
		c.br.Discard(n)
	}
	if c.hasByte {
		ahead = append(ahead, c.byteBuf[0])
		c.hasByte = false
	}
	rerr := c.rerr
	c.wmu.Unlock()
	tc := &tunnelConn{Conn: c.rwc, ahead: ahead, rerr: rerr}
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		tc.cw = cw
	} else if cw, ok := c.hc.Conn.(interface{ CloseWrite() error }); ok {
		tc.cw = cw
	}
	return tc, nil
}

// tunnelConn is one end of a tunnel: a connection, read first for the
// bytes already read from it (ahead), or the end already met (rerr).
type tunnelConn struct {
	net.Conn
	ahead []byte
	rerr  error
	cw    interface{ CloseWrite() error }
	br    *bufio.Reader // the upstream side: its response reader
}

func (t *tunnelConn) Read(p []byte) (int, error) {
	if len(t.ahead) > 0 {
		n := copy(p, t.ahead)
		t.ahead = t.ahead[n:]
		return n, nil
	}
	if t.rerr != nil {
		return 0, t.rerr
	}
	if t.br != nil {
		if t.br.Buffered() > 0 {
			return t.br.Read(p)
		}
		t.br = nil
	}
	return t.Conn.Read(p)
}

// CloseWrite passes a half-close on.
func (t *tunnelConn) CloseWrite() error {
	if t.cw == nil {
		return errors.ErrUnsupported
	}
	return t.cw.CloseWrite()
}

// upgraded is the body of a 101 response from the HTTP/1.1 client: the
// connection itself, no longer the pool's, read first for what br holds.
func (pc *h1Conn) upgraded(br *bufio.Reader) io.ReadCloser {
	tc := &tunnelConn{Conn: pc.conn, br: br}
	if cw, ok := pc.conn.(interface{ CloseWrite() error }); ok {
		tc.cw = cw
	}
	return tc
}
