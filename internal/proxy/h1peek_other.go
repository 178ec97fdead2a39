//go:build !unix

package proxy

// Without a peek at the socket, a stale idle connection is found out by
// the request written on it (see staleConnError).

func (pc *h1Conn) initPeek() {}

func (pc *h1Conn) peerClosed() bool { return false }
