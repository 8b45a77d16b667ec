package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Cluster is this node's membership in the MWS cluster. Its methods are
// safe for concurrent use.
type Cluster struct {
	name     string
	instance uint64
	timing   Timing
	log      *slog.Logger

	ml      *memberlist.Memberlist
	members *members
	dir     *directory
	hub     *hub
	queue   *memberlist.TransmitLimitedQueue

	metaMu sync.Mutex
	meta   nodeMeta

	// closeMu is held for reading by calls that use memberlist, so Close
	// does not shut it down under them.
	closeMu sync.RWMutex
	closed  bool
}

// Start creates this node, binds its gossip port and joins the seeds,
// retrying with backoff (Config.JoinAttempts, while ctx allows). With no
// seeds it starts a cluster of one. It fails with ErrJoin if no seed
// accepts it, e.g. because they use another gossip key.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: invalid config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("mws", cfg.Name)
	c := &Cluster{
		name:     cfg.Name,
		instance: rand.Uint64() | 1, // never 0, which means "none"
		timing:   cfg.Timing,
		log:      logger,
		members:  newMembers(cfg.Name),
		hub:      newHub(cfg.EventBuffer),
	}
	c.meta = nodeMeta{instance: c.instance, version: 1, grpcAddr: cfg.GRPCAddr, load: cfg.Load}
	c.members.emit = c.hub.emit
	c.members.onMeta = func(name string, err error) {
		logger.Warn("cluster: undecodable member metadata", "member", name, "err", err)
	}
	c.dir = newDirectory(cfg.MaxDevices, c.members.serving)
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(c.members.alive.Load()) },
		RetransmitMult: cfg.Timing.RetransmitMult,
	}

	ml, err := c.create(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.ml = ml
	if err := c.join(ctx, cfg); err != nil {
		_ = ml.Shutdown()
		c.hub.close()
		return nil, err
	}
	logger.Info("cluster: started", "addr", c.Addr(), "members", ml.NumMembers())
	return c, nil
}

func (c *Cluster) create(cfg Config) (*memberlist.Memberlist, error) {
	t := cfg.Timing
	// With BindPort 0, memberlist binds TCP on a free port and then UDP on
	// the same one, retrying when UDP finds it taken.
	mlc := memberlist.DefaultLANConfig()
	mlc.Name = cfg.Name
	mlc.BindAddr, mlc.BindPort = cfg.BindAddr, cfg.BindPort
	mlc.AdvertiseAddr, mlc.AdvertisePort = cfg.AdvertiseAddr, cfg.AdvertisePort
	if mlc.AdvertisePort == 0 {
		mlc.AdvertisePort = cfg.BindPort
	}
	mlc.ProbeInterval, mlc.ProbeTimeout = t.ProbeInterval, t.ProbeTimeout
	mlc.SuspicionMult, mlc.SuspicionMaxTimeoutMult = t.SuspicionMult, t.SuspicionMaxTimeoutMult
	mlc.GossipInterval, mlc.GossipNodes = t.GossipInterval, t.GossipNodes
	mlc.RetransmitMult = t.RetransmitMult
	mlc.PushPullInterval = t.PushPullInterval
	mlc.TCPTimeout = t.TCPTimeout
	mlc.GossipToTheDeadTime = t.DeadTime
	// A restarted MWS may come back at another address (a new pod).
	mlc.DeadNodeReclaimTime = t.DeadTime
	if len(cfg.SecretKeys) > 0 {
		keys := make([][]byte, len(cfg.SecretKeys))
		for i, k := range cfg.SecretKeys {
			keys[i] = append([]byte(nil), k...)
		}
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, err
		}
		mlc.Keyring = kr
	}
	mlc.Delegate = delegate{c}
	mlc.Events = c.members
	mlc.Logger = newMemberlistLogger(c.log)
	return memberlist.Create(mlc)
}

func (c *Cluster) join(ctx context.Context, cfg Config) error {
	if len(cfg.Seeds) == 0 {
		return nil
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := c.ml.Join(cfg.Seeds)
		if n > 0 {
			return nil
		}
		c.log.Debug("cluster: join failed", "attempt", attempt, "err", err)
		if attempt >= cfg.JoinAttempts {
			return fmt.Errorf("%w: seeds %v: %v", ErrJoin, cfg.Seeds, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w (last error: %v)", ErrJoin, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Close leaves the cluster gracefully: it tells the peers it is leaving
// (they report it StateLeft, not StateDead), waits for the leave to be
// gossiped (bounded by ctx and Timing.BroadcastTimeout), then stops. Its
// directory entries read offline everywhere. Calling Close again does
// nothing.
func (c *Cluster) Close(ctx context.Context) error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	defer c.hub.close()
	timeout := c.opTimeout(ctx)
	c.sendLeaveNotices(timeout)
	var errs []error
	if err := c.ml.Leave(timeout); err != nil {
		errs = append(errs, fmt.Errorf("cluster: leave: %w", err))
	}
	if err := c.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: shutdown: %w", err))
	}
	return errors.Join(errs...)
}

// Abort stops gossip at once without leaving, as if the process had
// crashed: peers detect a failure and report this node StateDead. It is
// for failure drills and tests; use Close otherwise.
func (c *Cluster) Abort() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	defer c.hub.close()
	return c.ml.Shutdown()
}

// sendLeaveNotices tells every live peer over TCP, before memberlist's
// leave, that this run is leaving on purpose: memberlist reports a leave
// and a failure alike to its event delegate.
func (c *Cluster) sendLeaveNotices(timeout time.Duration) {
	msg := encodeLeave(c.name, c.instance)
	// Peers that TCP cannot reach may still hear it by gossip.
	c.queue.QueueBroadcast(&namedBroadcast{name: "l\x00" + c.name, msg: msg})
	var wg sync.WaitGroup
	for _, m := range c.members.list() {
		if m.Local || m.State != StateAlive {
			continue
		}
		host, port, err := net.SplitHostPort(m.Addr)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			continue
		}
		node := &memberlist.Node{Name: m.Name, Addr: net.ParseIP(host), Port: uint16(p)}
		wg.Go(func() {
			if err := c.ml.SendReliable(node, msg); err != nil {
				c.log.Debug("cluster: leave notice failed", "member", node.Name, "err", err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		// The sends end on their own within Timing.TCPTimeout.
	}
}

func (c *Cluster) opTimeout(ctx context.Context) time.Duration {
	t := c.timing.BroadcastTimeout
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, max(time.Until(dl), time.Millisecond))
	}
	return t
}

// Name returns this node's name.
func (c *Cluster) Name() string { return c.name }

// Addr returns this node's advertised gossip address ("host:port"), for
// other nodes' Config.Seeds.
func (c *Cluster) Addr() string {
	m, _ := c.members.get(c.name)
	return m.Addr
}

// SetLoad advertises this node's load (including Draining) in its
// metadata and waits, up to ctx's deadline or Timing.BroadcastTimeout,
// for the update to be gossiped. On a timeout error the update is still
// in effect and reaches peers by later gossip or push-pull.
func (c *Cluster) SetLoad(ctx context.Context, l Load) error {
	if err := l.validate(); err != nil {
		return fmt.Errorf("cluster: invalid load: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	c.metaMu.Lock()
	c.meta.load = l
	c.meta.version++
	c.metaMu.Unlock()
	if err := c.ml.UpdateNode(c.opTimeout(ctx)); err != nil {
		return fmt.Errorf("cluster: load update: %w", err)
	}
	return nil
}

func (c *Cluster) localMeta() nodeMeta {
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	return c.meta
}

// Members returns every known member, this node included, sorted by name.
// Dead and left members stay listed for an hour.
func (c *Cluster) Members() []Member { return c.members.list() }

// Member returns the member called name.
func (c *Cluster) Member(name string) (Member, bool) { return c.members.get(name) }

// LeastLoaded returns the alive, non-draining member with free capacity
// (Sessions < MaxSessions) and the lowest Sessions/MaxSessions, ties
// broken by name, skipping the names in exclude. It returns false if no
// member qualifies.
func (c *Cluster) LeastLoaded(exclude ...string) (Member, bool) {
	return leastLoaded(c.members.list(), exclude)
}

// Subscribe returns a channel of membership events and a function that
// ends the subscription and closes the channel (Close and Abort close it
// too). Events are never delayed by a slow reader: when the channel is
// full they are dropped and counted in the next event's Missed.
func (c *Cluster) Subscribe() (<-chan Event, func()) { return c.hub.subscribe() }

// SetDevice records, cluster-wide, that this MWS serves (online) or no
// longer serves (offline) the user's device. Every node learns it within a
// few gossip intervals. An offline report only withdraws this MWS's own
// claim: if the device has meanwhile moved to another MWS, lookups keep
// pointing there.
func (c *Cluster) SetDevice(user, device string, online bool) error {
	if !validID(user) || !validID(device) {
		return fmt.Errorf("%w: user %q device %q", ErrInvalidDevice, truncate(user), truncate(device))
	}
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	cl := claim{user: user, device: device, mws: c.name, instance: c.instance, ts: c.dir.clock.now(), online: online}
	changed, err := c.dir.merge(cl)
	if err != nil {
		return err
	}
	if changed {
		c.queueClaim(cl)
	}
	return nil
}

// LookupDevice returns where the user's device is served: the MWS with the
// newest claim among those that serve it now, else the last MWS that did
// (Online false). It returns false if no MWS ever reported the device.
func (c *Cluster) LookupDevice(user, device string) (DeviceEntry, bool) {
	return c.dir.lookup(user, device)
}

// Devices returns all known devices of the user, as LookupDevice would.
func (c *Cluster) Devices(user string) map[string]DeviceEntry {
	return c.dir.devices(user)
}

func validID(s string) bool {
	return s != "" && len(s) <= MaxIDBytes && utf8.ValidString(s)
}

func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	return strings.ToValidUTF8(s[:64], "") + "…"
}
