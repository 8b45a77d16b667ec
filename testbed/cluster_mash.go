package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imashproject/imash/clientlib"
)

// mashDevice is the MASH part's device.
const mashDevice = "roamer"

// echoBytes is the size of each echo round trip of the MASH part.
const echoBytes = 64

// mashMove is one operator move of the MASH part: the JSON records of
// "cluster.mash.moves".
type mashMove struct {
	From string `json:"from"`
	To   string `json:"to"`
	// PrepareUS, PrecopyUS, HandoverUS, ShipUS and TotalUS are the source MWS's
	// account of the move (mws.MoveResult); StateBytes what it shipped.
	PrepareUS  int64 `json:"prepare_us"`
	PrecopyUS  int64 `json:"precopy_us"`
	HandoverUS int64 `json:"handover_us"`
	ShipUS     int64 `json:"ship_us"`
	TotalUS    int64 `json:"total_us"`
	StateBytes int64 `json:"state_bytes"`
	// StallUS is what the app saw: the longest gap between the
	// completions of successive echo round trips, from the last one done
	// before the move was asked for to the first one started after it
	// returned (which went through the new MWS).
	StallUS int64 `json:"stall_us"`
	// DownAt and UpAt are the stream offsets the move was asked for at:
	// the bytes the device had read and written.
	DownAt int64 `json:"down_at"`
	UpAt   int64 `json:"up_at"`
}

// mashResult is what the MASH part measured.
type mashResult struct {
	Moves []mashMove `json:"moves"`
	// StreamBytes went each way through the bulk stream; ChecksumsOK says
	// that SHA-256 of each direction agreed at both ends (the run fails
	// otherwise), UpSHA256 and DownSHA256 are those hashes.
	StreamBytes int64  `json:"stream_bytes"`
	UpSHA256    string `json:"up_sha256"`
	DownSHA256  string `json:"down_sha256"`
	ChecksumsOK bool   `json:"checksums_ok"`
	// LegacyStreamConns and LegacyEchoConns are the connections the
	// legacy stream and echo servers accepted during the part: 1 each,
	// whatever the moves.
	LegacyStreamConns int64 `json:"legacy_stream_conns"`
	LegacyEchoConns   int64 `json:"legacy_echo_conns"`
	// EchoRoundTrips counts the echo round trips, each checked; Gets the
	// Gets between moves, each checked against the image.
	EchoRoundTrips int `json:"echo_round_trips"`
	Gets           int `json:"gets"`
	// Follows and TLSResumed are the device's clientlib.MoveStats: moves
	// it followed, and those whose new connection resumed TLS.
	Follows    int `json:"follows"`
	TLSResumed int `json:"tls_resumed"`
	// Seconds is the part's wall time.
	Seconds float64 `json:"seconds"`
}

// runMASH logs a device in at the first MWS, opens a session with a bulk
// stream to the mash-stream backend and an echo stream, and moves the
// session among the MWSs moves times with the operator call
// (mws.Server.MoveSession), each time to another MWS chosen at random.
// The moves fall at random points of the bulk transfer: the device reads
// and writes up to the next point, the move is asked for there, and the
// transfer goes on during the move up to the point after. After each move
// the app fetches an image. Both directions are checked with SHA-256 and
// each legacy server must have seen one connection.
func runMASH(ctx context.Context, env *testbedEnv, moves int, seed uint64) (res *mashResult, err error) {
	began := time.Now()
	// Generous bounds: a move takes milliseconds.
	ctx, cancel := context.WithTimeout(ctx, clusterWait+time.Duration(moves)*time.Second)
	defer cancel()
	names := make([]string, len(env.cluster.MWS))
	for i, s := range env.cluster.MWS {
		names[i] = s.Name()
	}
	res = &mashResult{StreamBytes: mashStreamBytes}
	c, err := env.login(ctx, mashDevice, 0, nil)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	sess, err := c.OpenSession(ctx, demoApp)
	if err != nil {
		return res, fmt.Errorf("open session: %w", err)
	}
	defer func() { err = errors.Join(err, closeSession(sess)) }()
	img := smallestImage(env.images.Set())
	if err := getImage(ctx, sess, img); err != nil {
		return res, err
	}

	streamConns0, echoConns0 := env.mashStream.Accepted(), env.echo.Accepted()
	bulk, err := sess.Dial(ctx, mashStreamBackend)
	if err != nil {
		return res, fmt.Errorf("dial %s: %w", mashStreamBackend, err)
	}
	defer bulk.Close()
	echo, err := sess.Dial(ctx, echoBackend)
	if err != nil {
		return res, fmt.Errorf("dial %s: %w", echoBackend, err)
	}
	defer echo.Close()
	// Closing the streams ends every goroutine below that uses them.
	stop := context.AfterFunc(ctx, func() { bulk.Close(); echo.Close() })
	defer stop()

	p := startPinger(echo)
	defer p.stop()
	if _, _, err := p.lapAfter(ctx, time.Now()); err != nil {
		return res, err
	}

	rng := rand.New(rand.NewPCG(seed, 0x6d617368)) // "mash"
	up, upSum, err := payload(seed+mashUpSeed, mashStreamBytes)
	if err != nil {
		return res, err
	}
	t := &gatedTransfer{
		downPoints: randomPoints(rng, moves, mashStreamBytes),
		upPoints:   randomPoints(rng, moves, mashStreamBytes),
		total:      mashStreamBytes,
		wake:       make(chan struct{}, 1),
		changed:    make(chan struct{}),
		errs:       make(chan error, 2),
		done:       make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Go(func() { t.write(ctx, bulk, up, rand.New(rand.NewPCG(seed, 0x7570))) }) // "up"
	wg.Go(func() { t.read(ctx, bulk) })
	go func() { wg.Wait(); close(t.done) }()
	defer func() { cancel(); <-t.done }()

	at := 0
	for i := range moves {
		if err := t.reach(ctx, i); err != nil {
			return res, fmt.Errorf("before move %d: %w", i+1, err)
		}
		down0, up0 := t.downAt.Load(), t.upAt.Load()
		t.open(i + 1)
		to := rng.IntN(len(names) - 1)
		if to >= at {
			to++
		}
		t0 := time.Now()
		mr, err := env.cluster.MWS[at].MoveSession(ctx, sess.ID(), names[to], "operator")
		ret := time.Now()
		if err != nil {
			return res, fmt.Errorf("move %d from %s to %s: %w", i+1, names[at], names[to], err)
		}
		laps, k, err := p.lapAfter(ctx, ret)
		if err != nil {
			return res, fmt.Errorf("move %d: %w", i+1, err)
		}
		stall := stallAround(laps, t0, k)
		p.forget(k)
		if err := getImage(ctx, sess, img); err != nil {
			return res, fmt.Errorf("after move %d: %w", i+1, err)
		}
		res.Gets++
		if got := sess.MWS(); got != names[to] {
			return res, fmt.Errorf("after move %d to %s the session is on %s", i+1, names[to], got)
		}
		res.Moves = append(res.Moves, mashMove{
			From: names[at], To: names[to],
			PrepareUS: us(mr.Prepare), PrecopyUS: us(mr.Precopy), HandoverUS: us(mr.Handover), ShipUS: us(mr.Ship), TotalUS: us(mr.Total),
			StateBytes: mr.StateBytes, StallUS: us(stall), DownAt: down0, UpAt: up0,
		})
		at = to
	}

	select {
	case <-t.done:
	case <-ctx.Done():
		return res, fmt.Errorf("the bulk transfer did not finish: %w", ctx.Err())
	}
	select {
	case err := <-t.errs:
		return res, err
	default:
	}
	laps, err := p.close()
	if err != nil {
		return res, err
	}
	res.EchoRoundTrips = laps
	if err := endEcho(echo); err != nil {
		return res, err
	}
	if err := waitStreamConn(ctx, env.mashStream, int(streamConns0), mashStreamBytes, upSum, mashStreamBytes, t.downSum); err != nil {
		return res, err
	}
	res.ChecksumsOK = true
	res.UpSHA256, res.DownSHA256 = fmt.Sprintf("%x", upSum), fmt.Sprintf("%x", t.downSum)
	res.LegacyStreamConns = env.mashStream.Accepted() - streamConns0
	res.LegacyEchoConns = env.echo.Accepted() - echoConns0
	if res.LegacyStreamConns != 1 || res.LegacyEchoConns != 1 {
		return res, fmt.Errorf("the legacy stream server accepted %d connections and the echo server %d; want 1 each", res.LegacyStreamConns, res.LegacyEchoConns)
	}
	st := c.MoveStats()
	res.Follows, res.TLSResumed = st.Followed, st.TLSResumed
	res.Seconds = time.Since(began).Seconds()
	return res, nil
}

// randomPoints returns n sorted offsets drawn uniformly from [1, total).
func randomPoints(rng *rand.Rand, n int, total int64) []int64 {
	pts := make([]int64, n)
	for i := range pts {
		pts[i] = 1 + rng.Int64N(total-1)
	}
	slices.Sort(pts)
	return pts
}

// gatedTransfer writes and reads a bulk stream in steps: at step s each
// direction may go up to its point of index s (the whole stream past the
// last point). The mover waits until both directions reached the points
// of a step, opens the next step and moves the session, so each move is
// asked for at a known point while the stream goes on.
type gatedTransfer struct {
	downPoints, upPoints []int64
	total                int64

	// downAt and upAt are the bytes read and written; wake gets a value
	// (if empty) after each advance.
	downAt, upAt atomic.Int64
	wake         chan struct{}

	mu      sync.Mutex
	step    int
	changed chan struct{} // closed and replaced when step grows

	errs    chan error    // the reader's and the writer's failures
	done    chan struct{} // closed when both have returned
	downSum [32]byte      // valid after done
}

// open lets both directions go up to the points of step s.
func (t *gatedTransfer) open(s int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.step = s
	close(t.changed)
	t.changed = make(chan struct{})
}

// limit waits until the direction with points pts may go beyond off and
// returns how far it may go.
func (t *gatedTransfer) limit(ctx context.Context, pts []int64, off int64) (int64, error) {
	for {
		t.mu.Lock()
		lim, changed := t.total, t.changed
		if t.step < len(pts) {
			lim = pts[t.step]
		}
		t.mu.Unlock()
		if lim > off {
			return lim, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// advanced records that a direction moved on.
func (t *gatedTransfer) advanced() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// reach waits until both directions reached the points of step s.
func (t *gatedTransfer) reach(ctx context.Context, s int) error {
	idle := time.NewTimer(clusterWait)
	defer idle.Stop()
	for t.downAt.Load() < t.downPoints[s] || t.upAt.Load() < t.upPoints[s] {
		select {
		case <-t.wake:
			idle.Reset(clusterWait)
		case err := <-t.errs:
			return err
		case <-t.done:
			select {
			case err := <-t.errs:
				return err
			default:
				return errors.New("the bulk transfer stopped")
			}
		case <-idle.C:
			return fmt.Errorf("%w: the bulk transfer made no progress for %v (read %d of %d, wrote %d of %d)",
				errTimeout, clusterWait, t.downAt.Load(), t.downPoints[s], t.upAt.Load(), t.upPoints[s])
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (t *gatedTransfer) fail(err error) {
	select {
	case t.errs <- err:
	default:
	}
}

// write sends up in chunks of random sizes, then half-closes.
func (t *gatedTransfer) write(ctx context.Context, conn *clientlib.Conn, up []byte, rng *rand.Rand) {
	for off := int64(0); off < t.total; {
		lim, err := t.limit(ctx, t.upPoints, off)
		if err != nil {
			t.fail(fmt.Errorf("write: %w", err))
			return
		}
		n := min(lim-off, 1+rng.Int64N(128<<10))
		if _, err := conn.Write(up[off : off+n]); err != nil {
			t.fail(fmt.Errorf("write at %d: %w", off, err))
			return
		}
		off += n
		t.upAt.Store(off)
		t.advanced()
	}
	if err := conn.CloseWrite(); err != nil {
		t.fail(fmt.Errorf("close write: %w", err))
	}
}

// read reads the whole down stream and its EOF, hashing it.
func (t *gatedTransfer) read(ctx context.Context, conn *clientlib.Conn) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	eof := false
	for off := int64(0); off < t.total; {
		lim, err := t.limit(ctx, t.downPoints, off)
		if err != nil {
			t.fail(fmt.Errorf("read: %w", err))
			return
		}
		n, err := conn.Read(buf[:min(int64(len(buf)), lim-off)])
		h.Write(buf[:n])
		off += int64(n)
		t.downAt.Store(off)
		t.advanced()
		if errors.Is(err, io.EOF) && off == t.total {
			eof = true
		} else if err != nil {
			t.fail(fmt.Errorf("read at %d of %d: %w", off, t.total, err))
			return
		}
	}
	if !eof {
		if n, err := io.ReadFull(conn, buf[:1]); n != 0 || !errors.Is(err, io.EOF) {
			t.fail(fmt.Errorf("%w: after %d bytes the stream goes on (%d more, %v)", ErrMismatch, t.total, n, err))
			return
		}
	}
	h.Sum(t.downSum[:0])
}

// lap is one echo round trip: when it started and when its echo was back.
type lap struct{ start, end time.Time }

// pinger does back-to-back round trips of echoBytes on an echo stream,
// checking each echo, and keeps their times.
type pinger struct {
	conn     *clientlib.Conn
	quit     chan struct{}
	quitOnce sync.Once
	done     chan struct{}
	wake     chan struct{} // gets a value (if empty) after each lap
	err      error         // valid after done

	mu    sync.Mutex
	laps  []lap
	count int // laps since the start, forgotten ones included
}

func startPinger(conn *clientlib.Conn) *pinger {
	p := &pinger{conn: conn, quit: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go p.run()
	return p
}

func (p *pinger) run() {
	defer close(p.done)
	out, in := make([]byte, echoBytes), make([]byte, echoBytes)
	for seq := uint64(0); ; seq++ {
		select {
		case <-p.quit:
			return
		default:
		}
		for i := 0; i < len(out); i += 8 {
			binary.LittleEndian.PutUint64(out[i:], seq^uint64(i))
		}
		start := time.Now()
		if _, err := p.conn.Write(out); err != nil {
			p.err = fmt.Errorf("echo round trip %d: write: %w", seq, err)
			return
		}
		if _, err := io.ReadFull(p.conn, in); err != nil {
			p.err = fmt.Errorf("echo round trip %d: read: %w", seq, err)
			return
		}
		if !bytes.Equal(in, out) {
			p.err = fmt.Errorf("%w: echo round trip %d came back changed", ErrMismatch, seq)
			return
		}
		end := time.Now()
		p.mu.Lock()
		p.laps = append(p.laps, lap{start, end})
		p.count++
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// lapAfter waits for a round trip that started at t or later and returns
// the laps kept so far with that lap's index.
func (p *pinger) lapAfter(ctx context.Context, t time.Time) ([]lap, int, error) {
	idle := time.NewTimer(clusterWait)
	defer idle.Stop()
	for {
		p.mu.Lock()
		laps := p.laps
		p.mu.Unlock()
		if i := slices.IndexFunc(laps, func(l lap) bool { return !l.start.Before(t) }); i >= 0 {
			return laps, i, nil
		}
		select {
		case <-p.wake:
		case <-p.done:
			if p.err == nil {
				return nil, 0, errors.New("the echo round trips stopped")
			}
			return nil, 0, p.err
		case <-idle.C:
			return nil, 0, fmt.Errorf("%w: no echo round trip for %v", errTimeout, clusterWait)
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// forget drops the first n laps.
func (p *pinger) forget(n int) {
	p.mu.Lock()
	p.laps = slices.Delete(p.laps, 0, n)
	p.mu.Unlock()
}

// stop ends the round trips after the current one.
func (p *pinger) stop() { p.quitOnce.Do(func() { close(p.quit) }) }

// close stops the round trips, waits for the last one and returns how
// many there were.
func (p *pinger) close() (int, error) {
	p.stop()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count, p.err
}

// stallAround is the longest time between the ends of successive laps,
// from the last lap that ended by t0 (the first kept lap if none did) to
// laps[k].
func stallAround(laps []lap, t0 time.Time, k int) time.Duration {
	first := 0
	for i := k - 1; i >= 0; i-- {
		if !laps[i].end.After(t0) {
			first = i
			break
		}
	}
	var gap time.Duration
	for i := first + 1; i <= k; i++ {
		gap = max(gap, laps[i].end.Sub(laps[i-1].end))
	}
	return gap
}

// endEcho half-closes an echo stream whose round trips are done and reads
// the server's EOF.
func endEcho(c *clientlib.Conn) error {
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("echo: close write: %w", err)
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return fmt.Errorf("echo: read to EOF: %w", err)
	}
	if n != 0 {
		return fmt.Errorf("%w: echo: %d bytes after the last round trip", ErrMismatch, n)
	}
	return nil
}
