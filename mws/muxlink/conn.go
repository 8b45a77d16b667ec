package muxlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

// ErrCut is returned by a Conn whose stream was handed to another MWS.
var ErrCut = errors.New("muxlink: stream handed to another owner")

// Conn is a net.Conn over a Stream for protocol handlers inside the MWS:
// Read commits every byte it returns (the MWS has taken it over), Write
// appends up bytes, Close closes the legacy connection at the mux.
// Read deadlines are honoured; Write is paced by the mux's flow control.
type Conn struct {
	s *Stream

	readMu sync.Mutex
	buf    []byte
	next   uint64 // down offset of buf[0]
	eof    error

	dlMu     sync.Mutex
	deadline time.Time
	dlChange chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// NewConn wraps s. The Conn takes s over: do not use s directly afterwards.
func NewConn(s *Stream) *Conn {
	return &Conn{s: s, next: s.DownStart(), dlChange: make(chan struct{})}
}

// Stream returns the underlying stream.
func (c *Conn) Stream() *Stream { return c.s }

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for len(c.buf) == 0 {
		if c.eof != nil {
			return 0, c.eof
		}
		m, err := c.recv()
		if err != nil {
			return 0, err
		}
		switch m := m.Msg.(type) {
		case *muxv1.AttachResponse_Data:
			if m.Data.Offset != c.next {
				c.eof = fmt.Errorf("muxlink: data at offset %d, want %d", m.Data.Offset, c.next)
				return 0, c.eof
			}
			c.buf = m.Data.Data
		case *muxv1.AttachResponse_Eof:
			if m.Eof.Error != "" {
				c.eof = fmt.Errorf("muxlink: legacy server: %s", m.Eof.Error)
			} else {
				c.eof = io.EOF
			}
		case *muxv1.AttachResponse_Closed:
			if c.eof == nil {
				c.eof = io.EOF
			}
		case *muxv1.AttachResponse_Cut:
			c.eof = ErrCut
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	c.next += uint64(n)
	if len(c.buf) == 0 {
		// The whole message is consumed: the mux may forget it.
		if err := c.s.Commit(c.next); err != nil {
			c.eof = err
		}
	}
	return n, nil
}

func (c *Conn) recv() (*muxv1.AttachResponse, error) {
	for {
		c.dlMu.Lock()
		dl, change := c.deadline, c.dlChange
		c.dlMu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case m, ok := <-c.s.msgs:
			if !ok {
				if err := c.s.RecvErr(); err != nil {
					return nil, err
				}
				return nil, io.EOF
			}
			return m, nil
		case <-timeout:
			return nil, os.ErrDeadlineExceeded
		case <-change:
		}
	}
}

// Write implements net.Conn.
func (c *Conn) Write(p []byte) (int, error) { return c.s.Write(p) }

// Close closes the legacy connection at the mux.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.closeErr = c.s.Close(ctx)
		c.s.Detach()
	})
	return c.closeErr
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return addr("mws") }

// RemoteAddr implements net.Conn: the backend and stream.
func (c *Conn) RemoteAddr() net.Addr { return addr(c.s.backend + "/" + c.s.id) }

// SetDeadline implements net.Conn (it sets the read deadline).
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	c.deadline = t
	close(c.dlChange)
	c.dlChange = make(chan struct{})
	c.dlMu.Unlock()
	return nil
}

// SetWriteDeadline implements net.Conn. Writes are paced by gRPC flow
// control and end when the stream does; no write deadline is kept.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

type addr string

func (a addr) Network() string { return "imash-mux" }
func (a addr) String() string  { return string(a) }
