package netem

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestNetworkLinksPerTarget dials two targets through a Network, twice
// each: one link per target, started on first use and reused, bytes exact,
// counters per link and summed, and the rate shared by both links.
func TestNetworkLinksPerTarget(t *testing.T) {
	const n = 256 << 10
	const rate = 1 << 20 // both transfers together: 512 KiB take 500 ms
	payload := randomBytes(n, 11)
	send := func(c *net.TCPConn) {
		_, _ = c.Write(payload)
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	}
	a, b := target(t, send), target(t, send)
	nw, err := NewNetwork(Config{Down: Shape{Rate: rate}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nw.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fetch := func(addr string) sink {
		c, err := nw.Dial(ctx, addr)
		if err != nil {
			return sink{err: err}
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		return drain(c)
	}
	want := sha256.Sum256(payload)
	for round := range 2 {
		start := time.Now()
		var wg sync.WaitGroup
		got := make([]sink, 2)
		for i, addr := range []string{a, b} {
			wg.Add(1)
			go func() { defer wg.Done(); got[i] = fetch(addr) }()
		}
		wg.Wait()
		elapsed := time.Since(start)
		for i, s := range got {
			if s.err != nil || s.n != n || s.sum != want {
				t.Fatalf("round %d, target %d: %d bytes (error %v), hash match %t; want the %d bytes sent", round, i, s.n, s.err, s.sum == want, n)
			}
		}
		// One bottleneck for both links: the two transfers together
		// take their summed bytes over the rate.
		if ideal := time.Duration(float64(2*n) / rate * float64(time.Second)); elapsed < ideal*8/10 {
			t.Fatalf("round %d: 2×%d bytes through links sharing %d B/s took %v; want at least about %v", round, n, rate, elapsed, ideal)
		}
	}

	if got := nw.Targets(); !slices.Equal(got, []string{a, b}) && !slices.Equal(got, []string{b, a}) {
		t.Fatalf("Targets() = %v, want %s and %s", got, a, b)
	}
	var sum int64
	for _, addr := range []string{a, b} {
		l, err := nw.Link(addr)
		if err != nil {
			t.Fatal(err)
		}
		if l.Target() != addr {
			t.Fatalf("link to %s targets %s", addr, l.Target())
		}
		st := l.Stats()
		if st.Accepted != 2 || st.Down.Bytes != 2*n {
			t.Fatalf("link to %s: %d connections, %d bytes down; want 2 and %d", addr, st.Accepted, st.Down.Bytes, 2*n)
		}
		sum += st.Down.Bytes
	}
	if st := nw.Stats(); st.Accepted != 4 || st.Down.Bytes != sum || st.Up.Bytes != 0 {
		t.Fatalf("network stats %+v; want 4 connections and %d bytes down, none up", st, sum)
	}

	if err := nw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Dial(ctx, a); !errors.Is(err, ErrNetworkClosed) {
		t.Fatalf("Dial after Close = %v, want ErrNetworkClosed", err)
	}
	if st := nw.Stats(); st.Down.Bytes != sum {
		t.Fatalf("stats after Close: %d bytes down, want %d", st.Down.Bytes, sum)
	}
}

// TestNetworkValidates: an invalid configuration is refused up front.
func TestNetworkValidates(t *testing.T) {
	if _, err := NewNetwork(Config{Up: Shape{Rate: -1}}, nil); err == nil {
		t.Fatal("NewNetwork accepted a negative rate")
	}
}
