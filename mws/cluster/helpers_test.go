package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

var (
	keyOld = bytes.Repeat([]byte{1}, 32)
	keyNew = bytes.Repeat([]byte{2}, 16)
)

// testLog forwards warnings to t.Log until the test ends (memberlist's
// goroutines may still log while the nodes shut down).
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimSpace(p)))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testConfig is a loopback node with fast timing and keyOld.
func testConfig(t testing.TB, name string, seeds ...string) Config {
	cfg := NewDefaultConfig()
	cfg.Name = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Seeds = seeds
	cfg.SecretKeys = [][]byte{keyOld}
	cfg.GRPCAddr = grpcAddr(name)
	cfg.Load = Load{MaxSessions: 100}
	cfg.Timing = FastTiming()
	cfg.JoinAttempts = 3
	cfg.Logger = testLogger(t)
	return cfg
}

// startNode starts a node and closes it (without waiting for gossip) when
// the test ends.
func startNode(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() { _ = c.Abort() })
	return c
}

// startCluster starts n nodes named n1..nN, all joining n1.
func startCluster(t testing.TB, n int) []*Cluster {
	t.Helper()
	first := startNode(t, testConfig(t, "n1"))
	cs := []*Cluster{first}
	for i := 2; i <= n; i++ {
		cs = append(cs, startNode(t, testConfig(t, fmt.Sprintf("n%d", i), first.Addr())))
	}
	for _, c := range cs {
		waitFor(t, 5*time.Second, func() bool { return aliveCount(c) == n },
			"%s sees %d alive members", c.Name(), n)
	}
	return cs
}

func aliveCount(c *Cluster) int {
	n := 0
	for _, m := range c.Members() {
		if m.State == StateAlive {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not a wait for an event
	}
}

// waitEvent reads events until one matches or the timeout passes.
func waitEvent(t testing.TB, ch <-chan Event, timeout time.Duration, match func(Event) bool, what string) Event {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event channel closed waiting for %s", what)
			}
			if match(ev) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

func grpcAddr(name string) string { return name + ".grpc.test:9443" }
