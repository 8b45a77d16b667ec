package cluster

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's liveness as this node sees it.
type State int

const (
	// StateAlive: the member answers probes (or has not yet been found
	// failing).
	StateAlive State = iota
	// StateDead: memberlist's failure detector declared it failed; its
	// sessions need a new owner.
	StateDead
	// StateLeft: it announced its departure and left gracefully.
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Member is a snapshot of one cluster node.
type Member struct {
	// Name is the node (MWS) name.
	Name string
	// Addr is its gossip address ("host:port"), usable as a seed.
	Addr string
	// GRPCAddr is its device/peer gRPC address from its metadata (empty if
	// the metadata could not be decoded).
	GRPCAddr string
	State    State
	// Since is when this node saw State begin.
	Since time.Time
	// Load is its last advertised load (CPU at 1e-4 resolution).
	Load Load
	// Version counts its load updates; it restarts at 1 when the node does.
	Version uint64
	// Local is true for this node itself.
	Local bool
}

// deadRetention is how long dead and left members stay listed.
const deadRetention = time.Hour

type memberRec struct {
	Member
	instance uint64
	// leaving is the instance that announced a graceful leave, so the
	// failure that follows is reported as StateLeft.
	leaving uint64
}

// members is the membership table, fed by memberlist's event callbacks.
// Those run under memberlist's node lock, so mu is a leaf: nothing calls
// into memberlist while holding it.
type members struct {
	local  string
	mu     sync.RWMutex
	byName map[string]*memberRec
	alive  atomic.Int32
	emit   func(EventKind, Member) // called without mu, never blocks
	onMeta func(name string, err error)
}

func newMembers(local string) *members {
	return &members{local: local, byName: make(map[string]*memberRec)}
}

func (t *members) snapshot(n *memberlist.Node) *memberRec {
	rec := &memberRec{Member: Member{
		Name:  n.Name,
		Addr:  net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		Local: n.Name == t.local,
	}}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		if t.onMeta != nil {
			t.onMeta(n.Name, err)
		}
		return rec
	}
	rec.GRPCAddr = meta.grpcAddr
	rec.Load = meta.load
	rec.Version = meta.version
	rec.instance = meta.instance
	return rec
}

// NotifyJoin implements memberlist.EventDelegate.
func (t *members) NotifyJoin(n *memberlist.Node) {
	rec := t.snapshot(n)
	rec.State, rec.Since = StateAlive, time.Now()
	t.mu.Lock()
	if old, ok := t.byName[n.Name]; !ok || old.State != StateAlive {
		t.alive.Add(1)
	}
	t.byName[n.Name] = rec
	t.pruneLocked(rec.Since)
	t.mu.Unlock()
	t.emit(EventJoin, rec.Member)
}

// NotifyUpdate implements memberlist.EventDelegate.
func (t *members) NotifyUpdate(n *memberlist.Node) {
	rec := t.snapshot(n)
	t.mu.Lock()
	old, ok := t.byName[n.Name]
	if ok {
		rec.State, rec.Since, rec.leaving = old.State, old.Since, old.leaving
	} else {
		rec.State, rec.Since = StateAlive, time.Now()
		t.alive.Add(1)
	}
	t.byName[n.Name] = rec
	t.mu.Unlock()
	t.emit(EventUpdate, rec.Member)
}

// NotifyLeave implements memberlist.EventDelegate: memberlist calls it for
// failures and graceful leaves alike; a leave notice received beforehand
// tells them apart.
func (t *members) NotifyLeave(n *memberlist.Node) {
	rec := t.snapshot(n)
	now := time.Now()
	t.mu.Lock()
	old, ok := t.byName[n.Name]
	if ok {
		rec.leaving = old.leaving
		if old.State == StateAlive {
			t.alive.Add(-1)
		}
	}
	rec.State, rec.Since = StateDead, now
	if rec.Local || (rec.leaving != 0 && rec.leaving == rec.instance) {
		// The local node only ever sees itself leave through Close.
		rec.State = StateLeft
	}
	t.byName[n.Name] = rec
	t.mu.Unlock()
	kind := EventDead
	if rec.State == StateLeft {
		kind = EventLeave
	}
	t.emit(kind, rec.Member)
}

// noteLeaving records a peer's leave notice. A notice that arrives after
// the failure was reported only corrects the state (no second event).
func (t *members) noteLeaving(name string, instance uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec, ok := t.byName[name]
	if !ok || rec.instance != instance {
		return
	}
	rec.leaving = instance
	if rec.State == StateDead {
		rec.State = StateLeft
	}
}

func (t *members) pruneLocked(now time.Time) {
	for name, rec := range t.byName {
		if rec.State != StateAlive && now.Sub(rec.Since) > deadRetention {
			delete(t.byName, name)
		}
	}
}

func (t *members) list() []Member {
	t.mu.RLock()
	out := make([]Member, 0, len(t.byName))
	for _, rec := range t.byName {
		out = append(out, rec.Member)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (t *members) get(name string) (Member, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	rec, ok := t.byName[name]
	if !ok {
		return Member{}, false
	}
	return rec.Member, true
}

// serving reports whether the run instance of node name is alive: a
// directory entry it wrote is only online while it is.
func (t *members) serving(name string, instance uint64) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	rec, ok := t.byName[name]
	return ok && rec.State == StateAlive && rec.instance == instance
}

// leastLoaded implements Cluster.LeastLoaded.
func leastLoaded(ms []Member, exclude []string) (Member, bool) {
	var best Member
	found := false
	for _, m := range ms {
		l := m.Load
		if m.State != StateAlive || l.Draining || l.Sessions >= l.MaxSessions || slices.Contains(exclude, m.Name) {
			continue
		}
		if !found || lessLoaded(m, best) {
			best, found = m, true
		}
	}
	return best, found
}

// lessLoaded compares Sessions/MaxSessions exactly (cross-multiplied;
// both fit in 31 bits), ties broken by name.
func lessLoaded(a, b Member) bool {
	x := int64(a.Load.Sessions) * int64(b.Load.MaxSessions)
	y := int64(b.Load.Sessions) * int64(a.Load.MaxSessions)
	if x != y {
		return x < y
	}
	return a.Name < b.Name
}
