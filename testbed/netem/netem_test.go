package netem

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests bound times from below only where the bound is physics (bytes
// over a rate, a delay); upper bounds are several times the ideal, for a
// loaded machine under -race.

// target is a TCP server that runs handle for each connection.
func target(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = lis.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return lis.Addr().String()
}

func link(t testing.TB, to string, cfg Config) *Link {
	t.Helper()
	l, err := Listen("127.0.0.1:0", to, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func dial(t testing.TB, l *Link) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	return c.(*net.TCPConn)
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

// sink reads a connection to EOF and reports the bytes' hash and count.
type sink struct {
	sum [32]byte
	n   int64
	err error
}

func drain(r io.Reader) sink {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var s sink
	copy(s.sum[:], h.Sum(nil))
	s.n, s.err = n, err
	return s
}

func TestThroughputFollowsRate(t *testing.T) {
	const n = 1 << 20
	const rate = 2 << 20 // 1 MiB takes 500 ms
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"down", Config{Down: Shape{Rate: rate}}},
		{"up", Config{Up: Shape{Rate: rate}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := randomBytes(n, 1)
			got := make(chan sink, 1)
			to := target(t, func(c *net.TCPConn) {
				if tc.name == "down" {
					_, _ = c.Write(payload)
					_ = c.CloseWrite()
					_, _ = io.Copy(io.Discard, c)
					return
				}
				got <- drain(c)
			})
			l := link(t, to, tc.cfg)
			c := dial(t, l)
			start := time.Now()
			var s sink
			if tc.name == "down" {
				s = drain(c)
			} else {
				if _, err := c.Write(payload); err != nil {
					t.Fatal(err)
				}
				_ = c.CloseWrite()
				s = <-got
			}
			elapsed := time.Since(start)
			if s.err != nil || s.n != n || s.sum != sha256.Sum256(payload) {
				t.Fatalf("received %d bytes (error %v), hash match %t; want the %d bytes sent", s.n, s.err, s.sum == sha256.Sum256(payload), n)
			}
			// The bottleneck queue lets the first bytes in at once, but
			// every byte still leaves it at the rate.
			if ideal := time.Duration(float64(n) / rate * float64(time.Second)); elapsed < ideal*8/10 || elapsed > 5*ideal {
				t.Fatalf("%d bytes at %d B/s took %v; want about %v", n, rate, elapsed, ideal)
			}
		})
	}
}

// TestLatencyIsAPipe checks that a delay holds every byte back (a round trip
// takes both delays) but does not lower the throughput: a bulk transfer
// takes about size/rate + delay, not a round trip per segment.
func TestLatencyIsAPipe(t *testing.T) {
	const delay = 50 * time.Millisecond
	to := target(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	l := link(t, to, Config{Up: Shape{Delay: delay}, Down: Shape{Rate: 1 << 20, Delay: delay}})
	c := dial(t, l)

	buf := make([]byte, 1)
	for i := range 3 {
		start := time.Now()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if rtt := time.Since(start); rtt < 2*delay || rtt > 2*delay+5*time.Second {
			t.Fatalf("round trip %d took %v; want at least the two delays, %v", i, rtt, 2*delay)
		}
	}

	const n = 512 << 10 // 500 ms at 1 MiB/s; 2.6 s if each 10 KiB segment waited a round trip
	payload := randomBytes(n, 2)
	start := time.Now()
	go func() { _, _ = c.Write(payload) }()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, payload) {
		t.Fatal("echoed bytes differ")
	}
	if elapsed < 500*time.Millisecond || elapsed > 2500*time.Millisecond {
		t.Fatalf("%d bytes through a 1 MiB/s link with %v each way took %v; want about 600 ms", n, delay, elapsed)
	}
}

// TestBytesExactBothWays sends different random streams both ways at once
// through jitter, in writes of random sizes, and compares hashes.
func TestBytesExactBothWays(t *testing.T) {
	const n = 1 << 20
	up, down := randomBytes(n, 3), randomBytes(n+17, 4)
	got := make(chan sink, 1)
	to := target(t, func(c *net.TCPConn) {
		go func() {
			writeChunks(c, down, 5)
			_ = c.CloseWrite()
		}()
		got <- drain(c)
	})
	sh := Shape{Rate: 8 << 20, Delay: 2 * time.Millisecond, Jitter: 3 * time.Millisecond}
	l := link(t, to, Config{Up: sh, Down: sh, Seed: 7})
	c := dial(t, l)
	go func() {
		writeChunks(c, up, 6)
		_ = c.CloseWrite()
	}()
	mine := drain(c)
	theirs := <-got
	if mine.err != nil || mine.n != int64(len(down)) || mine.sum != sha256.Sum256(down) {
		t.Fatalf("down: %d bytes (error %v), want the %d bytes sent, hash equal", mine.n, mine.err, len(down))
	}
	if theirs.err != nil || theirs.n != n || theirs.sum != sha256.Sum256(up) {
		t.Fatalf("up: %d bytes (error %v), want the %d bytes sent, hash equal", theirs.n, theirs.err, n)
	}
	pollStats(t, l, "the relay to end", func(s Stats) bool { return s.Active == 0 })
	if s := l.Stats(); s.Up.Bytes != n || s.Down.Bytes != int64(len(down)) || s.Accepted != 1 {
		t.Fatalf("stats %+v: want %d bytes up, %d down, 1 connection", s, n, len(down))
	}
}

func writeChunks(w io.Writer, b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed))
	for len(b) > 0 {
		k := min(len(b), 1+r.IntN(40<<10))
		if _, err := w.Write(b[:k]); err != nil {
			return
		}
		b = b[k:]
	}
}

// TestHalfCloseAndClose checks that a half-close reaches the other side
// after the bytes before it while the other direction keeps working, and
// that a close ends the relay.
func TestHalfCloseAndClose(t *testing.T) {
	const delay = 20 * time.Millisecond
	serverSaw := make(chan string, 1)
	to := target(t, func(c *net.TCPConn) {
		b, err := io.ReadAll(c) // up to the client's half-close
		if err != nil {
			serverSaw <- "error: " + err.Error()
			return
		}
		serverSaw <- string(b)
		_, _ = c.Write([]byte("reply after your EOF"))
		// The deferred close sends the FIN.
	})
	l := link(t, to, Symmetric(1<<20, delay))
	c := dial(t, l)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := <-serverSaw; got != "request" {
		t.Fatalf("server read %q before EOF, want %q", got, "request")
	}
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "reply after your EOF" {
		t.Fatalf("client read %q, %v; want the reply, then EOF", reply, err)
	}
	pollStats(t, l, "the relay to end", func(s Stats) bool { return s.Active == 0 })
}

// TestTargetCloseAndLinkClose checks that a target's close reaches the
// client, and that closing the link closes what it relays.
func TestTargetCloseAndLinkClose(t *testing.T) {
	release := make(chan struct{})
	to := target(t, func(c *net.TCPConn) {
		if _, err := c.Write([]byte("bye")); err != nil {
			return
		}
		<-release
	})
	l := link(t, to, Symmetric(0, time.Millisecond))
	c := dial(t, l)
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "bye" {
		t.Fatalf("read %q, %v", buf, err)
	}
	close(release)
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("after the target closed: read %q, %v; want EOF", b, err)
	}
	// Half-closed by the target, the relay lasts until the client closes.
	_ = c.Close()
	pollStats(t, l, "the first relay to end", func(s Stats) bool { return s.Active == 0 })

	c2 := dial(t, l)
	pollStats(t, l, "the second connection", func(s Stats) bool { return s.Active == 1 && s.Accepted == 2 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The target's greeting may or may not have got through; then the
	// connection must end (not time out).
	if _, err := io.ReadAll(c2); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a connection of a closed link stayed open")
	}
	if _, err := net.Dial("tcp", l.Addr()); err == nil {
		t.Fatal("a closed link accepted a connection")
	}
}

func TestDialErrorClosesClient(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()
	l := link(t, dead, Config{})
	c := dial(t, l)
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read through a link whose target refuses succeeded")
	}
	pollStats(t, l, "the dial error", func(s Stats) bool { return s.DialErrors == 1 && s.Active == 0 })
}

// TestSetConfig changes a running link's rate under an open connection.
func TestSetConfig(t *testing.T) {
	to := target(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	l := link(t, to, Config{})
	c := dial(t, l)
	if err := l.SetConfig(Config{Down: Shape{Rate: 256 << 10}}); err != nil {
		t.Fatal(err)
	}
	const n = 128 << 10 // 500 ms at 256 KiB/s
	payload := randomBytes(n, 9)
	start := time.Now()
	go func() { _, _ = c.Write(payload) }()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo: %v, equal %t", err, bytes.Equal(got, payload))
	}
	if elapsed := time.Since(start); elapsed < 400*time.Millisecond {
		t.Fatalf("%d bytes took %v after the rate dropped to 256 KiB/s; want at least 400 ms", n, elapsed)
	}
	if err := l.SetConfig(Config{Up: Shape{Rate: -1}}); err == nil {
		t.Fatal("SetConfig accepted a negative rate")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{name: "zero", cfg: Config{}},
		{name: "testbed-like", cfg: Symmetric(7000, 75*time.Millisecond)},
		{name: "everything wrong", cfg: Config{
			Up:         Shape{Rate: -1, Delay: -time.Second, Jitter: 2 * MaxDelay},
			Down:       Shape{Queue: MaxQueue + 1},
			ReadBuffer: 4096,
		}, want: []string{"Up.Rate", "Up.Delay", "Up.Jitter", "Down.Queue", "ReadBuffer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if _, lerr := Listen("127.0.0.1:0", "127.0.0.1:1", tc.cfg, nil); lerr == nil {
				t.Error("Listen accepted an invalid configuration")
			}
		})
	}
}

func TestTestbedLinks(t *testing.T) {
	for _, tc := range []struct {
		device string
		rate   int64 // bytes/s
		rtt    time.Duration
	}{
		{"workstation", 100_000_000 / 8, time.Millisecond},
		{"desktop", 100_000_000 / 8, time.Millisecond},
		{"laptop", 56_000 / 8, 150 * time.Millisecond},
		{"pda", 5_000_000 / 8, 20 * time.Millisecond},
	} {
		t.Run(tc.device, func(t *testing.T) {
			cfg, err := Testbed(tc.device)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Up.Rate != tc.rate || cfg.Down.Rate != tc.rate || cfg.RTT() != tc.rtt {
				t.Fatalf("%+v: want %d B/s both ways, RTT %v", cfg, tc.rate, tc.rtt)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := Testbed("mainframe"); err == nil {
		t.Fatal("Testbed accepted an unknown device")
	}
}

func pollStats(t testing.TB, l *Link, what string, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(l.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, l.Stats())
		}
		time.Sleep(2 * time.Millisecond)
	}
}
