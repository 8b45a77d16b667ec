package mws

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/imashproject/imash/mws/cluster"
)

// gossipLoadWait bounds how long one load update waits for gossip to carry
// it. An update that is not carried by then is still in effect and reaches
// peers by later gossip or push-pull; the wait only paces updates.
const gossipLoadWait = 500 * time.Millisecond

// gossipCPUEvery is the least time between two CPU samples: shorter
// intervals are noisy.
const gossipCPUEvery = 2 * time.Second

// Gossip is a Membership backed by a memberlist cluster (package
// mws/cluster): peers and their load come from the members' metadata, the
// device directory is the cluster's. Create it with NewGossip once the
// cluster has started and stop it with Close before closing the cluster.
type Gossip struct {
	c   *cluster.Cluster
	log *slog.Logger
	cpu *cluster.CPUSampler

	// SetLoad stores the newest load in pending and wakes the publisher,
	// which sends the newest one whenever the previous update is done.
	mu      sync.Mutex
	pending cluster.Load
	dirty   bool
	closed  bool
	wake    chan struct{}

	// Only the publisher uses these: the last CPU sample and the last
	// load it published.
	cpuAt     time.Time
	cpuNow    float64
	last      cluster.Load
	published bool

	stop        chan struct{}
	done        sync.WaitGroup
	unsubscribe func()
	closeOnce   sync.Once
}

var _ Membership = (*Gossip)(nil)

// NewGossip wraps a started cluster. It logs members joining, leaving and
// failing at info level (log may be nil).
func NewGossip(c *cluster.Cluster, log *slog.Logger) *Gossip {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gossip{
		c:     c,
		log:   log,
		cpu:   cluster.NewCPUSampler(),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		cpuAt: time.Now(),
	}
	events, unsubscribe := c.Subscribe()
	g.unsubscribe = unsubscribe
	g.done.Add(2)
	go g.publisher()
	go g.watch(events)
	return g
}

// Close stops publishing load and logging events. It leaves the cluster
// itself running: close that afterwards (cluster.Cluster.Close). Calls to
// SetLoad after Close do nothing.
func (g *Gossip) Close() {
	g.closeOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		close(g.stop)
		g.unsubscribe()
		g.done.Wait()
	})
}

// Peers returns the other members. A member that left or failed, or whose
// metadata carries no gRPC address, is listed with Alive false.
func (g *Gossip) Peers() []PeerInfo {
	ms := g.c.Members()
	out := make([]PeerInfo, 0, len(ms))
	for _, m := range ms {
		if m.Local || m.Name == g.c.Name() {
			continue
		}
		out = append(out, PeerInfo{
			Name:        m.Name,
			Addr:        m.GRPCAddr,
			Sessions:    m.Load.Sessions,
			MaxSessions: m.Load.MaxSessions,
			Draining:    m.Load.Draining,
			CPU:         m.Load.CPU,
			Alive:       m.State == cluster.StateAlive && m.GRPCAddr != "",
		})
	}
	return out
}

// SetLoad publishes this MWS's load, with its CPU use, in its metadata. It
// never waits for gossip: a background publisher sends the newest load as
// soon as the previous update has gone out, so a burst of changes costs
// one or two updates, and a load that did not change (CPU within 5
// points) costs none.
func (g *Gossip) SetLoad(sessions, maxSessions int, draining bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.pending = cluster.Load{Sessions: sessions, MaxSessions: maxSessions, Draining: draining}
	g.dirty = true
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// SetDevice records in the cluster's directory that this MWS serves (or
// no longer serves) the user's device.
func (g *Gossip) SetDevice(user, device string, online bool) {
	if err := g.c.SetDevice(user, device, online); err != nil && !errors.Is(err, cluster.ErrClosed) {
		g.log.Warn("cluster: device directory update failed", "user", user, "device", device, "online", online, "error", err)
	}
}

// LookupDevice finds the MWS serving the user's device in the cluster's
// directory.
func (g *Gossip) LookupDevice(user, device string) (string, bool, bool) {
	e, ok := g.c.LookupDevice(user, device)
	return e.MWS, e.Online, ok
}

// Devices lists the user's devices in the cluster's directory.
func (g *Gossip) Devices(user string) []DeviceLocation {
	var out []DeviceLocation
	for name, e := range g.c.Devices(user) {
		out = append(out, DeviceLocation{Name: name, MWS: e.MWS, Online: e.Online, Updated: e.Updated})
	}
	return out
}

// publisher sends pending loads to the cluster one at a time.
func (g *Gossip) publisher() {
	defer g.done.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-g.wake:
		}
		g.mu.Lock()
		l, dirty := g.pending, g.dirty
		g.dirty = false
		g.mu.Unlock()
		if !dirty {
			continue
		}
		l.CPU = g.cpuUse()
		if g.published && sameLoad(l, g.last) {
			continue
		}
		g.last, g.published = l, true
		ctx, cancel := context.WithTimeout(context.Background(), gossipLoadWait)
		err := g.c.SetLoad(ctx, l)
		cancel()
		if err != nil && !errors.Is(err, cluster.ErrClosed) {
			// Mostly a broadcast that took longer than gossipLoadWait: the
			// update holds all the same.
			g.log.Debug("cluster: load update", "sessions", l.Sessions, "draining", l.Draining, "error", err)
		}
	}
}

// gossipCPUStep is the least change of CPU use that is worth an update on
// its own.
const gossipCPUStep = 0.05

// sameLoad reports whether a and b differ too little to tell peers.
func sameLoad(a, b cluster.Load) bool {
	return a.Sessions == b.Sessions && a.MaxSessions == b.MaxSessions && a.Draining == b.Draining &&
		math.Abs(a.CPU-b.CPU) < gossipCPUStep
}

// cpuUse returns the process's CPU use, sampled at most every
// gossipCPUEvery.
func (g *Gossip) cpuUse() float64 {
	if time.Since(g.cpuAt) >= gossipCPUEvery {
		g.cpuNow, g.cpuAt = g.cpu.Sample(), time.Now()
	}
	return g.cpuNow
}

// watch logs membership changes.
func (g *Gossip) watch(events <-chan cluster.Event) {
	defer g.done.Done()
	for ev := range events {
		m := ev.Member
		if m.Local {
			continue
		}
		attrs := []any{"member", m.Name, "grpc", m.GRPCAddr, "gossip", m.Addr}
		if ev.Missed > 0 {
			g.log.Warn("cluster: membership events dropped", "missed", ev.Missed)
		}
		switch ev.Kind {
		case cluster.EventJoin:
			g.log.Info("cluster: member joined", attrs...)
		case cluster.EventLeave:
			g.log.Info("cluster: member left", attrs...)
		case cluster.EventDead:
			g.log.Info("cluster: member failed", attrs...)
		case cluster.EventUpdate:
			g.log.Debug("cluster: member updated", append(attrs, "sessions", m.Load.Sessions,
				"max_sessions", m.Load.MaxSessions, "draining", m.Load.Draining, "cpu", m.Load.CPU)...)
		}
	}
}
