package netem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
)

// Network is one device's emulated access network. The device opens its
// connections with Dial (it fits clientlib.Config.Dialer; an
// http.Transport's DialContext takes it with the network argument
// dropped), and each reaches its address over a Link of the network's
// Config on loopback: the first connection to an address starts the Link
// to it, later ones reuse it. A new address — another MWS after a session
// moved there, say — gets its own Link of the same shape. All the links of
// a Network share one bottleneck per direction (rate, queue and jitter
// schedule), as all of a device's traffic shares its access link whatever
// it connects to; each Link counts its own bytes.
type Network struct {
	cfg      Config
	log      *slog.Logger
	up, down *bottleneck

	mu     sync.Mutex
	links  map[string]*Link
	order  []string // targets in the order their links started
	closed bool
}

// ErrNetworkClosed is returned by Dial after Close.
var ErrNetworkClosed = errors.New("netem: network closed")

// NewNetwork returns a Network whose links have the configuration cfg. log
// may be nil.
func NewNetwork(cfg Config, log *slog.Logger) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("netem: invalid configuration:\n%w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Network{
		cfg: cfg, log: log, up: newBottleneck(cfg.Seed), down: newBottleneck(cfg.Seed + 1),
		links: map[string]*Link{},
	}, nil
}

// Config is the configuration of the network's links.
func (n *Network) Config() Config { return n.cfg }

// Link returns the link to addr (host:port), starting it on first use.
func (n *Network) Link(addr string) (*Link, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrNetworkClosed
	}
	if l := n.links[addr]; l != nil {
		return l, nil
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netem: %w", err)
	}
	l, err := serve(lis, addr, n.cfg, n.log, n.up, n.down)
	if err != nil {
		return nil, err
	}
	n.links[addr] = l
	n.order = append(n.order, addr)
	return l, nil
}

// Dial connects to addr through the network: to the link in front of addr,
// which then dials addr itself. A target that refuses shows as a
// connection that the link closes at once (the Link counts a dial error).
func (n *Network) Dial(ctx context.Context, addr string) (net.Conn, error) {
	l, err := n.Link(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", l.Addr())
	if err != nil {
		return nil, fmt.Errorf("netem: dialing the link to %s: %w", addr, err)
	}
	return c, nil
}

// Targets returns the addresses the network has links to, in the order
// their links started.
func (n *Network) Targets() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.order)
}

// Stats returns the sums of the links' counters.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	links := make([]*Link, 0, len(n.links))
	for _, a := range n.order {
		links = append(links, n.links[a])
	}
	n.mu.Unlock()
	var sum Stats
	for _, l := range links {
		st := l.Stats()
		sum.Accepted += st.Accepted
		sum.Active += st.Active
		sum.DialErrors += st.DialErrors
		sum.Up.Bytes += st.Up.Bytes
		sum.Up.Segments += st.Up.Segments
		sum.Down.Bytes += st.Down.Bytes
		sum.Down.Segments += st.Down.Segments
	}
	return sum
}

// Close closes every link (and the connections through them); Dial fails
// afterwards with ErrNetworkClosed. Stats still reads the counters.
func (n *Network) Close() error {
	n.mu.Lock()
	n.closed = true
	links := make([]*Link, 0, len(n.links))
	for _, a := range n.order {
		links = append(links, n.links[a])
	}
	n.mu.Unlock()
	var errs []error
	for _, l := range links {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
