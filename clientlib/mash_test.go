package clientlib_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// mashEnv is three MWSs, a stream server and an image server.
type mashEnv struct {
	cl     *cluster.Cluster
	stream *legacy.StreamServer
	images *legacy.HTTPServer
	set    *legacy.ImageSet
}

func newMASHEnv(t testing.TB, streamBytes int64, tune func(*mws.Config)) *mashEnv {
	t.Helper()
	set, err := legacy.GenerateImages(2, 3, 2<<10, 200<<10)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Close() })
	ss, err := legacy.NewStreamServer(legacy.StreamConfig{SendBytes: streamBytes, Seed: 21, CloseWriteAfterSend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cl, err := cluster.Start(cluster.Options{
		Backends:     map[string]string{"images": hs.Addr(), "stream": ss.Addr()},
		HTTPBackends: []string{"images"},
		Users:        map[string]string{"doc": "pw"},
		MWSs:         3,
		TuneMWS:      tune,
		Log:          testLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	return &mashEnv{cl: cl, stream: ss, images: hs, set: set}
}

// device logs a device in at the MWS of index mwsIndex, with its profile
// documents if any.
func (e *mashEnv) device(t testing.TB, name string, mwsIndex int, profiles ...[]byte) *clientlib.Client {
	t.Helper()
	cert, roots, err := e.cl.DeviceCert(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientlib.Dial(context.Background(), e.cl.MWSAddrs[mwsIndex], clientlib.Config{Certificate: cert, Roots: roots, Profiles: profiles})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(context.Background(), "doc", "pw"); err != nil {
		t.Fatal(err)
	}
	return c
}

// kill stops the MWS s at once, without a drain or a goodbye, and has
// membership report it dead.
func (e *mashEnv) kill(s *mws.Server) {
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	s.Close(dead)
	e.cl.Peers.SetAlive(s.Name(), false)
}

// getOne fetches the first image in sess and checks its body.
func getOne(t testing.TB, ctx context.Context, e *mashEnv, sess *clientlib.Session) {
	t.Helper()
	img := e.set.Images()[0]
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
		t.Fatalf("session on %s: %v", sess.MWS(), err)
	}
}

// server returns the MWS named name.
func (e *mashEnv) server(name string) *mws.Server {
	for _, s := range e.cl.MWS {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

func movesWanted() int {
	if v, err := strconv.Atoi(os.Getenv("IMASH_MASH_MOVES")); err == nil && v > 0 {
		return v
	}
	return 1000
}

// TestMASHUnderLoad moves a session among three MWSs again and again, at
// random points, while a raw stream carries large random payloads both
// ways and HTTP objects are fetched: the app sees no error, both
// directions' checksums match, and the legacy server saw one connection.
func TestMASHUnderLoad(t *testing.T) {
	const down = 16 << 20
	const up = 4 << 20
	e := newMASHEnv(t, down, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.device(t, "laptop", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	upData := make([]byte, up)
	if _, err := io.ReadFull(legacy.RandomStream(9), upData); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	var transferDone atomic.Bool
	h := sha256.New()
	startStreamLoad(&wg, conn, upData, h, errs, &transferDone)
	var gets atomic.Int64
	getDone := make(chan struct{})
	go func() { // objects, fetched throughout
		defer close(getDone)
		for i := 0; ctx.Err() == nil && !transferDone.Load(); i++ {
			img := e.set.Images()[i%len(e.set.Images())]
			obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
			if err != nil {
				errs <- fmt.Errorf("get: %w", err)
				return
			}
			if !bytes.Equal(obj.Body, img.Bytes) {
				errs <- errors.New("object body differs")
				return
			}
			gets.Add(1)
		}
	}()

	want := movesWanted()
	r := rand.New(rand.NewPCG(3, 4))
	moves := 0
	for moves < want {
		select {
		case err := <-errs:
			t.Fatalf("after %d moves: %v", moves, err)
		default:
		}
		if ctx.Err() != nil {
			t.Fatalf("timed out after %d moves", moves)
		}
		here := e.server(sess.MWS())
		var to string
		for to == "" || to == here.Name() {
			to = e.cl.MWS[r.IntN(len(e.cl.MWS))].Name()
		}
		if _, err := here.MoveSession(ctx, sess.ID(), to, "operator"); err != nil {
			t.Fatalf("move %d to %s: %v", moves, to, err)
		}
		moves++
		// The session must be usable at its new MWS before it moves again.
		if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
			t.Fatalf("get after move %d: %v", moves, err)
		}
	}
	wg.Wait()
	<-getDone
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	lc, err := e.stream.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	<-lc.Done()
	if [32]byte(h.Sum(nil)) != lc.SentSum() {
		t.Fatal("down bytes differ across the moves")
	}
	if lc.ReceivedSum() != sha256.Sum256(upData) {
		t.Fatalf("up bytes differ: legacy received %d of %d", lc.Received(), up)
	}
	if n := e.stream.Accepted(); n != 1 {
		t.Fatalf("legacy server accepted %d connections", n)
	}
	st := c.MoveStats()
	if st.Followed < moves {
		t.Fatalf("client followed %d of %d moves", st.Followed, moves)
	}
	if st.TLSResumed == 0 {
		t.Fatal("no move resumed TLS with a shared session ticket")
	}
	t.Logf("%d moves, %d gets, %d follows (%d with TLS resumption)", moves, gets.Load(), st.Followed, st.TLSResumed)
}

// TestMASHDenialsAndTokens: a draining target denies and the session stays;
// a MASH of a session mid-CASH is refused; a move token works once and
// only for its device; a caller without an MWS certificate cannot use the
// peer API.
func TestMASHDenialsAndTokens(t *testing.T) {
	e := newMASHEnv(t, 1<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.device(t, "laptop", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	src := e.cl.MWS[0]

	// A draining target denies; nothing changes at the source. (mws-3
	// stays draining.)
	drainCtx, stopDrain := context.WithCancel(ctx)
	drained := make(chan error, 1)
	go func() { drained <- e.cl.MWS[2].Drain(drainCtx, nil) }()
	pollDeadline(t, "mws-3 draining", e.cl.MWS[2].Draining)
	if _, err := src.MoveSession(ctx, sess.ID(), "mws-3", "operator"); rpcerr.Reason(err) != "DRAINING" {
		t.Fatalf("move to a draining MWS: %v", err)
	}
	stopDrain()
	<-drained
	if sess.MWS() != "mws-1" {
		t.Fatalf("session on %s", sess.MWS())
	}
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
		t.Fatal(err)
	}

	// An unknown target.
	if _, err := src.MoveSession(ctx, sess.ID(), "mws-9", "operator"); rpcerr.Code(err) != codes.NotFound {
		t.Fatalf("move to an unknown MWS: %v", err)
	}

	// The peer API refuses a device certificate.
	cert, roots, err := e.cl.DeviceCert("intruder")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.cl.MWSAddrs[1], grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(cert, roots, pki.RoleMWS))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = mwsv1.NewPeerClient(cc).PrepareMove(ctx, &mwsv1.PrepareMoveRequest{})
	if rpcerr.Reason(err) != "WRONG_ROLE" {
		t.Fatalf("peer call with a device certificate: %v", err)
	}

	// Move for real, then replay the token, and show it from another device.
	if _, err := src.MoveSession(ctx, sess.ID(), "mws-2", "operator"); err != nil {
		t.Fatal(err)
	}
	// The source redirects; the first call follows.
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
		t.Fatal(err)
	}
	if sess.MWS() != "mws-2" {
		t.Fatalf("session on %s after the move", sess.MWS())
	}
	devAPI := mwsv1.NewDeviceClient(cc)
	_, err = devAPI.MoveIn(ctx, &mwsv1.MoveInRequest{SessionId: sess.ID(), SessionKey: "guess"})
	if rpcerr.Reason(err) != "BAD_SESSION_KEY" && rpcerr.Reason(err) != "SESSION_ON_OTHER_DEVICE" {
		t.Fatalf("move-in with a guessed key: %v", err)
	}
	if _, err := e.cl.MWS[1].MoveSession(ctx, sess.ID(), "mws-1", "operator"); err != nil {
		t.Fatal(err)
	}
	_, err = devAPI.MoveIn(ctx, &mwsv1.MoveInRequest{Token: "not-a-token"})
	if rpcerr.Reason(err) != "BAD_MOVE_TOKEN" {
		t.Fatalf("unknown token: %v", err)
	}
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[1].Name); err != nil {
		t.Fatal(err)
	}
	if sess.MWS() != "mws-1" {
		t.Fatalf("session on %s", sess.MWS())
	}

	// A session mid-CASH cannot be moved.
	desk := e.device(t, "desk", 0)
	offered := make(chan struct{})
	release := make(chan struct{})
	sctx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	go desk.Serve(sctx, clientlib.Target{Accept: func(clientlib.Offer) (bool, string) {
		close(offered)
		<-release
		return false, "no"
	}, Resumed: func(*clientlib.Resumed) {}})
	go c.Serve(sctx, clientlib.Target{Resumed: func(*clientlib.Resumed) {}})
	waitDeviceOnline(t, c, "desk")
	hoErr := make(chan error, 1)
	go func() { _, err := sess.Handoff(ctx, "desk"); hoErr <- err }()
	<-offered
	if _, err := e.cl.MWS[0].MoveSession(ctx, sess.ID(), "mws-2", "operator"); rpcerr.Reason(err) != "HANDOFF_IN_PROGRESS" {
		t.Fatalf("MASH during CASH: %v", err)
	}
	close(release)
	if err := <-hoErr; rpcerr.Reason(err) != "TARGET_REFUSED" {
		t.Fatalf("handoff: %v", err)
	}
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
		t.Fatal(err)
	}
}

func testLog() *slog.Logger {
	if p := os.Getenv("IMASH_TEST_LOG"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			return slog.New(slog.NewTextHandler(f, nil))
		}
	}
	return nil
}

// endStreamLoad waits for startStreamLoad's goroutines and checks both
// directions against the stream server's own sums, over its one
// connection.
func endStreamLoad(t testing.TB, ctx context.Context, wg *sync.WaitGroup, errs <-chan error, srv *legacy.StreamServer, down hash.Hash, up []byte) {
	t.Helper()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	lc, err := srv.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	<-lc.Done()
	if [32]byte(down.Sum(nil)) != lc.SentSum() || lc.ReceivedSum() != sha256.Sum256(up) {
		t.Fatal("stream bytes differ")
	}
	if n := srv.Accepted(); n != 1 {
		t.Fatalf("legacy server accepted %d connections", n)
	}
}

// startStreamLoad writes upData in random chunk sizes and then half-closes,
// and reads everything into h, on conn.
func startStreamLoad(wg *sync.WaitGroup, conn *clientlib.Conn, upData []byte, h io.Writer, errs chan<- error, done *atomic.Bool) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(1, 2))
		for off := 0; off < len(upData); {
			n := min(len(upData)-off, 1+r.IntN(200<<10))
			if _, err := conn.Write(upData[off : off+n]); err != nil {
				errs <- fmt.Errorf("write: %w", err)
				return
			}
			off += n
		}
		if err := conn.CloseWrite(); err != nil {
			errs <- err
		}
	}()
	go func() {
		defer wg.Done()
		defer done.Store(true)
		if _, err := io.Copy(h, conn); err != nil {
			errs <- fmt.Errorf("read: %w", err)
		}
	}()
}

// TestDrainMovesEverySession drains an MWS holding 200 sessions, one of
// them in the middle of a raw-stream transfer, then stops it: every session
// goes on at a peer (devices that were not told find it with their session
// key), the stream's bytes match both ways and the legacy server saw one
// connection.
func TestDrainMovesEverySession(t *testing.T) {
	const sessions = 200
	e := newMASHEnv(t, 8<<20, func(c *mws.Config) { c.MaxSessionsPerUser = sessions })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	devs := []*clientlib.Client{e.device(t, "laptop", 0), e.device(t, "desk", 0)}
	var all []*clientlib.Session
	for i := range sessions {
		s, err := devs[i%2].OpenSession(ctx, "viewer")
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	conn, err := all[0].Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	upData := make([]byte, 2<<20)
	if _, err := io.ReadFull(legacy.RandomStream(5), upData); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	var done atomic.Bool
	h := sha256.New()
	startStreamLoad(&wg, conn, upData, h, errs, &done)

	src := e.cl.MWS[0]
	t0 := time.Now()
	if err := src.Drain(ctx, nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if n := src.Stats().Sessions; n != 0 {
		t.Fatalf("%d sessions left on the drained MWS", n)
	}
	if n := e.cl.MWS[1].Stats().Sessions + e.cl.MWS[2].Stats().Sessions; n != sessions {
		t.Fatalf("peers hold %d sessions, want %d", n, sessions)
	}
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	for i, s := range all {
		obj, err := s.Get(ctx, "images", "/images/"+img.Name)
		if err != nil {
			t.Fatalf("session %d after the drain: %v", i, err)
		}
		if !bytes.Equal(obj.Body, img.Bytes) || s.MWS() == src.Name() {
			t.Fatalf("session %d: wrong object or still on %s", i, s.MWS())
		}
	}
	endStreamLoad(t, ctx, &wg, errs, e.stream, h, upData)
	t.Logf("drained %d sessions in %v", sessions, took)
}

// TestAdmissionAndOverload: with admission balancing a device that keeps
// dialling one MWS gets its new sessions placed on lighter peers; above
// the overload threshold an MWS moves sessions away until it is at its
// target. Every session keeps working where it lands.
func TestAdmissionAndOverload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img := func(e *mashEnv) *legacy.Image { return e.set.Images()[0] }
	check := func(t *testing.T, e *mashEnv, all []*clientlib.Session) {
		t.Helper()
		for i, s := range all {
			obj, err := s.Get(ctx, "images", "/images/"+img(e).Name)
			if err != nil || !bytes.Equal(obj.Body, img(e).Bytes) {
				t.Fatalf("session %d on %s: %v", i, s.MWS(), err)
			}
		}
	}
	t.Run("admission", func(t *testing.T) {
		e := newMASHEnv(t, 1<<10, func(c *mws.Config) { c.Cluster.AdmissionSlack = 1 })
		c := e.device(t, "laptop", 0)
		var all []*clientlib.Session
		for range 9 {
			s, err := c.OpenSession(ctx, "viewer")
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, s)
		}
		// Loads are published as they change, a little after each move: a
		// placement may read one a moment old, so the spread is checked
		// loosely.
		for _, srv := range e.cl.MWS {
			if n := srv.Stats().Sessions; n < 1 || n > 5 {
				t.Errorf("%s holds %d of 9 sessions", srv.Name(), n)
			}
		}
		check(t, e, all)
	})
	t.Run("overload", func(t *testing.T) {
		e := newMASHEnv(t, 1<<10, func(c *mws.Config) {
			c.MaxSessions = 10
			c.Cluster.OverloadAbove, c.Cluster.OverloadTarget = 0.5, 0.3
			c.Cluster.BalanceInterval = 20 * time.Millisecond
		})
		c := e.device(t, "laptop", 0)
		var all []*clientlib.Session
		for range 8 {
			s, err := c.OpenSession(ctx, "viewer")
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, s)
		}
		pollDeadline(t, "overload relieved", func() bool {
			n := 0
			for _, srv := range e.cl.MWS {
				n += srv.Stats().Sessions
			}
			return e.cl.MWS[0].Stats().Sessions <= 3 && n == 8
		})
		check(t, e, all)
	})
}

// TestUnfinishedDrainTakesSessionsAgain: a drain that ends before every
// session moved (no peer takes sessions; its caller gives up) leaves the
// MWS taking sessions again, with its sessions as they were; a finished
// drain leaves an MWS draining.
func TestUnfinishedDrainTakesSessionsAgain(t *testing.T) {
	e := newMASHEnv(t, 0, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.device(t, "laptop", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	// mws-2 and mws-3 hold nothing: their drains finish at once.
	for _, m := range e.cl.MWS[1:] {
		if err := m.Drain(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	src := e.cl.MWS[0]
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	var last mws.DrainProgress
	err = src.Drain(dctx, func(p mws.DrainProgress) {
		last = p
		if p.Failed > 0 {
			stop() // no peer takes the session: give up
		}
	})
	if !errors.Is(err, context.Canceled) || rpcerr.Reason(last.LastErr) != "NO_PEERS" || last.Remaining != 1 {
		t.Fatalf("drain with no peer to take sessions: %v, progress %+v", err, last)
	}
	if src.Draining() {
		t.Fatal("mws-1 still draining after its drain gave up")
	}
	for _, m := range e.cl.MWS[1:] {
		if !m.Draining() {
			t.Fatalf("%s took sessions again after its drain finished", m.Name())
		}
	}
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil || !bytes.Equal(obj.Body, img.Bytes) || sess.MWS() != "mws-1" {
		t.Fatalf("session on %s after the unfinished drain: %v", sess.MWS(), err)
	}
	// mws-1 admits a new session again (its peers are draining).
	s2, err := c.OpenSession(ctx, "viewer")
	if err != nil || s2.MWS() != "mws-1" {
		t.Fatalf("a new session after the unfinished drain: %v", err)
	}
}
