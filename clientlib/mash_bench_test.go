package clientlib_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// newMASHBenchEnv is newMASHEnv's variant for BenchmarkMASHLatency: two
// MWSs, an "images" backend serving one image of imageBytes (to 5% more)
// and an "echo" backend.
func newMASHBenchEnv(b *testing.B, imageBytes int) *mashEnv {
	b.Helper()
	set, err := legacy.GenerateImages(7, 1, imageBytes, imageBytes+imageBytes/20+64)
	if err != nil {
		b.Fatal(err)
	}
	hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { hs.Close() })
	echo, err := legacy.NewEchoServer()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { echo.Close() })
	cl, err := cluster.Start(cluster.Options{
		Backends:     map[string]string{"images": hs.Addr(), "echo": echo.Addr()},
		HTTPBackends: []string{"images"},
		Users:        map[string]string{"doc": "pw"},
		MWSs:         2,
		Log:          testLog(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close(context.Background()) })
	return &mashEnv{cl: cl, images: hs, set: set}
}

// lap is one echo round trip.
type lap struct{ start, end time.Time }

// pinger does back-to-back small round trips on an echo stream, checking
// every echo, and keeps when each started and ended.
type pinger struct {
	conn *clientlib.Conn
	stop chan struct{}
	once sync.Once // closes stop
	done chan struct{}
	wake chan struct{} // gets a value (if empty) after each lap
	err  error         // valid after done

	mu   sync.Mutex
	laps []lap
}

func startPinger(conn *clientlib.Conn) *pinger {
	p := &pinger{conn: conn, stop: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go p.run()
	return p
}

func (p *pinger) run() {
	defer close(p.done)
	out, in := make([]byte, 64), make([]byte, 64)
	for seq := uint64(0); ; seq++ {
		select {
		case <-p.stop:
			return
		default:
		}
		for i := 0; i < len(out); i += 8 {
			binary.BigEndian.PutUint64(out[i:], seq)
		}
		start := time.Now()
		if _, err := p.conn.Write(out); err != nil {
			p.err = fmt.Errorf("echo write %d: %w", seq, err)
			return
		}
		if _, err := io.ReadFull(p.conn, in); err != nil {
			p.err = fmt.Errorf("echo read %d: %w", seq, err)
			return
		}
		if !bytes.Equal(in, out) {
			p.err = fmt.Errorf("echo %d came back changed", seq)
			return
		}
		end := time.Now()
		p.mu.Lock()
		p.laps = append(p.laps, lap{start, end})
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// lapAfter waits for a lap that started at t or later and returns the laps
// kept so far with the index of the first such lap.
func (p *pinger) lapAfter(t time.Time) ([]lap, int, error) {
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		i := slices.IndexFunc(p.laps, func(l lap) bool { return !l.start.Before(t) })
		laps := p.laps
		p.mu.Unlock()
		if i >= 0 {
			return laps, i, nil
		}
		select {
		case <-p.wake:
		case <-p.done:
			return nil, 0, p.err
		case <-deadline.C:
			return nil, 0, errors.New("no echo round trip for a minute")
		}
	}
}

// forget drops the first n laps.
func (p *pinger) forget(n int) {
	p.mu.Lock()
	p.laps = slices.Delete(p.laps, 0, n)
	p.mu.Unlock()
}

func (p *pinger) close() error {
	p.once.Do(func() { close(p.stop) })
	<-p.done
	return p.err
}

// maxGap is the longest time between the ends of successive laps in laps
// from the last one that ended by t0 up to the one of index last.
func maxGap(laps []lap, t0 time.Time, last int) time.Duration {
	first := 0
	for i, l := range laps[:last] {
		if !l.end.After(t0) {
			first = i
		}
	}
	var gap time.Duration
	for i := first + 1; i <= last; i++ {
		gap = max(gap, laps[i].end.Sub(laps[i-1].end))
	}
	return gap
}

// paperMASHModel is the paper's MASH latency model: 210 ms plus 13 ms per
// 100 KB of state.
func paperMASHModel(bytes int) time.Duration {
	return 210*time.Millisecond + time.Duration(float64(13*time.Millisecond)*float64(bytes)/(100<<10))
}

// mashRow is one line of BenchmarkMASHLatency's table: state bytes, moves, and
// p50 and p99 of each measure in µs.
type mashRow struct {
	size                                   int
	moves                                  int
	mws50, mws99, dev50, dev99, st50, st99 float64
}

// mashTable renders rows in milliseconds beside the paper's model.
func mashTable(rows []mashRow) string {
	var t strings.Builder
	fmt.Fprintf(&t, "MASH latency in ms (p50 / p99), moves ping-pong between two MWSs:\n")
	fmt.Fprintf(&t, "%10s %6s %17s %17s %17s %12s\n", "state", "moves", "MWS (Move RPC)", "device attached", "app stall", "paper model")
	for _, r := range rows {
		fmt.Fprintf(&t, "%9.1fK %6d %8.2f / %6.2f %8.2f / %6.2f %8.2f / %6.2f %12.0f\n", float64(r.size)/1024, r.moves,
			r.mws50/1e3, r.mws99/1e3, r.dev50/1e3, r.dev99/1e3, r.st50/1e3, r.st99/1e3,
			float64(paperMASHModel(r.size))/float64(time.Millisecond))
	}
	return t.String()
}

// BenchmarkMASHLatency moves a session back and forth between two MWSs
// (b.N moves), its state holding one server object of the sub-benchmark's
// size (fetched through Get: the session refers to it by digest and the
// move ships the MWS's original copy), while the app does back-to-back
// 64-byte round trips on an echo stream through the session. Per move it measures the MWS side (the Operator Move call), the
// device side (from the call until an echo round trip started after the
// call returned has completed, necessarily through the target: the stream
// reattached there), and the app-visible stall (the longest gap between
// successive round-trip completions around the move). It reports p50 and
// p99 of each in µs and logs them beside the paper's model.
func BenchmarkMASHLatency(b *testing.B) {
	var rows []mashRow
	for _, size := range []int{1 << 10, 10 << 10, 100 << 10, 1280 << 10} {
		b.Run(fmt.Sprintf("state=%dKB", size>>10), func(b *testing.B) {
			e := newMASHBenchEnv(b, size)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			c := e.device(b, "laptop", 0)
			sess, err := c.OpenSession(ctx, "viewer")
			if err != nil {
				b.Fatal(err)
			}
			img := e.set.Images()[0]
			obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
			if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
				b.Fatalf("get: %v", err)
			}
			conn, err := sess.Dial(ctx, "echo")
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			p := startPinger(conn)
			defer p.close()
			ops := []mwsv1.OperatorClient{operatorAPI(b, e, 0), operatorAPI(b, e, 1)}
			names := []string{e.cl.MWS[0].Name(), e.cl.MWS[1].Name()}
			if _, _, err := p.lapAfter(time.Now()); err != nil {
				b.Fatal(err)
			}
			var mwsT, devT, stall []time.Duration
			at := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				to := 1 - at
				t0 := time.Now()
				resp, err := ops[at].Move(ctx, &mwsv1.MoveRequest{SessionId: sess.ID(), To: names[to]})
				ret := time.Now()
				if err != nil {
					b.Fatalf("move %d: %v", i, err)
				}
				laps, k, err := p.lapAfter(ret)
				if err != nil {
					b.Fatalf("move %d: %v", i, err)
				}
				mwsT = append(mwsT, ret.Sub(t0))
				devT = append(devT, laps[k].end.Sub(t0))
				stall = append(stall, maxGap(laps, t0, k))
				p.forget(k)
				if got := resp.GetTimings().GetStateBytes(); got < int64(len(img.Bytes)) {
					b.Fatalf("move %d shipped %d bytes of state, want at least %d", i, got, len(img.Bytes))
				}
				if sess.MWS() != names[to] {
					b.Fatalf("move %d: session on %s, want %s", i, sess.MWS(), names[to])
				}
				at = to
			}
			b.StopTimer()
			if err := p.close(); err != nil {
				b.Fatal(err)
			}
			r := mashRow{size: len(img.Bytes), moves: b.N,
				mws50: pct(mwsT, 50), mws99: pct(mwsT, 99), dev50: pct(devT, 50), dev99: pct(devT, 99),
				st50: pct(stall, 50), st99: pct(stall, 99)}
			b.ReportMetric(r.mws50, "mws-p50-µs")
			b.ReportMetric(r.mws99, "mws-p99-µs")
			b.ReportMetric(r.dev50, "dev-p50-µs")
			b.ReportMetric(r.dev99, "dev-p99-µs")
			b.ReportMetric(r.st50, "stall-p50-µs")
			b.ReportMetric(r.st99, "stall-p99-µs")
			if i := slices.IndexFunc(rows, func(x mashRow) bool { return x.size == r.size }); i >= 0 {
				rows[i] = r
			} else {
				rows = append(rows, r)
			}
			// A parent benchmark's log shows only with -v: each
			// sub-benchmark logs its own row too.
			b.Logf("\n%s", mashTable([]mashRow{r}))
		})
	}
	b.Logf("\n%s", mashTable(rows))
}

// BenchmarkDrain drains one MWS holding 200 (and, without -short, 1000)
// sessions to its two peers. Each iteration starts a fresh cluster and
// times only the drain; afterwards every session is served by a peer (a
// Get through each, which makes its device follow).
func BenchmarkDrain(b *testing.B) {
	for _, n := range []int{200, 1000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			if n > 200 && testing.Short() {
				b.Skip("1000 sessions only without -short")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var took time.Duration
			b.StopTimer()
			for range b.N {
				took += drainOnce(b, ctx, n)
			}
			b.ReportMetric(float64(took.Microseconds())/1e3/float64(b.N), "ms/drain")
			b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "sessions/s")
		})
	}
}

// drainOnce starts a cluster, opens n sessions on mws-1 for two devices,
// drains mws-1 (timed) and checks every session at its peer.
func drainOnce(b *testing.B, ctx context.Context, n int) time.Duration {
	e := newMASHEnv(b, 1<<10, func(c *mws.Config) { c.MaxSessionsPerUser = n })
	defer e.cl.Close(context.Background())
	devs := []*clientlib.Client{e.device(b, "laptop", 0), e.device(b, "desk", 0)}
	all := make([]*clientlib.Session, n)
	for i := range all {
		s, err := devs[i%2].OpenSession(ctx, "viewer")
		if err != nil {
			b.Fatal(err)
		}
		all[i] = s
	}
	src := e.cl.MWS[0]
	if got := src.Stats().Sessions; got != n {
		b.Fatalf("mws-1 holds %d sessions, want %d", got, n)
	}
	b.StartTimer()
	t0 := time.Now()
	err := src.Drain(ctx, nil)
	took := time.Since(t0)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	p1, p2 := e.cl.MWS[1].Stats().Sessions, e.cl.MWS[2].Stats().Sessions
	if left := src.Stats().Sessions; left != 0 || p1+p2 != n || p1 == 0 || p2 == 0 {
		b.Fatalf("after the drain: %d left, peers hold %d and %d of %d", left, p1, p2, n)
	}
	img := e.set.Images()[0]
	work := make(chan *clientlib.Session)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				obj, err := s.Get(ctx, "images", "/images/"+img.Name)
				if err == nil && (!bytes.Equal(obj.Body, img.Bytes) || s.MWS() == src.Name()) {
					err = fmt.Errorf("wrong object or still on %s", s.MWS())
				}
				if err != nil {
					errs <- fmt.Errorf("session %s after the drain: %w", s.ID(), err)
					return
				}
			}
		}()
	}
	for _, s := range all {
		select {
		case work <- s:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	return took
}
