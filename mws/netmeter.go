package mws

import (
	"bytes"
	"container/list"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/profiles"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// The MWS measures each device's network on the device's own connection
// and adapts for what it measures, not only for what the device declared
// at login (the paper's network profile "changes over time").
//
// Round-trip time: the MWS pushes a Probe{seq} on the device's Events
// channel as it opens and every Config.ProbeInterval; the device answers
// ProbeReply(seq) at once, and RTT = reply arrival − probe publication. The
// seq is random, so a device cannot answer a probe before it has it. A
// probe travels behind whatever bulk data is queued on the connection, so
// a sample taken during a download includes queueing delay: the RTT used
// for decisions is the minimum of the last rttWindow samples (as BBR's
// min_rtt does, it tracks the path, not its load); SRTT, their EWMA with
// weight 1/8 (RFC 6298), includes the load.
//
// Goodput: while the MWS sends a device a large body (a Get of an object it
// holds, a raw stream whose mux queue is backed up), a sampler reads the
// kernel's TCP_INFO of the device's connection every goodputTick and takes
// the rate at which the peer acknowledges bytes (tcpi_bytes_acked), from
// the first acknowledgement of the transfer until the body's bytes are all
// acknowledged (a raw stream: until it ends), counting only stretches in
// which the sender had bytes waiting. It does not time the sends: a Send
// returns once gRPC has the bytes, and the HTTP/2 window plus the socket
// buffer swallow a whole object at once, so the sampling outlives the call.
// Acknowledgements come only as fast as the path drains the bytes, or as
// the device's window updates let gRPC send more — both paced by the slow
// link. The kernel's own tcpi_rtt and tcpi_delivery_rate are not used:
// behind a TCP relay (a proxy, the testbed's user-space link emulator) they
// describe the hop to the relay only, microseconds and gigabytes per
// second. Buffers along the path that fill at once (the initial burst, or
// gRPC's BDP estimator growing the window mid-transfer) make a short
// transfer look faster than the link, by at most their size over the span:
// a sample needs at least minGoodputBytes over minGoodputSpan, and the
// current value is the EWMA (weight 1/4) of the samples. Without TCP_INFO
// (not Linux, not a TCP listener) there is no goodput sample.
//
// Decisions: once a device has a goodput sample, the network profiles it
// declared at login are replaced (not merged) by a live one — bandwidth =
// goodput, latency = RTT, save-data kept from the declared profiles — and
// merged with its other profiles as at login, so the byte budget becomes
// live bandwidth × the user's patience. Replaced, because the declared
// profile is the nominal link (a modem's 56 kbit/s) and the measurement is
// what the device gets now, which may be better or worse. The live values
// are quantized to half-octave buckets (each bucket's lower edge, so the
// budget errs small) with 10% hysteresis, so that the variant cache, keyed
// by the constraints' digest, sees a new key only when the link really
// changes. A measurement older than netSampleTTL is forgotten and the
// declared profile applies again.

// Bounds and constants of the meter.
const (
	// maxOutstandingProbes bounds a device's unanswered probes; the oldest
	// is forgotten first.
	maxOutstandingProbes = 4
	// probeTTL is how long a probe may be answered.
	probeTTL = time.Minute
	// maxNetDevices bounds the devices measured; the least recently
	// measured is forgotten first.
	maxNetDevices = 1 << 16
	// rttWindow is how many recent RTT samples the minimum is taken over.
	rttWindow = 8
	// minGoodputBytes and minGoodputSpan are the least acknowledged bytes
	// and time a goodput sample spans.
	minGoodputBytes = 64 << 10
	minGoodputSpan  = 50 * time.Millisecond
	// goodputTick is how often a transfer's connection is sampled;
	// maxGoodputWait bounds the sampling of one transfer.
	goodputTick    = 10 * time.Millisecond
	maxGoodputWait = 2 * time.Minute
	// netSampleTTL is how long a measurement stays current without a new
	// sample.
	netSampleTTL = 10 * time.Minute
	// bucketHysteresis is how far (as a factor) a value must leave its
	// bucket before the bucket changes.
	bucketHysteresis = 1.1
)

// NetSample is a device's network as its MWS measures it.
type NetSample struct {
	// RTT is the smallest of the recent probe round trips (the path's);
	// SRTT their EWMA (load included). Zero until a probe was answered.
	RTT, SRTT time.Duration
	// GoodputBPS is the EWMA of the device's goodput, bits per second;
	// zero until a transfer was large enough to measure.
	GoodputBPS int64
	// BandwidthBPS and Latency are the quantized GoodputBPS and RTT that
	// adaptation uses (the live network profile).
	BandwidthBPS int64
	Latency      time.Duration
	// Probes and Transfers count the samples taken.
	Probes, Transfers int64
	// Updated is when the last sample was taken.
	Updated time.Time
}

// NetworkOf returns the current measurement of device's network, if there
// is one.
func (s *Server) NetworkOf(device string) (NetSample, bool) {
	return s.netmeter.sample(device)
}

// netMeter holds every measured device's samples and the connections the
// MWS serves, by remote address.
type netMeter struct {
	interval time.Duration
	log      *slog.Logger
	publish  func(device string, ev *mwsv1.Event) bool
	now      func() time.Time

	mu      sync.Mutex
	devices map[string]*netDevice
	lru     *list.List // of *netDevice, most recently measured first
	conns   map[string]*meteredConn
}

type netDevice struct {
	name string
	elem *list.Element

	probes  []sentProbe // unanswered, oldest first
	rtts    []time.Duration
	srtt    time.Duration
	rttAt   time.Time
	goodput float64 // bytes/s
	gpAt    time.Time
	bw, lat bucket
	nProbes int64
	nXfers  int64

	// live caches the constraints merged for the current bandwidth bucket
	// from the profile documents docs.
	live     profiles.Constraints
	liveBW   int64
	liveDocs [][]byte
}

type sentProbe struct {
	seq  uint64
	sent time.Time
}

func newNetMeter(interval time.Duration, publish func(string, *mwsv1.Event) bool, log *slog.Logger) *netMeter {
	return &netMeter{
		interval: interval, log: log, publish: publish, now: time.Now,
		devices: map[string]*netDevice{}, lru: list.New(), conns: map[string]*meteredConn{},
	}
}

// device returns device's entry, creating it (and forgetting the least
// recently measured device if the table is full). m.mu is held.
func (m *netMeter) device(name string) *netDevice {
	d := m.devices[name]
	if d == nil {
		if len(m.devices) >= maxNetDevices {
			old := m.lru.Remove(m.lru.Back()).(*netDevice)
			delete(m.devices, old.name)
		}
		d = &netDevice{name: name}
		d.elem = m.lru.PushFront(d)
		m.devices[name] = d
	}
	return d
}

func (m *netMeter) touch(d *netDevice) { m.lru.MoveToFront(d.elem) }

// startProbes probes device now and every interval until the returned
// function is called (when its Events channel ends).
func (m *netMeter) startProbes(device string) (stop func()) {
	if m.interval <= 0 {
		return func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(m.interval)
		defer t.Stop()
		for {
			m.sendProbe(device)
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-exited }
}

// sendProbe publishes a probe on device's Events channel.
func (m *netMeter) sendProbe(device string) {
	seq := rand.Uint64() | 1 // never 0, the proto's "unset"
	m.mu.Lock()
	d := m.device(device)
	if len(d.probes) >= maxOutstandingProbes {
		d.probes = slices.Delete(d.probes, 0, 1)
	}
	now := m.now()
	d.probes = append(d.probes, sentProbe{seq: seq, sent: now})
	m.mu.Unlock()
	ev := &mwsv1.Event{UnixNano: now.UnixNano(), Msg: &mwsv1.Event_Probe{Probe: &mwsv1.Probe{Seq: seq}}}
	if !m.publish(device, ev) {
		m.forgetProbe(device, seq)
	}
}

func (m *netMeter) forgetProbe(device string, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d := m.devices[device]; d != nil {
		d.probes = slices.DeleteFunc(d.probes, func(p sentProbe) bool { return p.seq == seq })
	}
}

// ProbeReply takes a device's answer to a Probe. A seq that is not an
// unanswered probe of this device younger than probeTTL (answered
// already, forgotten, or another device's) is InvalidArgument
// UNKNOWN_PROBE and changes nothing: a device may ignore that error.
func (d *deviceService) ProbeReply(ctx context.Context, req *mwsv1.ProbeReplyRequest) (*mwsv1.ProbeReplyResponse, error) {
	device := principalFrom(ctx).device
	if !d.s.netmeter.reply(device, req.GetSeq()) {
		return nil, rpcerr.New(codes.InvalidArgument, "UNKNOWN_PROBE", "probe %d is not an unanswered probe of device %q (answered, expired or never sent)", req.GetSeq(), device)
	}
	return &mwsv1.ProbeReplyResponse{}, nil
}

// reply records the round trip of device's probe seq.
func (m *netMeter) reply(device string, seq uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devices[device]
	if d == nil {
		return false
	}
	i := slices.IndexFunc(d.probes, func(p sentProbe) bool { return p.seq == seq })
	if i < 0 {
		return false
	}
	now := m.now()
	rtt := now.Sub(d.probes[i].sent)
	// Older probes were lost or are late: their answers no longer count.
	d.probes = slices.Delete(d.probes, 0, i+1)
	if rtt > probeTTL || rtt < 0 {
		return false
	}
	d.addRTT(rtt, now)
	m.touch(d)
	return true
}

func (d *netDevice) addRTT(rtt time.Duration, now time.Time) {
	if len(d.rtts) == rttWindow {
		d.rtts = slices.Delete(d.rtts, 0, 1)
	}
	d.rtts = append(d.rtts, rtt)
	if d.srtt == 0 {
		d.srtt = rtt
	} else {
		d.srtt += (rtt - d.srtt) / 8
	}
	d.lat.update(float64(slices.Min(d.rtts)), float64(time.Millisecond))
	d.rttAt = now
	d.nProbes++
}

// addGoodput records a goodput sample in bytes/s.
func (m *netMeter) addGoodput(device string, rate float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.device(device)
	now := m.now()
	if d.goodput == 0 || now.Sub(d.gpAt) > netSampleTTL {
		d.goodput = rate
	} else {
		d.goodput += (rate - d.goodput) / 4
	}
	d.bw.update(d.goodput*8, 1000)
	d.gpAt = now
	d.nXfers++
	m.touch(d)
	m.log.Debug("goodput sample", "device", device, "bps", int64(rate*8), "ewma_bps", int64(d.goodput*8), "bucket_bps", d.bw.value)
}

// sample returns device's current measurement.
func (m *netMeter) sample(device string) (NetSample, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devices[device]
	if d == nil {
		return NetSample{}, false
	}
	now := m.now()
	var s NetSample
	if len(d.rtts) > 0 && now.Sub(d.rttAt) <= netSampleTTL {
		s.RTT, s.SRTT, s.Latency, s.Probes = slices.Min(d.rtts), d.srtt, time.Duration(d.lat.value), d.nProbes
		s.Updated = d.rttAt
	}
	if d.gpAt != (time.Time{}) && now.Sub(d.gpAt) <= netSampleTTL {
		s.GoodputBPS, s.BandwidthBPS, s.Transfers = int64(d.goodput*8), int64(d.bw.value), d.nXfers
		if d.gpAt.After(s.Updated) {
			s.Updated = d.gpAt
		}
	}
	return s, s.Probes > 0 || s.Transfers > 0
}

// bucket quantizes a positive value to the lower edges of half-octave
// buckets above unit, with hysteresis.
type bucket struct {
	k     int
	value float64 // the bucket's lower edge; 0 before the first update
}

func (b *bucket) update(v, unit float64) {
	if v <= 0 {
		return
	}
	k := int(math.Floor(2 * math.Log2(max(v/unit, 1))))
	edge := func(k int) float64 { return unit * math.Pow(2, float64(k)/2) }
	if b.value > 0 && k != b.k && v >= edge(b.k)/bucketHysteresis && v < edge(b.k+1)*bucketHysteresis {
		return
	}
	b.k, b.value = k, math.Round(edge(k))
}

// liveConstraints returns the constraints for device: declared (from its
// login profiles) until the MWS has measured its goodput, then those
// profiles merged with the live network profile in place of the declared
// one.
func (s *Server) liveConstraints(device string, declared profiles.Constraints) profiles.Constraints {
	m := s.netmeter
	smp, ok := m.sample(device)
	if !ok || smp.BandwidthBPS <= 0 {
		return declared
	}
	docs := s.deviceDocs(device)
	m.mu.Lock()
	d := m.devices[device]
	if d != nil && d.liveBW == smp.BandwidthBPS && slices.EqualFunc(d.liveDocs, docs, bytes.Equal) {
		c := d.live
		m.mu.Unlock()
		return c
	}
	m.mu.Unlock()

	ps, err := loginProfiles(docs, max(len(docs), 1))
	if err != nil || len(docs) == 0 {
		return declared
	}
	live := &profiles.Profile{Kind: profiles.KindNetwork, Name: "live-network", Network: &profiles.Network{
		BandwidthBPS: min(smp.BandwidthBPS, profiles.MaxBandwidthBPS),
		Latency:      min(smp.Latency, profiles.MaxLatency),
	}}
	ps = slices.DeleteFunc(ps, func(p *profiles.Profile) bool {
		if p.Kind == profiles.KindNetwork {
			live.Network.SaveData = live.Network.SaveData || p.Network.SaveData
			return true
		}
		return false
	})
	c, err := profiles.Merge(append(ps, live)...)
	if err != nil {
		s.log.Warn("merging the live network profile", "device", device, "error", err)
		return declared
	}
	m.mu.Lock()
	if d := m.devices[device]; d != nil {
		d.live, d.liveBW, d.liveDocs = c, smp.BandwidthBPS, docs
	}
	m.mu.Unlock()
	return c
}

// sendingBody samples the goodput of the connection of ctx's call while
// the n bytes of a body handed to gRPC reach the device: until the peer
// has acknowledged n more bytes, the transfer ends on the connection, or
// maxGoodputWait passes. It returns at once. A Send returns long before
// its bytes are delivered, so the sampling outlives the call; the sender
// is backlogged throughout (the body is in memory).
func (m *netMeter) sendingBody(ctx context.Context, device string, n int) {
	if n < minGoodputBytes {
		return
	}
	c, acked, ok := m.connOf(ctx)
	if !ok {
		return
	}
	// One sampler per connection: concurrent bodies share its acknowledged
	// bytes, so a body sent while one runs queues behind it and extends it.
	for {
		cur := c.bodyTarget.Load()
		if c.bodyTarget.CompareAndSwap(cur, max(cur, acked)+uint64(n)) {
			break
		}
	}
	if c.bodySampling.CompareAndSwap(false, true) {
		go func() {
			defer c.bodySampling.Store(false)
			m.sampleGoodput(c, device, &c.bodyTarget, nil, nil)
		}()
	}
}

// sendingStream samples the goodput of the connection of ctx's call while
// server bytes of a raw stream wait for the device, until the returned
// function is called. backlogged reports whether bytes wait: a stretch in
// which the sender was idle measures the sender, not the path.
func (m *netMeter) sendingStream(ctx context.Context, device string, backlogged func() bool) (stop func()) {
	c, _, ok := m.connOf(ctx)
	if !ok {
		return func() {}
	}
	done := make(chan struct{})
	go m.sampleGoodput(c, device, nil, backlogged, done)
	return sync.OnceFunc(func() { close(done) })
}

// connOf finds the metered connection of ctx's call and reads how many
// bytes its peer has acknowledged.
func (m *netMeter) connOf(ctx context.Context) (*meteredConn, uint64, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil, 0, false
	}
	m.mu.Lock()
	c := m.conns[p.Addr.String()]
	m.mu.Unlock()
	if c == nil {
		return nil, 0, false
	}
	acked, ok := bytesAcked(c.rc)
	return c, acked, ok
}

// sampleGoodput reads c's acknowledged bytes every goodputTick until they
// reach target (if not nil; it may grow meanwhile), done is closed, the
// connection is gone or maxGoodputWait passes, and records the rate of its
// backlogged stretches.
func (m *netMeter) sampleGoodput(c *meteredConn, device string, target *atomic.Uint64, backlogged func() bool, done <-chan struct{}) {
	var g goodputRun
	t := time.NewTicker(goodputTick)
	defer t.Stop()
	deadline := m.now().Add(maxGoodputWait)
	for {
		ended := false
		select {
		case <-t.C:
		case <-done:
			ended = true
		}
		acked, ok := bytesAcked(c.rc)
		now := m.now()
		if !ok || now.After(deadline) {
			ended = true
		} else {
			reached := target != nil && acked >= target.Load()
			bl := reached || ended || backlogged == nil || backlogged()
			if rate, ok := g.observe(acked, bl, now); ok {
				m.addGoodput(device, rate)
			}
			ended = ended || reached
		}
		if ended {
			if rate, ok := g.rate(); ok {
				m.addGoodput(device, rate)
			}
			return
		}
	}
}

// goodputRun follows a connection's acknowledged bytes over one backlogged
// stretch of a transfer.
type goodputRun struct {
	prev        uint64
	started     bool // prev is set
	first, last ackPoint
}

type ackPoint struct {
	at    time.Time
	acked uint64
}

// observe takes one reading; when a backlogged stretch ends it returns the
// stretch's rate, if it was long enough.
func (g *goodputRun) observe(acked uint64, backlogged bool, now time.Time) (float64, bool) {
	advanced := g.started && acked != g.prev
	g.prev, g.started = acked, true
	if !backlogged {
		rate, ok := g.rate()
		g.first, g.last = ackPoint{}, ackPoint{}
		return rate, ok
	}
	if advanced {
		p := ackPoint{at: now, acked: acked}
		if g.first.at.IsZero() {
			g.first = p
		}
		g.last = p
	}
	return 0, false
}

// rate is the stretch's goodput in bytes/s.
func (g *goodputRun) rate() (float64, bool) {
	span := g.last.at.Sub(g.first.at)
	n := g.last.acked - g.first.acked
	if g.first.at.IsZero() || span < minGoodputSpan || n < minGoodputBytes {
		return 0, false
	}
	return float64(n) / span.Seconds(), true
}

// listener wraps lis so that the meter can find a call's connection by
// its remote address.
func (m *netMeter) listener(lis net.Listener) net.Listener {
	return &meteredListener{Listener: lis, m: m}
}

type meteredListener struct {
	net.Listener
	m *netMeter
}

func (l *meteredListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c, nil
	}
	mc := &meteredConn{Conn: c, rc: rc, m: l.m, key: c.RemoteAddr().String()}
	l.m.mu.Lock()
	l.m.conns[mc.key] = mc
	l.m.mu.Unlock()
	return mc, nil
}

type meteredConn struct {
	net.Conn
	rc   syscall.RawConn
	m    *netMeter
	key  string
	once sync.Once
	// bodyTarget is the acknowledged-bytes count at which the bodies sent
	// so far have arrived; bodySampling says a sampler follows it.
	bodyTarget   atomic.Uint64
	bodySampling atomic.Bool
}

func (c *meteredConn) Close() error {
	c.once.Do(func() {
		c.m.mu.Lock()
		if c.m.conns[c.key] == c {
			delete(c.m.conns, c.key)
		}
		c.m.mu.Unlock()
	})
	return c.Conn.Close()
}
