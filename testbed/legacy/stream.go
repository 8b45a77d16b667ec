package legacy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// DefaultWriteChunk is the number of bytes a StreamServer passes to each
// Write call when StreamConfig.WriteChunk is zero.
const DefaultWriteChunk = 64 << 10

// StreamConfig configures a StreamServer. The zero value is valid: the
// server sends nothing and only reads what the peer sends.
type StreamConfig struct {
	// SendBytes is how many bytes the server sends on every accepted
	// connection: the first SendBytes bytes of RandomStream(Seed). Zero
	// sends nothing; negative is invalid.
	SendBytes int64

	// Seed selects the pseudo-random data; see RandomStream.
	Seed uint64

	// CloseWriteAfterSend half-closes the server's write side once all
	// SendBytes are written, so the peer reads EOF while it may still send.
	// When false the server keeps its write side open until the peer's EOF
	// has also been read, and then closes the whole connection.
	CloseWriteAfterSend bool

	// WriteChunk is the number of bytes passed to each Write call; small
	// values give OnWrite a fine grain. Zero means DefaultWriteChunk;
	// negative is invalid.
	WriteChunk int

	// OnWrite, if set, is called after every successful Write with the
	// total bytes written so far on that connection. It runs on the
	// connection's sending goroutine, one call at a time per connection,
	// and may block: blocking stalls that connection's sender (tests use
	// this to hold the server at a known offset), and Close cannot return
	// until every OnWrite call has returned.
	OnWrite func(total int64)
}

// Validate reports every problem in c at once, wrapping ErrInvalidConfig.
func (c StreamConfig) Validate() error {
	var errs []error
	if c.SendBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: SendBytes %d is negative", ErrInvalidConfig, c.SendBytes))
	}
	if c.WriteChunk < 0 {
		errs = append(errs, fmt.Errorf("%w: WriteChunk %d is negative", ErrInvalidConfig, c.WriteChunk))
	}
	return errors.Join(errs...)
}

// StreamServer is a raw TCP legacy server for byte-exactness tests. On every
// accepted connection it sends deterministic pseudo-random data while
// concurrently reading everything the peer sends until EOF, hashing both
// directions with SHA-256. Once both directions are finished it closes the
// connection. It is safe for concurrent use.
type StreamServer struct {
	cfg StreamConfig
	srv tcpServer

	mu      sync.Mutex
	conns   []*StreamConn
	changed chan struct{} // closed and replaced whenever conns grows
}

// NewStreamServer validates cfg and starts a StreamServer listening on
// 127.0.0.1 with a kernel-chosen port.
func NewStreamServer(cfg StreamConfig) (*StreamServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.WriteChunk == 0 {
		cfg.WriteChunk = DefaultWriteChunk
	}
	ln, err := listenLoopback()
	if err != nil {
		return nil, fmt.Errorf("legacy: stream server listen: %w", err)
	}
	s := &StreamServer{cfg: cfg, changed: make(chan struct{})}
	s.srv.start(ln, s.accept)
	return s, nil
}

// Addr returns the host:port the server listens on.
func (s *StreamServer) Addr() string { return s.srv.addr() }

// Accepted returns the number of connections accepted since the server
// started. Each counted connection is already present in Conns.
func (s *StreamServer) Accepted() int64 { return s.srv.accepted.Load() }

// Conns returns the connections accepted so far, oldest first, including
// finished ones.
func (s *StreamServer) Conns() []*StreamConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*StreamConn(nil), s.conns...)
}

// WaitConn blocks until the server has accepted its i-th connection
// (counting from zero) and returns it, or returns ctx's error.
func (s *StreamServer) WaitConn(ctx context.Context, i int) (*StreamConn, error) {
	for {
		s.mu.Lock()
		if i < len(s.conns) {
			c := s.conns[i]
			s.mu.Unlock()
			return c, nil
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("legacy: waiting for stream connection %d: %w", i, ctx.Err())
		}
	}
}

// Close stops accepting, closes every open connection (their Err then wraps
// net.ErrClosed) and waits until all of the server's goroutines, including
// OnWrite calls, have returned. It is idempotent.
func (s *StreamServer) Close() error { return s.srv.close() }

func (s *StreamServer) accept(c *net.TCPConn) func() {
	sc := &StreamConn{
		local:    c.LocalAddr().(*net.TCPAddr),
		remote:   c.RemoteAddr().(*net.TCPAddr),
		sendDone: make(chan struct{}),
		recvDone: make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.mu.Lock()
	s.conns = append(s.conns, sc)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return func() { s.serve(sc, c) }
}

func (s *StreamServer) serve(sc *StreamConn, c *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Go(func() { s.send(sc, c) })
	s.receive(sc, c)
	wg.Wait()
	// Both directions are finished; closing here rather than in the
	// caller makes the connection closed by the time Done is observed.
	_ = c.Close()
	close(sc.done)
}

func (s *StreamServer) send(sc *StreamConn, c *net.TCPConn) {
	defer close(sc.sendDone)
	h := sha256.New()
	defer func() { h.Sum(sc.sentSum[:0]) }()
	src := RandomStream(s.cfg.Seed)
	buf := make([]byte, min(int64(s.cfg.WriteChunk), max(s.cfg.SendBytes, 1)))
	for left := s.cfg.SendBytes; left > 0; {
		p := buf[:min(int64(len(buf)), left)]
		_, _ = src.Read(p)
		n, err := c.Write(p)
		h.Write(p[:n])
		total := sc.sent.Add(int64(n))
		left -= int64(n)
		if err != nil {
			sc.fail(fmt.Errorf("legacy: stream send after %d bytes: %w", total, err))
			return
		}
		if s.cfg.OnWrite != nil {
			s.cfg.OnWrite(total)
		}
	}
	if s.cfg.CloseWriteAfterSend {
		if err := c.CloseWrite(); err != nil {
			sc.fail(fmt.Errorf("legacy: stream close write: %w", err))
		}
	}
}

func (s *StreamServer) receive(sc *StreamConn, c *net.TCPConn) {
	defer close(sc.recvDone)
	h := sha256.New()
	defer func() { h.Sum(sc.receivedSum[:0]) }()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		h.Write(buf[:n])
		total := sc.received.Add(int64(n))
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			sc.fail(fmt.Errorf("legacy: stream receive after %d bytes: %w", total, err))
			return
		}
	}
}

// StreamConn is the server side of one StreamServer connection. Its methods
// are safe for concurrent use.
type StreamConn struct {
	local, remote *net.TCPAddr

	sent, received       atomic.Int64
	sentSum, receivedSum [32]byte // written before sendDone / recvDone close

	sendDone, recvDone, done chan struct{}

	mu  sync.Mutex
	err error
}

// LocalPort returns the server's port of this connection (the listening
// port).
func (c *StreamConn) LocalPort() int { return c.local.Port }

// RemoteAddr returns the peer's address as the server sees it.
func (c *StreamConn) RemoteAddr() net.Addr { return c.remote }

// RemotePort returns the peer's port, which identifies the connection among
// those to this server: it equals the client's net.Conn LocalAddr port.
func (c *StreamConn) RemotePort() int { return c.remote.Port }

// Sent returns the number of bytes written to the peer so far.
func (c *StreamConn) Sent() int64 { return c.sent.Load() }

// SentSum returns the SHA-256 of the bytes written to the peer. It is the
// zero array until SendDone is closed, and final afterwards.
func (c *StreamConn) SentSum() [32]byte {
	select {
	case <-c.sendDone:
		return c.sentSum
	default:
		return [32]byte{}
	}
}

// Received returns the number of bytes read from the peer so far.
func (c *StreamConn) Received() int64 { return c.received.Load() }

// ReceivedSum returns the SHA-256 of the bytes read from the peer. It is the
// zero array until the peer's EOF (or a read error) ended the receive
// direction, and final once Done is closed.
func (c *StreamConn) ReceivedSum() [32]byte {
	select {
	case <-c.recvDone:
		return c.receivedSum
	default:
		return [32]byte{}
	}
}

// SendDone is closed when the server stopped sending: all bytes written
// (and the write side half-closed if configured) or a write failed.
func (c *StreamConn) SendDone() <-chan struct{} { return c.sendDone }

// Done is closed when both directions are finished — sending stopped and
// the peer's EOF (or a read error) was read — and the server has closed the
// connection.
func (c *StreamConn) Done() <-chan struct{} { return c.done }

// Err returns the first error either direction met, or nil if none so far.
// An error caused by the server's Close wraps net.ErrClosed.
func (c *StreamConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *StreamConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}
