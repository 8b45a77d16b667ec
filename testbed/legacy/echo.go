package legacy

import (
	"fmt"
	"net"
	"sync/atomic"
)

// EchoServer is a TCP echo server: every byte a peer sends is written back on
// the same connection. It is half-close aware: when the peer half-closes its
// write side, the server finishes echoing what it read, half-closes its own
// write side so the peer reads EOF, and then closes the connection. It is
// safe for concurrent use.
type EchoServer struct {
	srv    tcpServer
	echoed atomic.Int64
}

// NewEchoServer starts an EchoServer listening on 127.0.0.1 with a
// kernel-chosen port.
func NewEchoServer() (*EchoServer, error) {
	ln, err := listenLoopback()
	if err != nil {
		return nil, fmt.Errorf("legacy: echo server listen: %w", err)
	}
	s := &EchoServer{}
	s.srv.start(ln, func(c *net.TCPConn) func() {
		return func() { s.serve(c) }
	})
	return s, nil
}

// Addr returns the host:port the server listens on.
func (s *EchoServer) Addr() string { return s.srv.addr() }

// Accepted returns the number of connections accepted since the server
// started.
func (s *EchoServer) Accepted() int64 { return s.srv.accepted.Load() }

// Echoed returns the total number of bytes echoed on all connections.
func (s *EchoServer) Echoed() int64 { return s.echoed.Load() }

// Close stops accepting, closes every open connection and waits for the
// server's goroutines. It is idempotent.
func (s *EchoServer) Close() error { return s.srv.close() }

func (s *EchoServer) serve(c *net.TCPConn) {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
			s.echoed.Add(int64(n))
		}
		if rerr != nil {
			// EOF: the peer half-closed (or closed); pass the EOF on.
			// Anything else: the connection is broken and is closed by
			// the caller either way.
			_ = c.CloseWrite()
			return
		}
	}
}
