package mws_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/mws/cluster"
)

// gossipLog collects log output for a test to read.
type gossipLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *gossipLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *gossipLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type gossipNode struct {
	c   *cluster.Cluster
	g   *mws.Gossip
	log *gossipLog
}

// startGossipNode starts a loopback cluster node named name with fast
// timing, joining seeds, and wraps it in a Gossip membership.
func startGossipNode(t *testing.T, name string, seeds ...string) *gossipNode {
	t.Helper()
	cfg := cluster.NewDefaultConfig()
	cfg.Name = name
	cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
	cfg.Seeds = seeds
	cfg.SecretKeys = [][]byte{bytes.Repeat([]byte{7}, 32)}
	cfg.GRPCAddr = name + ".test:7800"
	cfg.Load = cluster.Load{MaxSessions: 10}
	cfg.Timing = cluster.FastTiming()
	cfg.JoinAttempts = 3
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := cluster.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	l := &gossipLog{}
	g := mws.NewGossip(c, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() {
		g.Close()
		_ = c.Abort()
	})
	return &gossipNode{c: c, g: g, log: l}
}

// gossipPoll polls cond until it holds or timeout passes; the failure
// names what was awaited and, if detail is set, what was seen last.
func gossipPoll(t *testing.T, timeout time.Duration, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %v waiting until %s", timeout, what)
			if detail != nil {
				msg += ":\n" + detail()
			}
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

func gossipPeer(g *mws.Gossip, name string) (mws.PeerInfo, bool) {
	for _, p := range g.Peers() {
		if p.Name == name {
			return p, true
		}
	}
	return mws.PeerInfo{}, false
}

func TestGossipMembership(t *testing.T) {
	const wait = 20 * time.Second
	n1 := startGossipNode(t, "n1")
	n2 := startGossipNode(t, "n2", n1.c.Addr())
	n3 := startGossipNode(t, "n3", n1.c.Addr())
	nodes := []*gossipNode{n1, n2, n3}

	// Every node sees the other two, alive, at their gRPC addresses, and
	// never itself.
	for _, n := range nodes {
		gossipPoll(t, wait, n.c.Name()+" sees two live peers", func() bool {
			ps := n.g.Peers()
			if len(ps) != 2 {
				return false
			}
			for _, p := range ps {
				if p.Name == n.c.Name() || !p.Alive || p.Addr != p.Name+".test:7800" || p.MaxSessions != 10 {
					return false
				}
			}
			return true
		}, func() string { return fmt.Sprintf("%+v", n.g.Peers()) })
	}

	// A burst of load changes returns at once and the newest one arrives.
	start := time.Now()
	for i := range 1000 {
		n1.g.SetLoad(i%7, 20, false)
	}
	n1.g.SetLoad(6, 20, false)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("1001 SetLoad calls took %v: SetLoad waits for gossip", d)
	}
	n2.g.SetLoad(1, 10, true)
	for _, n := range []*gossipNode{n2, n3} {
		gossipPoll(t, wait, n.c.Name()+" sees n1's newest load", func() bool {
			p, ok := gossipPeer(n.g, "n1")
			return ok && p.Sessions == 6 && p.MaxSessions == 20 && !p.Draining
		}, func() string { return fmt.Sprintf("%+v", n.g.Peers()) })
	}
	gossipPoll(t, wait, "n3 sees n2 draining", func() bool {
		p, ok := gossipPeer(n3.g, "n2")
		return ok && p.Draining && p.Sessions == 1
	}, func() string { return fmt.Sprintf("%+v", n3.g.Peers()) })

	// The device directory is the cluster's.
	n1.g.SetDevice("alice", "laptop", true)
	n3.g.SetDevice("bob", "phone", true)
	gossipPoll(t, wait, "n2 finds alice's laptop on n1", func() bool {
		m, online, ok := n2.g.LookupDevice("alice", "laptop")
		return ok && online && m == "n1"
	}, nil)
	gossipPoll(t, wait, "n1 finds bob's phone on n3", func() bool {
		m, online, ok := n1.g.LookupDevice("bob", "phone")
		return ok && online && m == "n3"
	}, nil)
	if _, _, ok := n1.g.LookupDevice("alice", "nothing"); ok {
		t.Error("an unknown device was found")
	}
	// A bad identifier is logged, not fatal.
	n1.g.SetDevice("", "x", true)

	// A member that leaves is listed not alive at once, and its devices
	// read offline.
	n3.g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n3.c.Close(ctx); err != nil {
		t.Fatalf("close n3: %v", err)
	}
	n3.g.SetLoad(1, 1, false) // after Close: ignored
	for _, n := range []*gossipNode{n1, n2} {
		gossipPoll(t, wait, n.c.Name()+" sees n3 gone", func() bool {
			p, ok := gossipPeer(n.g, "n3")
			return ok && !p.Alive
		}, func() string { return fmt.Sprintf("%+v", n.g.Peers()) })
	}
	gossipPoll(t, wait, "bob's phone reads offline", func() bool {
		m, online, ok := n1.g.LookupDevice("bob", "phone")
		return ok && !online && m == "n3"
	}, nil)

	// Joins and the leave are logged at info level.
	gossipPoll(t, wait, "n1 logs n2 and n3 joining and n3 leaving", func() bool {
		l := n1.log.String()
		return strings.Contains(l, "member joined") && strings.Contains(l, "member=n2") &&
			strings.Contains(l, "member left") && strings.Contains(l, "member=n3")
	}, n1.log.String)
	if l := n1.log.String(); !strings.Contains(l, "device directory update failed") {
		t.Errorf("a bad SetDevice was not logged:\n%s", l)
	}
}

// TestGossipFailedMember: a member that stops without leaving is reported
// failed and listed not alive.
func TestGossipFailedMember(t *testing.T) {
	n1 := startGossipNode(t, "f1")
	n2 := startGossipNode(t, "f2", n1.c.Addr())
	gossipPoll(t, 20*time.Second, "f1 sees f2", func() bool {
		p, ok := gossipPeer(n1.g, "f2")
		return ok && p.Alive
	}, nil)
	n2.g.Close()
	if err := n2.c.Abort(); err != nil {
		t.Fatal(err)
	}
	gossipPoll(t, 30*time.Second, "f1 sees f2 failed", func() bool {
		p, ok := gossipPeer(n1.g, "f2")
		return ok && !p.Alive
	}, func() string { return fmt.Sprintf("%+v", n1.g.Peers()) })
	gossipPoll(t, 10*time.Second, "f1 logs f2's failure", func() bool {
		return strings.Contains(n1.log.String(), "member failed")
	}, n1.log.String)
}
