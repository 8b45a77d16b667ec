package mux_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imashproject/imash/mux"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

// Benchmarks of the mux's hot paths. Each relay benchmark moves the same
// bytes directly over loopback TCP and through the mux in the same
// iteration, so the reported ratio compares like with like on the same
// machine and at the same moment. Legacy server, mux and MWS all run in this
// one process: the numbers measure the total CPU cost of a path, not the mux
// alone.

const (
	// relayBytes is what one iteration moves through each path, split
	// evenly across the streams.
	relayBytes = 4 << 20
	// benchChunk is the legacy server's write size and the MWS's up chunk
	// (the mux's default MaxChunk).
	benchChunk = 64 << 10
	// commitEvery is how far a benchmark MWS lets received bytes run ahead
	// of its last commit.
	commitEvery = 256 << 10
	// stallTimeout fails a benchmark iteration that makes no progress
	// rather than letting it hang.
	stallTimeout = time.Minute
)

// BenchmarkRelay measures legacy server -> MWS throughput through the mux
// against a plain TCP connection to the same legacy server.
func BenchmarkRelay(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchRelay(b, relayDown, n) })
	}
}

// BenchmarkRelayUp measures MWS -> legacy server throughput through the mux
// against a plain TCP connection to the same legacy server.
func BenchmarkRelayUp(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchRelay(b, relayUp, n) })
	}
}

type relayDir int

const (
	relayDown relayDir = iota // legacy server -> consumer
	relayUp                   // consumer -> legacy server
)

func benchRelay(b *testing.B, dir relayDir, streams int) {
	bl := newBenchLegacy(b)
	e := newEnv(b, []mux.Backend{{Name: "bench", Addr: bl.addr()}}, nil)
	ctx, kick := stallGuard(b)
	client := e.mws("mws-a") // one MWS connection carries every stream, as in production
	per := int64(relayBytes / streams)

	direct := make([]*directStream, streams)
	muxed := make([]*muxStream, streams)
	for i := range streams {
		c, err := net.Dial("tcp", bl.addr())
		if err != nil {
			b.Fatal(err)
		}
		tc := c.(*net.TCPConn)
		b.Cleanup(func() { tc.Close() })
		direct[i] = &directStream{conn: tc, srv: bl.conn(ctx, b, tc.LocalAddr().String()), buf: make([]byte, benchChunk)}

		op := open(ctx, b, client, "bench")
		ch, err := attach(ctx, b, client, op.StreamId, op.Epoch)
		if err != nil {
			b.Fatal(err)
		}
		ms := &muxStream{ch: ch, srv: bl.conn(ctx, b, op.LocalAddr)}
		if dir == relayUp {
			// A real MWS reads UpAcks; not reading them would eventually
			// stall the mux's sender on gRPC flow control.
			ms.drained = make(chan struct{})
			go ms.drainAcks()
		}
		b.Cleanup(ms.stop)
		muxed[i] = ms
	}

	runDirect := func() error {
		return parallel(streams, func(i int) error {
			if dir == relayDown {
				return direct[i].recv(per)
			}
			return direct[i].send(ctx, bl.payload, per)
		})
	}
	runMux := func() error {
		return parallel(streams, func(i int) error {
			if dir == relayDown {
				return muxed[i].recv(per)
			}
			return muxed[i].send(ctx, bl.payload, per)
		})
	}
	timed := func(f func() error) time.Duration {
		kick()
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	// Warm up TCP autotuning and gRPC's flow-control windows before timing.
	for range 2 {
		timed(runDirect)
		timed(runMux)
	}

	var tDirect, tMux time.Duration
	b.ResetTimer()
	for i := range b.N {
		// Alternate the order so neither path pays systematically for the
		// other's garbage or warms caches for it.
		if i%2 == 0 {
			tDirect += timed(runDirect)
			tMux += timed(runMux)
		} else {
			tMux += timed(runMux)
			tDirect += timed(runDirect)
		}
	}
	b.StopTimer()

	moved := float64(per) * float64(streams) * float64(b.N)
	b.ReportMetric(moved/tDirect.Seconds()/1e6, "direct-MB/s")
	b.ReportMetric(moved/tMux.Seconds()/1e6, "mux-MB/s")
	b.ReportMetric(tDirect.Seconds()/tMux.Seconds(), "mux/direct")
}

// directStream is a consumer's plain TCP connection to the legacy server.
type directStream struct {
	conn *net.TCPConn
	srv  *benchConn
	buf  []byte
}

// recv lets the legacy server send n bytes and reads them.
func (d *directStream) recv(n int64) error {
	d.srv.grant <- n
	if err := d.conn.SetReadDeadline(time.Now().Add(stallTimeout)); err != nil {
		return err
	}
	for n > 0 {
		k, err := d.conn.Read(d.buf[:min(int64(len(d.buf)), n)])
		n -= int64(k)
		if err != nil {
			return fmt.Errorf("direct read with %d bytes to go: %w", n, err)
		}
	}
	return nil
}

// send writes n bytes and waits until the legacy server has read them.
func (d *directStream) send(ctx context.Context, payload []byte, n int64) error {
	d.srv.want <- n
	if err := d.conn.SetWriteDeadline(time.Now().Add(stallTimeout)); err != nil {
		return err
	}
	for left := n; left > 0; {
		k, err := d.conn.Write(payload[:min(int64(len(payload)), left)])
		left -= int64(k)
		if err != nil {
			return fmt.Errorf("direct write with %d bytes to go: %w", left, err)
		}
	}
	return d.srv.waitReceived(ctx)
}

// muxStream is a benchmark MWS's Attach channel of one stream.
type muxStream struct {
	ch              *channel
	srv             *benchConn
	down, committed uint64
	up              uint64
	drained         chan struct{} // closed when drainAcks returns; nil without it
}

// recv lets the legacy server send n bytes and receives them through the
// mux, committing as a real MWS does.
func (m *muxStream) recv(n int64) error {
	m.srv.grant <- n
	for end := m.down + uint64(n); m.down < end; {
		d, err := recvData(m.ch)
		if err != nil {
			return err
		}
		if d.Offset != m.down {
			return fmt.Errorf("data at offset %d, want %d", d.Offset, m.down)
		}
		m.down += uint64(len(d.Data))
		if m.down > end {
			return fmt.Errorf("received up to %d, the legacy server sent only %d", m.down, end)
		}
		if m.down-m.committed >= commitEvery || m.down == end {
			if err := m.ch.ac.Send(commitReq(m.down)); err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			m.committed = m.down
		}
	}
	return nil
}

// send sends n bytes through the mux and waits until the legacy server has
// read them.
func (m *muxStream) send(ctx context.Context, payload []byte, n int64) error {
	m.srv.want <- n
	for end := m.up + uint64(n); m.up < end; {
		k := min(uint64(len(payload)), end-m.up)
		req := &muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Data{Data: &muxv1.Data{Offset: m.up, Data: payload[:k]}}}
		if err := m.ch.ac.Send(req); err != nil {
			return fmt.Errorf("send up at %d: %w", m.up, err)
		}
		m.up += k
	}
	return m.srv.waitReceived(ctx)
}

// drainAcks reads the channel until it ends.
func (m *muxStream) drainAcks() {
	defer close(m.drained)
	for {
		if _, err := m.ch.ac.Recv(); err != nil {
			return
		}
	}
}

func (m *muxStream) stop() {
	m.ch.cancel()
	if m.drained != nil {
		<-m.drained
	}
}

func commitReq(off uint64) *muxv1.AttachRequest {
	return &muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Commit{Commit: &muxv1.Commit{Offset: off}}}
}

// recvData returns the next Data message of ch, skipping UpAcks.
func recvData(ch *channel) (*muxv1.Data, error) {
	for {
		m, err := ch.ac.Recv()
		if err != nil {
			return nil, fmt.Errorf("recv: %w", err)
		}
		switch m := m.Msg.(type) {
		case *muxv1.AttachResponse_Data:
			return m.Data, nil
		case *muxv1.AttachResponse_UpAck:
		default:
			return nil, fmt.Errorf("unexpected message %v", m)
		}
	}
}

// BenchmarkHandover measures how long a stream that is sending
// continuously is dark during a handover: from just before the owner's
// Handover RPC (which commits what it has received) to the first Data
// message on the new owner's channel. The old owner cancels its channel
// without draining it, as a real MWS does. Ownership rotates among three
// MWSs. Besides the dark time it reports the medians of its first parts:
// until the Handover response (rpc-p50-µs) and until the new owner's
// Attached message (attached-p50-µs), and how many bytes the mux had sent
// to the old owner beyond its commit (inflight-KiB, mean): the new owner
// receives them again.
func BenchmarkHandover(b *testing.B) {
	bl := newBenchLegacy(b)
	e := newEnv(b, []mux.Backend{{Name: "bench", Addr: bl.addr()}}, nil)
	ctx, kick := stallGuard(b)
	names := []string{"mws-a", "mws-b", "mws-c"}
	clients := make([]muxv1.MuxClient, len(names))
	for i, n := range names {
		clients[i] = e.mws(n)
		// Connect (TLS handshake) outside the timed region.
		if _, err := clients[i].ListBackends(ctx, &muxv1.ListBackendsRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	op := open(ctx, b, clients[0], "bench")
	bl.conn(ctx, b, op.LocalAddr).grant <- math.MaxInt64 // send until closed

	owner, epoch := 0, op.Epoch
	ch, err := attach(ctx, b, clients[owner], op.StreamId, epoch)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ch.cancel() })
	d, err := recvData(ch)
	if err != nil {
		b.Fatal(err)
	}
	received := d.Offset + uint64(len(d.Data))

	// samples are the full dark times; rpc and attached are the parts up to
	// the Handover response and up to the new owner's Attached message.
	samples := make([]time.Duration, 0, b.N)
	rpc := make([]time.Duration, 0, b.N)
	attached := make([]time.Duration, 0, b.N)
	var inflight uint64 // sent to owners that handed over before reading them
	b.ResetTimer()
	for range b.N {
		kick()
		next := (owner + 1) % len(names)
		start := time.Now()
		resp, err := clients[owner].Handover(ctx, &muxv1.HandoverRequest{
			StreamId: op.StreamId, Epoch: epoch, To: names[next], HasCommit: true, CommitOffset: received,
		})
		if err != nil {
			b.Fatalf("handover %s -> %s: %v", names[owner], names[next], err)
		}
		rpc = append(rpc, time.Since(start))
		inflight += resp.Delivered - received
		ch.cancel()
		ch, err = attach(ctx, b, clients[next], op.StreamId, resp.Epoch)
		if err != nil {
			b.Fatalf("attach %s at epoch %d: %v", names[next], resp.Epoch, err)
		}
		attached = append(attached, time.Since(start))
		d, err := recvData(ch)
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
		if ch.attached.DownOffset != received || d.Offset != received {
			b.Fatalf("new owner starts at %d (first data at %d), want the committed offset %d", ch.attached.DownOffset, d.Offset, received)
		}
		received += uint64(len(d.Data))
		owner, epoch = next, resp.Epoch
	}
	b.StopTimer()

	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	b.ReportMetric(micros(sum/time.Duration(len(samples))), "mean-µs")
	b.ReportMetric(float64(inflight)/float64(b.N)/1024, "inflight-KiB")
	for _, x := range []struct {
		name    string
		samples []time.Duration
		ps      []float64
	}{
		{"", samples, []float64{0.50, 0.99}},
		{"rpc-", rpc, []float64{0.50}},
		{"attached-", attached, []float64{0.50}},
	} {
		slices.Sort(x.samples)
		for _, p := range x.ps {
			b.ReportMetric(micros(percentile(x.samples, p)), fmt.Sprintf("%sp%.0f-µs", x.name, p*100))
		}
	}
}

// percentile returns the nearest-rank p-quantile of sorted, which must not
// be empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// stallGuard returns a context for a benchmark's channels and a kick
// function to call as each iteration starts: if one iteration makes no
// progress for stallTimeout the context ends, so blocked receives fail
// instead of hanging.
func stallGuard(b *testing.B) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	wd := time.AfterFunc(stallTimeout, cancel)
	b.Cleanup(func() {
		wd.Stop()
		cancel()
	})
	return ctx, func() { wd.Reset(stallTimeout) }
}

// parallel runs f(0) ... f(n-1) concurrently and joins their errors.
func parallel(n int, f func(i int) error) error {
	if n == 1 {
		return f(0)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// benchLegacy is a raw TCP legacy server for benchmarks. Unlike
// legacy.StreamServer it neither generates nor hashes data, so its CPU cost
// stays out of the comparison, and it sends and reads only what the
// benchmark asks for: no path starts an iteration with data already
// buffered (the mux would otherwise read ahead up to its retention limit
// while the direct path is timed).
type benchLegacy struct {
	ln      *net.TCPListener
	payload []byte
	quit    chan struct{}
	wg      sync.WaitGroup

	mu      sync.Mutex
	conns   map[string]*benchConn // by the peer's address
	changed chan struct{}         // closed and replaced when conns grows
}

// benchConn is the server side of one benchLegacy connection.
type benchConn struct {
	grant    chan int64    // down: send this many more bytes
	want     chan int64    // up: read this many more bytes...
	received chan struct{} // ...and then report here
}

func newBenchLegacy(b *testing.B) *benchLegacy {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	s := &benchLegacy{
		ln: ln, payload: make([]byte, benchChunk), quit: make(chan struct{}),
		conns: map[string]*benchConn{}, changed: make(chan struct{}),
	}
	for i := range s.payload {
		s.payload[i] = byte(i*7 + i>>8)
	}
	var open []*net.TCPConn
	s.wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			bc := &benchConn{grant: make(chan int64, 1), want: make(chan int64, 1), received: make(chan struct{}, 1)}
			s.mu.Lock()
			open = append(open, c)
			s.conns[c.RemoteAddr().String()] = bc
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
			s.wg.Go(func() { s.send(c, bc) })
			s.wg.Go(func() { s.read(c, bc) })
		}
	})
	b.Cleanup(func() {
		close(s.quit)
		ln.Close()
		s.mu.Lock()
		for _, c := range open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *benchLegacy) addr() string { return s.ln.Addr().String() }

// conn waits for the connection whose peer is at addr.
func (s *benchLegacy) conn(ctx context.Context, b *testing.B, addr string) *benchConn {
	b.Helper()
	for {
		s.mu.Lock()
		c, changed := s.conns[addr], s.changed
		s.mu.Unlock()
		if c != nil {
			return c
		}
		select {
		case <-changed:
		case <-ctx.Done():
			b.Fatalf("legacy server: no connection from %s", addr)
		}
	}
}

func (s *benchLegacy) send(c *net.TCPConn, bc *benchConn) {
	for {
		select {
		case n := <-bc.grant:
			for n > 0 {
				k, err := c.Write(s.payload[:min(int64(len(s.payload)), n)])
				n -= int64(k)
				if err != nil {
					return
				}
			}
		case <-s.quit:
			return
		}
	}
}

func (s *benchLegacy) read(c *net.TCPConn, bc *benchConn) {
	buf := make([]byte, benchChunk)
	for {
		select {
		case n := <-bc.want:
			for n > 0 {
				k, err := c.Read(buf[:min(int64(len(buf)), n)])
				n -= int64(k)
				if err != nil {
					return
				}
			}
			bc.received <- struct{}{}
		case <-s.quit:
			return
		}
	}
}

// waitReceived waits until the server has read what was last wanted.
func (bc *benchConn) waitReceived(ctx context.Context) error {
	select {
	case <-bc.received:
		return nil
	case <-ctx.Done():
		return errors.New("legacy server did not receive every byte in time")
	}
}
