package legacy

import (
	"bytes"
	"io"
	"testing"
)

func newEchoServer(t *testing.T) *EchoServer {
	t.Helper()
	s, err := NewEchoServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// The peer half-closes; the server echoes everything, then passes the EOF on.
func TestEchoServerHalfClose(t *testing.T) {
	const size = 2 << 20
	s := newEchoServer(t)
	payload, _ := randomPrefix(t, 11, size)
	for i := range 2 {
		c := dialTCP(t, s.Addr())
		writeErr := make(chan error, 1)
		go func() {
			_, err := c.Write(payload)
			if err == nil {
				err = c.CloseWrite()
			}
			writeErr <- err
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("connection %d: read: %v", i, err)
		}
		if err := <-writeErr; err != nil {
			t.Fatalf("connection %d: write: %v", i, err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("connection %d: echoed %d bytes, differing from the %d sent", i, len(got), size)
		}
		if got, want := s.Accepted(), int64(i+1); got != want {
			t.Fatalf("Accepted = %d, want %d", got, want)
		}
	}
	if got, want := s.Echoed(), int64(2*size); got != want {
		t.Fatalf("Echoed = %d, want %d", got, want)
	}
}

// Close ends connections a peer keeps open.
func TestEchoServerClose(t *testing.T) {
	s, err := NewEchoServer()
	if err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, s.Addr())
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("read %d bytes after Close, want an error", n)
	}
}
