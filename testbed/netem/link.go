package netem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Link is a running emulated link: connections accepted on its address are
// relayed to its target through the configured shapes. Create it with
// Listen, stop it with Close.
type Link struct {
	lis    net.Listener
	target string
	log    *slog.Logger
	cfg    atomic.Pointer[Config]
	up     *direction
	down   *direction

	accepted   atomic.Int64
	dialErrors atomic.Int64

	mu     sync.Mutex
	conns  map[*relay]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Stats are a link's counters.
type Stats struct {
	// Accepted counts client connections; Active those relayed now;
	// DialErrors those the target refused.
	Accepted, Active, DialErrors int64
	// Up and Down count what each direction delivered.
	Up, Down DirStats
}

// DirStats count one direction's delivered bytes.
type DirStats struct {
	// Bytes were written to the receiving side; Segments is how many
	// writes that took.
	Bytes, Segments int64
}

// Listen starts a link on addr (e.g. "127.0.0.1:0") in front of target.
// log may be nil.
func Listen(addr, target string, cfg Config, log *slog.Logger) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("netem: invalid configuration:\n%w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netem: %w", err)
	}
	return Serve(lis, target, cfg, log)
}

// Serve starts a link that accepts on lis (which it then owns) and relays
// to target.
func Serve(lis net.Listener, target string, cfg Config, log *slog.Logger) (*Link, error) {
	return serve(lis, target, cfg, log, newBottleneck(cfg.Seed), newBottleneck(cfg.Seed+1))
}

// serve starts a link whose directions go through the bottlenecks up and
// down, which other links may share.
func serve(lis net.Listener, target string, cfg Config, log *slog.Logger, up, down *bottleneck) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("netem: invalid configuration:\n%w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Link{
		lis: lis, target: target, log: log.With("link", lis.Addr().String(), "target", target),
		up: &direction{bottleneck: up}, down: &direction{bottleneck: down}, conns: map[*relay]struct{}{},
	}
	l.cfg.Store(&cfg)
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Addr is the address clients dial.
func (l *Link) Addr() string { return l.lis.Addr().String() }

// Target is the address the link relays to.
func (l *Link) Target() string { return l.target }

// Config returns the link's current configuration.
func (l *Link) Config() Config { return *l.cfg.Load() }

// SetConfig changes the link's shapes; open connections follow from their
// next segment on (a network that changes under a running session).
// ReadBuffer applies to new connections only.
func (l *Link) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("netem: invalid configuration:\n%w", err)
	}
	l.cfg.Store(&cfg)
	return nil
}

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	active := int64(len(l.conns))
	l.mu.Unlock()
	return Stats{
		Accepted: l.accepted.Load(), Active: active, DialErrors: l.dialErrors.Load(),
		Up:   DirStats{Bytes: l.up.bytes.Load(), Segments: l.up.segments.Load()},
		Down: DirStats{Bytes: l.down.bytes.Load(), Segments: l.down.segments.Load()},
	}
}

// Close stops accepting, closes every relayed connection (both sides) and
// waits for the relay's goroutines.
func (l *Link) Close() error {
	err := l.lis.Close()
	l.mu.Lock()
	l.closed = true
	for r := range l.conns {
		r.abort()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		c, err := l.lis.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.log.Warn("netem: accept", "error", err)
			}
			return
		}
		l.accepted.Add(1)
		l.wg.Add(1)
		go l.relay(c)
	}
}

// relay dials the target for client and relays between them.
func (l *Link) relay(client net.Conn) {
	defer l.wg.Done()
	cfg := l.Config()
	setReadBuffer(client, cfg.ReadBuffer)
	d := net.Dialer{Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{client: client, cancelDial: cancel}
	if !l.track(r) {
		cancel()
		_ = client.Close()
		return
	}
	defer l.untrack(r)
	target, err := d.DialContext(ctx, "tcp", l.target)
	cancel()
	if err != nil {
		l.dialErrors.Add(1)
		l.log.Debug("netem: dialing the target", "error", err)
		_ = client.Close()
		return
	}
	setReadBuffer(target, cfg.ReadBuffer)
	if !r.setTarget(target) {
		_ = target.Close()
		_ = client.Close()
		return
	}
	up := newPipe(l, l.up, func(c *Config) Shape { return c.Up }, client, target, r)
	down := newPipe(l, l.down, func(c *Config) Shape { return c.Down }, target, client, r)
	var wg sync.WaitGroup
	for _, p := range []*pipe{up, down} {
		wg.Add(2)
		go func() { defer wg.Done(); p.read() }()
		go func() { defer wg.Done(); p.write() }()
	}
	wg.Wait()
	_ = client.Close()
	_ = target.Close()
}

func (l *Link) track(r *relay) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[r] = struct{}{}
	return true
}

func (l *Link) untrack(r *relay) {
	l.mu.Lock()
	delete(l.conns, r)
	l.mu.Unlock()
}

// relay is one client connection and its target connection.
type relay struct {
	client     net.Conn
	cancelDial context.CancelFunc

	mu      sync.Mutex
	target  net.Conn
	aborted bool
	pipes   []*pipe
}

func (r *relay) setTarget(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = c
	return !r.aborted
}

func (r *relay) addPipe(p *pipe) {
	r.mu.Lock()
	r.pipes = append(r.pipes, p)
	aborted := r.aborted
	r.mu.Unlock()
	if aborted {
		p.stop()
	}
}

// abort closes both connections at once: the link is closing, or one side
// failed.
func (r *relay) abort() {
	r.mu.Lock()
	if r.aborted {
		r.mu.Unlock()
		return
	}
	r.aborted = true
	pipes := r.pipes
	target := r.target
	r.mu.Unlock()
	r.cancelDial()
	_ = r.client.Close()
	if target != nil {
		_ = target.Close()
	}
	for _, p := range pipes {
		p.stop()
	}
}

// direction is what one direction of a link shares across its connections:
// the bottleneck (its own, or one shared with the other links of a
// Network) and the link's counters.
type direction struct {
	*bottleneck

	bytes, segments atomic.Int64
}

// bottleneck is the schedule of one direction's access link.
type bottleneck struct {
	mu        sync.Mutex
	busyUntil time.Time // when the bottleneck has sent everything given to it
	rng       *rand.Rand
}

func newBottleneck(seed uint64) *bottleneck {
	return &bottleneck{rng: rand.New(rand.NewPCG(seed, 0x6e6574656d))}
}

// schedule gives n bytes to the bottleneck at now. It returns when they
// leave it (done), when the sender may be read from again (the bottleneck
// queue is back under its limit), and their share of jitter.
func (d *bottleneck) schedule(sh Shape, n int, now time.Time) (done, resume time.Time, jitter time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sh.Jitter > 0 {
		jitter = time.Duration(d.rng.Int64N(int64(sh.Jitter)))
	}
	if sh.Rate <= 0 {
		return now, now, jitter
	}
	start := now
	if d.busyUntil.After(start) {
		start = d.busyUntil
	}
	done = start.Add(bytesTime(n, sh.Rate))
	d.busyUntil = done
	return done, done.Add(-bytesTime(sh.queue(), sh.Rate)), jitter
}

// bytesTime is how long n bytes take at rate bytes/s.
func bytesTime(n int, rate int64) time.Duration {
	return time.Duration(float64(n) / float64(rate) * float64(time.Second))
}

func readBuffer(n int) int {
	if n == 0 {
		return DefaultReadBuffer
	}
	return n
}

func setReadBuffer(c net.Conn, n int) {
	if n = readBuffer(n); n <= 0 {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(n)
	}
}
