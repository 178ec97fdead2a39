//go:build unix

package proxy

import "syscall"

// initPeek readies the peek at pc's socket.
func (pc *h1Conn) initPeek() {
	var c any = pc.raw
	if tc, ok := c.(*trackedConn); ok {
		c = tc.Conn
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	pc.rc = rc
	pc.peekFn = pc.peek
}

// peerClosed reports whether the upstream has closed pc between two
// requests (idle, or handed from one to the next), or sent something on
// it (a TLS close_notify, an unasked response): either way, it can carry
// no request. The socket is peeked at, not read. Nothing it sends after
// this is seen, of course: a request written then gets nothing back (see
// staleConnError).
func (pc *h1Conn) peerClosed() bool {
	if pc.rc == nil {
		return false
	}
	pc.peekGone = false
	if err := pc.rc.Read(pc.peekFn); err != nil {
		return true
	}
	return pc.peekGone
}

func (pc *h1Conn) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), pc.peekBuf[:], syscall.MSG_PEEK) // the socket is non-blocking
	// Nothing to read (EAGAIN) is what a live idle connection shows; a
	// byte or the end of the stream (no error), or any error, is not.
	pc.peekGone = err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
	return true // never wait for the socket to become readable
}
