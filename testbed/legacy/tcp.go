package legacy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tcpServer is the listener and connection bookkeeping shared by the raw TCP
// servers: it counts accepted connections, tracks the open ones so Close can
// break them, and waits for every goroutine it started.
type tcpServer struct {
	ln       *net.TCPListener
	accepted atomic.Int64

	mu     sync.Mutex
	conns  map[*net.TCPConn]struct{}
	closed bool

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

func listenLoopback() (*net.TCPListener, error) {
	return net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

// start runs the accept loop. accept is called on the accept goroutine for
// every new connection before the accepted counter includes it, so
// per-connection state is registered by the time a poller sees the count.
// The function accept returns runs on the connection's own goroutine and
// owns the connection until it returns, after which the connection is
// closed.
func (s *tcpServer) start(ln *net.TCPListener, accept func(*net.TCPConn) func()) {
	s.ln = ln
	s.conns = make(map[*net.TCPConn]struct{})
	s.wg.Go(func() {
		var backoff time.Duration
		for {
			c, err := ln.AcceptTCP()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// Transient (e.g. out of file descriptors): back off
				// as net/http does rather than give up on the server.
				backoff = min(max(2*backoff, 5*time.Millisecond), 100*time.Millisecond)
				time.Sleep(backoff)
				continue
			}
			backoff = 0
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				_ = c.Close()
				return
			}
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			run := accept(c)
			s.accepted.Add(1)
			s.wg.Go(func() {
				defer s.forget(c)
				run()
			})
		}
	})
}

func (s *tcpServer) forget(c *net.TCPConn) {
	_ = c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

// close stops accepting, closes every open connection and waits for all
// goroutines. It is idempotent; later calls return the first call's result.
func (s *tcpServer) close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		open := make([]*net.TCPConn, 0, len(s.conns))
		for c := range s.conns {
			open = append(open, c)
		}
		s.mu.Unlock()
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = err
		}
		for _, c := range open {
			_ = c.Close()
		}
		s.wg.Wait()
	})
	return s.closeErr
}
