package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures one cluster member. See NewDefaultConfig for the
// defaults; Start validates it.
type Config struct {
	// Name is the node name: the MWS's name, unique in the cluster
	// (1-64 of [A-Za-z0-9._-]). A node that rejoins under the same name
	// replaces its earlier incarnation.
	Name string

	// BindAddr and BindPort are where gossip listens; memberlist uses the
	// same port for TCP (joins, state sync, leave notices) and UDP (probes,
	// gossip). BindPort 0 picks a port that is free for both protocols.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are the address peers use to reach
	// this node, for NAT. Empty: the bound address and port (with BindAddr
	// 0.0.0.0, a private address of this host). AdvertisePort 0: BindPort.
	// AdvertisePort needs AdvertiseAddr and an explicit BindPort.
	AdvertiseAddr string
	AdvertisePort int

	// Seeds are "host:port" gossip addresses of existing members to join.
	// Listing this node itself is harmless, so every node of a cluster may
	// be given the same list. Empty: start a new cluster alone.
	Seeds []string
	// JoinAttempts bounds the tries to reach the seeds (with backoff,
	// while Start's context allows) before Start gives up.
	JoinAttempts int

	// SecretKeys are the gossip encryption keys (AES-128/192/256: 16, 24
	// or 32 bytes). The first one encrypts; all of them decrypt. To rotate
	// without a restart of the whole cluster: add the new key second on
	// every node, then make it first on every node, then drop the old one.
	SecretKeys [][]byte
	// Insecure allows unencrypted, unauthenticated gossip when SecretKeys
	// is empty. Only for tests and trusted single-host setups.
	Insecure bool

	// GRPCAddr is this MWS's gRPC address for devices and peers ("host:port"),
	// carried in the node metadata.
	GRPCAddr string
	// Load is the load advertised at start; SetLoad changes it.
	Load Load

	// Timing sets probe, gossip and sync intervals: LANTiming (default)
	// or FastTiming (tests on one host).
	Timing Timing

	// MaxDevices bounds the device directory (entries of all nodes; one
	// entry per user, device and MWS that served it). When full, entries
	// that are offline are evicted oldest first; SetDevice fails with
	// ErrDirectoryFull when every entry is online.
	MaxDevices int
	// EventBuffer is the capacity of each subscription channel; events that
	// find it full are dropped and counted in the next Event's Missed.
	EventBuffer int

	// Logger receives this package's logs and memberlist's (nil: discard).
	Logger *slog.Logger
}

// Timing is the failure-detection and dissemination profile. Shorter
// intervals detect failures and spread updates sooner at the price of
// bandwidth and of false suspicions on a loaded host.
type Timing struct {
	// ProbeInterval is how often a node probes a random peer; ProbeTimeout
	// how long it waits for the ack (about the network's 99th-percentile
	// round trip) before asking others to probe indirectly.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult scales how long a suspected node has to refute before
	// it is declared dead: SuspicionMult × log10(nodes) × ProbeInterval,
	// stretched up to SuspicionMaxTimeoutMult times that while no other
	// node confirms the suspicion (as in a cluster of two).
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// GossipInterval is how often queued broadcasts (membership, load,
	// directory updates) are sent to GossipNodes random peers.
	GossipInterval time.Duration
	GossipNodes    int
	// RetransmitMult × log10(nodes+1) is how often each broadcast is sent.
	RetransmitMult int
	// PushPullInterval is how often a node syncs its full state (members and
	// the device directory) with a random peer over TCP: the anti-entropy
	// that repairs lost broadcasts.
	PushPullInterval time.Duration
	// TCPTimeout bounds dialing and each read/write of a TCP exchange.
	TCPTimeout time.Duration
	// DeadTime is how long memberlist keeps gossiping about a dead node.
	DeadTime time.Duration
	// BroadcastTimeout bounds how long SetLoad and Close wait for gossip to
	// carry an update or a leave, when their context has no earlier
	// deadline.
	BroadcastTimeout time.Duration
}

// LANTiming is memberlist's LAN profile: failures detected in a few
// seconds, full sync every 30 s.
func LANTiming() Timing {
	return timingFrom(memberlist.DefaultLANConfig(), 5*time.Second)
}

// FastTiming is for tests and demos on one host: memberlist's local profile
// with short intervals, so a dead node is detected in about a second and an
// update spreads in tens of milliseconds. Too aggressive for real networks.
func FastTiming() Timing {
	t := timingFrom(memberlist.DefaultLocalConfig(), 2*time.Second)
	t.ProbeInterval = 200 * time.Millisecond
	t.ProbeTimeout = 100 * time.Millisecond
	t.GossipInterval = 50 * time.Millisecond
	t.PushPullInterval = time.Second
	t.SuspicionMaxTimeoutMult = 2
	t.DeadTime = 2 * time.Second
	return t
}

func timingFrom(c *memberlist.Config, broadcast time.Duration) Timing {
	return Timing{
		ProbeInterval:           c.ProbeInterval,
		ProbeTimeout:            c.ProbeTimeout,
		SuspicionMult:           c.SuspicionMult,
		SuspicionMaxTimeoutMult: c.SuspicionMaxTimeoutMult,
		GossipInterval:          c.GossipInterval,
		GossipNodes:             c.GossipNodes,
		RetransmitMult:          c.RetransmitMult,
		PushPullInterval:        c.PushPullInterval,
		TCPTimeout:              c.TCPTimeout,
		DeadTime:                c.GossipToTheDeadTime,
		BroadcastTimeout:        broadcast,
	}
}

// NewDefaultConfig returns production defaults: bind 0.0.0.0:7946, LAN
// timing, no name, keys, gRPC address or seeds.
func NewDefaultConfig() Config {
	return Config{
		BindAddr:     "0.0.0.0",
		BindPort:     7946,
		JoinAttempts: 5,
		Timing:       LANTiming(),
		MaxDevices:   50000,
		EventBuffer:  256,
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// maxGRPCAddrBytes keeps the metadata well under memberlist.MetaMaxSize.
const maxGRPCAddrBytes = 255

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if !nameRE.MatchString(c.Name) {
		add("name %q: want 1-64 of [A-Za-z0-9._-]", c.Name)
	}
	if c.BindAddr == "" || net.ParseIP(c.BindAddr) == nil {
		add("bind address %q: want an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		add("bind port %d: want 0-65535", c.BindPort)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		add("advertise address %q: want an IP address", c.AdvertiseAddr)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		add("advertise port %d: want 0-65535", c.AdvertisePort)
	}
	if c.AdvertisePort != 0 && (c.BindPort == 0 || c.AdvertiseAddr == "") {
		add("advertise port %d needs an advertise address and an explicit bind port", c.AdvertisePort)
	}
	for _, s := range c.Seeds {
		if err := checkHostPort(s); err != nil {
			add("seed %q: %v", s, err)
		}
	}
	if c.JoinAttempts < 1 {
		add("join attempts %d: want at least 1", c.JoinAttempts)
	}
	switch {
	case len(c.SecretKeys) == 0 && !c.Insecure:
		add("no gossip key: set SecretKeys (or Insecure for unencrypted gossip)")
	case len(c.SecretKeys) > 0 && c.Insecure:
		add("Insecure set together with SecretKeys: choose one")
	}
	for i, k := range c.SecretKeys {
		if err := memberlist.ValidateKey(k); err != nil {
			add("secret key %d: %d bytes, want 16, 24 or 32", i, len(k))
		}
	}
	if err := checkHostPort(c.GRPCAddr); err != nil {
		add("gRPC address %q: %v", c.GRPCAddr, err)
	} else if len(c.GRPCAddr) > maxGRPCAddrBytes {
		add("gRPC address: %d bytes, want at most %d", len(c.GRPCAddr), maxGRPCAddrBytes)
	}
	if err := c.Load.validate(); err != nil {
		add("load: %v", err)
	}
	errs = append(errs, c.Timing.validate()...)
	if c.MaxDevices < 1 {
		add("max devices %d: want at least 1", c.MaxDevices)
	}
	if c.EventBuffer < 1 {
		add("event buffer %d: want at least 1", c.EventBuffer)
	}
	return errors.Join(errs...)
}

func (t Timing) validate() []error {
	var errs []error
	durs := []struct {
		name string
		d    time.Duration
	}{
		{"probe interval", t.ProbeInterval},
		{"probe timeout", t.ProbeTimeout},
		{"gossip interval", t.GossipInterval},
		{"push-pull interval", t.PushPullInterval},
		{"TCP timeout", t.TCPTimeout},
		{"dead time", t.DeadTime},
		{"broadcast timeout", t.BroadcastTimeout},
	}
	for _, d := range durs {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("timing: %s %v: want > 0", d.name, d.d))
		}
	}
	if t.ProbeTimeout > t.ProbeInterval {
		errs = append(errs, fmt.Errorf("timing: probe timeout %v exceeds probe interval %v", t.ProbeTimeout, t.ProbeInterval))
	}
	ints := []struct {
		name string
		n    int
	}{
		{"suspicion multiplier", t.SuspicionMult},
		{"suspicion max timeout multiplier", t.SuspicionMaxTimeoutMult},
		{"gossip nodes", t.GossipNodes},
		{"retransmit multiplier", t.RetransmitMult},
	}
	for _, n := range ints {
		if n.n < 1 {
			errs = append(errs, fmt.Errorf("timing: %s %d: want at least 1", n.name, n.n))
		}
	}
	return errs
}

func (l Load) validate() error {
	var errs []error
	if l.Sessions < 0 || l.Sessions > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("sessions %d: want 0-%d", l.Sessions, math.MaxInt32))
	}
	if l.MaxSessions < 0 || l.MaxSessions > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("max sessions %d: want 0-%d", l.MaxSessions, math.MaxInt32))
	}
	if !(l.CPU >= 0 && l.CPU <= 1) { // also rejects NaN
		errs = append(errs, fmt.Errorf("CPU %v: want 0-1", l.CPU))
	}
	return errors.Join(errs...)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("missing host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q: want 1-65535", port)
	}
	return nil
}
