package legacy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func newStreamServer(t *testing.T, cfg StreamConfig) *StreamServer {
	t.Helper()
	s, err := NewStreamServer(cfg)
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

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestStreamServerRoundTrip(t *testing.T) {
	const (
		size     = 8 << 20
		downSeed = 1
		upSeed   = 2
	)
	s := newStreamServer(t, StreamConfig{SendBytes: size, Seed: downSeed, CloseWriteAfterSend: true})
	c := dialTCP(t, s.Addr())

	// Upload concurrently: both sides send and receive at once, so neither
	// may wait for the other to drain first.
	upSum := make(chan [32]byte, 1)
	upErr := make(chan error, 1)
	go func() {
		h := sha256.New()
		_, err := io.CopyN(io.MultiWriter(c, h), RandomStream(upSeed), size)
		if err == nil {
			err = c.CloseWrite()
		}
		var sum [32]byte
		h.Sum(sum[:0])
		upSum <- sum
		upErr <- err
	}()

	h := sha256.New()
	n, err := io.Copy(h, c) // ends at the server's half-close
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if err := <-upErr; err != nil {
		t.Fatalf("upload: %v", err)
	}
	sentUp := <-upSum
	if n != size {
		t.Fatalf("downloaded %d bytes, want %d", n, size)
	}
	var gotDown [32]byte
	h.Sum(gotDown[:0])

	if got := s.Accepted(); got != 1 {
		t.Fatalf("Accepted = %d, want 1", got)
	}
	conns := s.Conns()
	if len(conns) != 1 {
		t.Fatalf("Conns has %d entries, want 1", len(conns))
	}
	sc := conns[0]
	waitClosed(t, "connection done", sc.Done())

	_, wantDown := randomPrefix(t, downSeed, size)
	for _, check := range []struct {
		name      string
		got, want any
	}{
		{name: "client received hash", got: gotDown, want: wantDown},
		{name: "server SentSum", got: sc.SentSum(), want: wantDown},
		{name: "server ReceivedSum", got: sc.ReceivedSum(), want: sentUp},
		{name: "Sent", got: sc.Sent(), want: int64(size)},
		{name: "Received", got: sc.Received(), want: int64(size)},
		{name: "Err", got: sc.Err(), want: nil},
		{name: "LocalPort", got: sc.LocalPort(), want: c.RemoteAddr().(*net.TCPAddr).Port},
		{name: "RemotePort", got: sc.RemotePort(), want: c.LocalAddr().(*net.TCPAddr).Port},
		{name: "RemoteAddr", got: sc.RemoteAddr().String(), want: c.LocalAddr().String()},
	} {
		if check.got != check.want {
			t.Errorf("%s = %v, want %v", check.name, check.got, check.want)
		}
	}
}

// Without CloseWriteAfterSend the server keeps its write side open until
// the peer's EOF, then closes the connection.
func TestStreamServerWithoutCloseWrite(t *testing.T) {
	const size = 1 << 20
	s := newStreamServer(t, StreamConfig{SendBytes: size, Seed: 5})
	c := dialTCP(t, s.Addr())

	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	want, _ := randomPrefix(t, 5, size)
	if !bytes.Equal(got, want) {
		t.Fatal("received bytes differ from RandomStream(5)")
	}
	sc, err := s.WaitConn(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "send done", sc.SendDone())
	if isClosed(sc.Done()) {
		t.Fatal("Done closed before the peer's EOF")
	}
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The server now closes the connection: the client reads EOF.
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after the data: %d more bytes, err %v; want clean EOF", len(rest), err)
	}
	waitClosed(t, "connection done", sc.Done())
	if sc.Received() != 3 || sc.ReceivedSum() != sha256.Sum256([]byte("bye")) || sc.Err() != nil {
		t.Fatalf("Received %d, sum %x, err %v", sc.Received(), sc.ReceivedSum(), sc.Err())
	}
}

// OnWrite can hold the server at a known offset.
func TestStreamServerOnWriteHolds(t *testing.T) {
	const (
		chunk = 1000
		size  = 10 * chunk
		hold  = 3 * chunk
	)
	progress := make(chan int64)
	release := make(chan struct{})
	s := newStreamServer(t, StreamConfig{
		SendBytes:           size,
		Seed:                9,
		CloseWriteAfterSend: true,
		WriteChunk:          chunk,
		OnWrite: func(total int64) {
			progress <- total
			if total == hold {
				<-release
			}
		},
	})
	c := dialTCP(t, s.Addr())
	for want := int64(chunk); want <= hold; want += chunk {
		if got := <-progress; got != want {
			t.Fatalf("OnWrite(%d), want %d", got, want)
		}
	}
	sc, err := s.WaitConn(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := sc.Sent(); got != hold {
		t.Fatalf("held server has Sent %d, want %d", got, hold)
	}
	if sc.SentSum() != [32]byte{} {
		t.Fatal("SentSum set before sending finished")
	}
	close(release)
	for want := int64(hold + chunk); want <= size; want += chunk {
		if got := <-progress; got != want {
			t.Fatalf("OnWrite(%d), want %d", got, want)
		}
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want, wantSum := randomPrefix(t, 9, size)
	if !bytes.Equal(got, want) {
		t.Fatal("bytes sent in small chunks differ from RandomStream")
	}
	waitClosed(t, "send done", sc.SendDone())
	if sc.SentSum() != wantSum {
		t.Fatal("SentSum differs")
	}
}

// Close breaks connections that are stuck and waits for their goroutines.
func TestStreamServerCloseInterrupts(t *testing.T) {
	started := make(chan struct{}, 1)
	s, err := NewStreamServer(StreamConfig{
		SendBytes: 1 << 40, // far more than socket buffers hold
		OnWrite: func(int64) {
			select {
			case started <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	dialTCP(t, s.Addr()) // never reads
	<-started
	sc, err := s.WaitConn(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !isClosed(sc.Done()) {
		t.Fatal("Close returned before the connection finished")
	}
	if err := sc.Err(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Err = %v, want one wrapping net.ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStreamServerManyConns(t *testing.T) {
	const (
		conns = 4
		size  = 256 << 10
	)
	s := newStreamServer(t, StreamConfig{SendBytes: size, Seed: 3, CloseWriteAfterSend: true})
	_, want := randomPrefix(t, 3, size)
	for i := range conns {
		c := dialTCP(t, s.Addr())
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			t.Fatal(err)
		}
		if [32]byte(h.Sum(nil)) != want {
			t.Fatalf("connection %d: data differs", i)
		}
		sc, err := s.WaitConn(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		waitClosed(t, "connection done", sc.Done())
		if sc.Received() != 0 || sc.ReceivedSum() != sha256.Sum256(nil) {
			t.Fatalf("connection %d: received %d bytes", i, sc.Received())
		}
	}
	if got := s.Accepted(); got != conns {
		t.Fatalf("Accepted = %d, want %d", got, conns)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.WaitConn(ctx, conns); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitConn past the last connection: %v, want context.Canceled", err)
	}
}

func TestStreamConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   StreamConfig
		wants []string
	}{
		{name: "zero", cfg: StreamConfig{}},
		{name: "negative send", cfg: StreamConfig{SendBytes: -1}, wants: []string{"SendBytes"}},
		{name: "both", cfg: StreamConfig{SendBytes: -1, WriteChunk: -5}, wants: []string{"SendBytes", "WriteChunk"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if _, err := NewStreamServer(tc.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("NewStreamServer = %v, want ErrInvalidConfig", err)
			}
		})
	}
}
