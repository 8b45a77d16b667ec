package mws

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// ClusterConfig configures how an MWS works with its peers. The zero
// Membership leaves the MWS alone: MASH, FASH, balancing and drain are then
// unavailable (FailedPrecondition, NO_PEERS).
type ClusterConfig struct {
	// Addr is this MWS's gRPC address as devices and peers reach it; it is
	// what a device is told when its session moves here.
	Addr string
	// PeerTLS is the client config for calls to peers (pki.ClientTLS with
	// this MWS's certificate, accepting only the MWS role).
	PeerTLS *tls.Config
	// Membership says who the peers are, how loaded, and where devices are
	// (a memberlist cluster, or StaticPeers).
	Membership Membership
	// TicketSecret, when set, makes this MWS encrypt TLS session tickets
	// with keys derived from it (rotated every TicketRotation), so that a
	// device whose session moves resumes TLS on any MWS with the same
	// secret, without a full handshake. At least 32 bytes.
	TicketSecret   []byte
	TicketRotation time.Duration

	// MoveTokenTTL is how long a device may take to follow its session to
	// another MWS with the move token.
	MoveTokenTTL time.Duration
	// MoveTimeout bounds one MASH, from asking the target to the stored
	// state.
	MoveTimeout time.Duration
	// MaxMoveBytes bounds the server objects shipped with one session (the
	// savepoint's objects first); MaxMoveObjects their number.
	MaxMoveBytes   int64
	MaxMoveObjects int
	// ForwardTTL is how long a moved session's forwarding record stays at
	// the source (its device is redirected while it lasts).
	ForwardTTL time.Duration

	// DenyAbove makes this MWS deny incoming moves while it holds at least
	// this fraction of MaxSessions (0..1].
	DenyAbove float64
	// OverloadAbove starts moving sessions to the least loaded peer when
	// this MWS holds more than this fraction of MaxSessions, until it is
	// at OverloadTarget (0 turns overload moves off). BalanceInterval is
	// how often it checks.
	OverloadAbove   float64
	OverloadTarget  float64
	BalanceInterval time.Duration
	// AdmissionSlack: a new session is placed on the least loaded peer
	// when this MWS holds more than that peer's sessions plus this many (0
	// turns admission balancing off).
	AdmissionSlack int
	// BetterPath decides MASH by the device's measured round-trip times
	// (nil: never). It must not block.
	BetterPath PathPolicy
	// DrainGrace bounds the wait, after a drain moved every session, for
	// devices to follow before the MWS stops.
	DrainGrace time.Duration
	// Replicas is how many peers keep a replica of each session (its
	// record, streams, savepoint and the savepoint's objects), so that it
	// survives this MWS's failure: a savepoint is acknowledged only once
	// they hold it. 0 turns replication off; without live peers there is
	// nothing to replicate to.
	Replicas int
	// OnDrained is called after an operator's drain with exit set (the
	// binary stops the process).
	OnDrained func()
}

// PathPolicy picks a better MWS for a device from its measured round-trip
// times to each MWS (by name; here is this MWS's name). It returns the
// target and true to move the device's sessions there.
type PathPolicy func(here string, rtts map[string]time.Duration) (string, bool)

// RTTPolicy moves a device when another MWS's round-trip time is below
// ratio times this one's and at least minGain shorter.
func RTTPolicy(ratio float64, minGain time.Duration) PathPolicy {
	return func(here string, rtts map[string]time.Duration) (string, bool) {
		cur, ok := rtts[here]
		if !ok {
			return "", false
		}
		best, bestRTT := "", cur
		names := make([]string, 0, len(rtts))
		for n := range rtts {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			if r := rtts[n]; n != here && r < bestRTT {
				best, bestRTT = n, r
			}
		}
		if best == "" || float64(bestRTT) > ratio*float64(cur) || cur-bestRTT < minGain {
			return "", false
		}
		return best, true
	}
}

// NewDefaultClusterConfig returns the defaults (no membership).
func NewDefaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		TicketRotation:  time.Hour,
		MoveTokenTTL:    2 * time.Minute,
		MoveTimeout:     30 * time.Second,
		MaxMoveBytes:    64 << 20,
		MaxMoveObjects:  4096,
		ForwardTTL:      10 * time.Minute,
		DenyAbove:       0.95,
		OverloadTarget:  0.7,
		BalanceInterval: 5 * time.Second,
		DrainGrace:      10 * time.Second,
		Replicas:        1,
	}
}

// Validate reports every problem at once.
func (c ClusterConfig) Validate() error {
	var errs []error
	if c.Membership != nil && (c.Addr == "" || c.PeerTLS == nil) {
		errs = append(errs, errors.New("with a membership, Addr and PeerTLS are required"))
	}
	if len(c.TicketSecret) > 0 && len(c.TicketSecret) < 32 {
		errs = append(errs, fmt.Errorf("TicketSecret: %d bytes, want at least 32", len(c.TicketSecret)))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"TicketRotation", c.TicketRotation}, {"MoveTokenTTL", c.MoveTokenTTL}, {"MoveTimeout", c.MoveTimeout},
		{"ForwardTTL", c.ForwardTTL}, {"BalanceInterval", c.BalanceInterval}, {"DrainGrace", c.DrainGrace}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: want > 0", d.name, d.v))
		}
	}
	if c.MaxMoveBytes < 1 || c.MaxMoveObjects < 1 {
		errs = append(errs, fmt.Errorf("MaxMoveBytes %d, MaxMoveObjects %d: want at least 1", c.MaxMoveBytes, c.MaxMoveObjects))
	}
	if c.DenyAbove <= 0 || c.DenyAbove > 1 {
		errs = append(errs, fmt.Errorf("DenyAbove %v: want in (0, 1]", c.DenyAbove))
	}
	if c.OverloadAbove < 0 || c.OverloadAbove > 1 || (c.OverloadAbove > 0 && (c.OverloadTarget <= 0 || c.OverloadTarget >= c.OverloadAbove)) {
		errs = append(errs, fmt.Errorf("OverloadAbove %v, OverloadTarget %v: want 0 <= target < above <= 1 (above 0 = off)", c.OverloadAbove, c.OverloadTarget))
	}
	if c.Replicas < 0 || c.Replicas > 3 {
		errs = append(errs, fmt.Errorf("Replicas %d: want 0 to 3", c.Replicas))
	}
	if c.AdmissionSlack < 0 {
		errs = append(errs, fmt.Errorf("AdmissionSlack %d: want >= 0", c.AdmissionSlack))
	}
	return errors.Join(errs...)
}

// PeerInfo is what membership knows of an MWS.
type PeerInfo struct {
	Name        string
	Addr        string
	Sessions    int
	MaxSessions int
	Draining    bool
	Alive       bool
	// CPU is the share of the peer's machine its process uses (0-1),
	// when membership carries it.
	CPU float64
}

// load is the fraction of its session limit the peer holds.
func (p PeerInfo) load() float64 {
	if p.MaxSessions <= 0 {
		return 0
	}
	return float64(p.Sessions) / float64(p.MaxSessions)
}

// Membership is the MWS's view of its cluster. Implementations are safe for
// concurrent use and must not block for long.
type Membership interface {
	// Peers returns the other MWSs (not this one).
	Peers() []PeerInfo
	// SetLoad publishes this MWS's load.
	SetLoad(sessions, maxSessions int, draining bool)
	// SetDevice publishes that this MWS serves device of user, online or
	// not; LookupDevice finds the MWS serving a device.
	SetDevice(user, device string, online bool)
	LookupDevice(user, device string) (mws string, online bool, ok bool)
	// Devices lists the user's devices the directory knows, in any order.
	Devices(user string) []DeviceLocation
}

// DeviceLocation is where the cluster's directory places a device.
type DeviceLocation struct {
	Name    string
	MWS     string // serving it, or the last one that did
	Online  bool
	Updated time.Time
}

// leastLoaded returns the alive, not draining peer with the lowest load,
// skipping exclude.
func leastLoaded(peers []PeerInfo, exclude ...string) (PeerInfo, bool) {
	var best PeerInfo
	found := false
	for _, p := range peers {
		if !p.Alive || p.Draining || slices.Contains(exclude, p.Name) {
			continue
		}
		if !found || p.load() < best.load() || (p.load() == best.load() && strings.Compare(p.Name, best.Name) < 0) {
			best, found = p, true
		}
	}
	return best, found
}

// StaticPeers is a Membership with a fixed list of peers and a directory
// kept in memory, shared by every MWS given the same value: for one
// process (the testbed) or a cluster without gossip. Load is the
// published one.
type StaticPeers struct {
	mu      sync.Mutex
	peers   map[string]*PeerInfo
	devices map[[2]string]staticDevice
}

type staticDevice struct {
	mws     string
	online  bool
	updated time.Time
}

// NewStaticPeers returns an empty static membership.
func NewStaticPeers() *StaticPeers {
	return &StaticPeers{peers: map[string]*PeerInfo{}, devices: map[[2]string]staticDevice{}}
}

// Add lists an MWS by name and address.
func (s *StaticPeers) Add(name, addr string) {
	s.mu.Lock()
	s.peers[name] = &PeerInfo{Name: name, Addr: addr, Alive: true}
	s.mu.Unlock()
}

// SetAlive marks an MWS alive or gone.
func (s *StaticPeers) SetAlive(name string, alive bool) {
	s.mu.Lock()
	if p := s.peers[name]; p != nil {
		p.Alive = alive
	}
	s.mu.Unlock()
}

// For returns the membership as the MWS name sees it.
func (s *StaticPeers) For(name string) Membership { return staticView{s, name} }

type staticView struct {
	s    *StaticPeers
	self string
}

func (v staticView) Peers() []PeerInfo {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	var out []PeerInfo
	for n, p := range v.s.peers {
		if n != v.self {
			out = append(out, *p)
		}
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (v staticView) SetLoad(sessions, maxSessions int, draining bool) {
	v.s.mu.Lock()
	if p := v.s.peers[v.self]; p != nil {
		p.Sessions, p.MaxSessions, p.Draining = sessions, maxSessions, draining
	}
	v.s.mu.Unlock()
}

func (v staticView) SetDevice(user, device string, online bool) {
	v.s.mu.Lock()
	k := [2]string{user, device}
	if online || v.s.devices[k].mws == v.self {
		v.s.devices[k] = staticDevice{mws: v.self, online: online, updated: time.Now()}
	}
	v.s.mu.Unlock()
}

func (v staticView) Devices(user string) []DeviceLocation {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	var out []DeviceLocation
	for k, d := range v.s.devices {
		if k[0] == user {
			out = append(out, DeviceLocation{Name: k[1], MWS: d.mws, Online: d.online, Updated: d.updated})
		}
	}
	return out
}

func (v staticView) LookupDevice(user, device string) (string, bool, bool) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	d, ok := v.s.devices[[2]string{user, device}]
	return d.mws, d.online, ok
}
