package mws_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mux"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// Functions whose goroutines belong to one device transfer; none may
// outlive the device.
var transferFuncs = []string{
	"clientlib.(*Conn).recvLoop",
	"muxlink.(*Stream).recvLoop",
	"mws.(*deviceService).Stream",
	"mws.(*deviceService).Get",
}

// TestDeviceVanishes proves that a device disappearing in the middle of a
// transfer — a Get waiting on a slow legacy server, a Get of a big cached
// object, a raw stream it stopped reading (backed up into the MWS), a raw
// stream whose bytes clientlib is still queueing — leaves no goroutine
// behind in the client library or the MWS, that the mux releases the
// legacy connection when the orphaned stream expires, and that another
// device's session keeps working throughout.
func TestDeviceVanishes(t *testing.T) {
	e := newEnv(t, envOptions{
		set: workloadSet(t),
		// A stream that never ends by itself, so a transfer is always
		// in the middle when the device goes.
		stream: &legacy.StreamConfig{SendBytes: 1 << 40, Seed: 5},
		tuneMux: func(c *mux.Config) {
			// Room for the pipeline to back up to the device before the mux
			// stops reading; and orphaned streams expire within the test.
			c.Retention = 64 << 20
			c.OrphanTimeout = time.Second
		},
	})
	ctx := testCtx(t)
	imgs := e.set.Images()
	big := imgs[0]
	for _, img := range imgs {
		if len(img.Bytes) > len(big.Bytes) {
			big = img
		}
	}

	// The bystander warms the cache (one keep-alive legacy connection).
	bc, bs := e.login(ctx, "bystander", "bob")
	for _, img := range imgs {
		if _, err := bs.Get(ctx, httpBackend, "/images/"+img.Name); err != nil {
			t.Fatal(err)
		}
	}
	baseline := runtime.NumGoroutine()
	baseFuncs := map[string]int{}
	for _, fn := range transferFuncs {
		baseFuncs[fn] = goroutinesIn(fn)
	}

	// It then keeps using its session while devices vanish: cache hits and
	// echo round trips on streams of its own.
	stop := make(chan struct{})
	var rounds atomic.Int64
	bystanderErr := make(chan error, 1)
	go func() { bystanderErr <- bystander(ctx, bs, imgs, stop, &rounds) }()
	waitRounds := func(n int64) {
		t.Helper()
		target := rounds.Load() + n
		pollUntil(t, "the bystander's session to make progress", func() bool {
			select {
			case err := <-bystanderErr:
				t.Fatalf("bystander: %v", err)
			default:
			}
			return rounds.Load() >= target
		})
	}
	waitRounds(1)

	t.Run("get from a slow legacy server", func(t *testing.T) {
		c, s := e.login(ctx, "vanishing-1", "alice")
		defer c.Close()
		gctx, cancel := context.WithCancel(ctx)
		path := "/slow/" + big.Name
		done := make(chan error, 1)
		go func() {
			_, err := s.Get(gctx, httpBackend, path+"?bps=65536")
			done <- err
		}()
		pollUntil(t, "the legacy server to be sending", func() bool {
			return e.http.RequestsFor(path) == 1 && e.http.InFlight() > 0
		})
		cancel()
		if err := <-done; rpcerr.Code(err) != codes.Canceled {
			t.Fatalf("cancelled Get: %v, want Canceled", err)
		}
		// The MWS gives up the upstream request, so the legacy server's
		// handler ends: the cancellation reached the legacy server.
		pollUntil(t, "the slow response to be abandoned", func() bool { return e.http.InFlight() == 0 })
		pollUntil(t, "the MWS to count the abandoned fetch as failed", func() bool { return e.mws.Stats().Cache.Errors == 1 })
		waitRounds(1)
	})

	t.Run("get of a big cached object", func(t *testing.T) {
		r := e.raw("vanishing-2")
		r.login(ctx, "alice")
		defer r.close()
		sid, sctx := r.openSession(ctx)
		for range 3 {
			gctx, cancel := context.WithCancel(sctx)
			st, err := r.api.Get(gctx, &mwsv1.GetRequest{SessionId: sid, Backend: httpBackend, Path: "/images/" + big.Name})
			if err != nil {
				t.Fatal(err)
			}
			m, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m.GetMeta().GetSize() != int64(len(big.Bytes)) || m.GetMeta().GetCache() != mwsv1.CacheOutcome_CACHE_OUTCOME_HIT {
				t.Fatalf("meta %v: want a hit of %d bytes", m.GetMeta(), len(big.Bytes))
			}
			cancel() // gone after the metadata, before the body
		}
		waitRounds(1)
	})

	// legacyConn returns the stream server's newest connection.
	legacyConn := func(t *testing.T) *legacy.StreamConn {
		t.Helper()
		lc, err := e.stream.WaitConn(ctx, int(e.stream.Accepted()-1))
		if err != nil {
			t.Fatal(err)
		}
		return lc
	}
	// released waits until the mux let go of a vanished device's legacy
	// connection: the stream stays open for a resume until the orphan
	// timeout, and then the connection is closed.
	released := func(t *testing.T, lc *legacy.StreamConn) {
		t.Helper()
		select {
		case <-lc.Done():
		case <-ctx.Done():
			t.Fatalf("the vanished device's legacy connection was never released (sent %d bytes)", lc.Sent())
		}
		waitRounds(1)
	}

	// A device that stops reading a raw stream (it hangs, then dies) backs
	// the stream up into the MWS: the relay blocks on the device's flow
	// control and the MWS's mux channel fills. Then it vanishes.
	stalled := func(t *testing.T, device string, vanish func(r *rawDevice, cancel context.CancelFunc)) {
		r := e.raw(device)
		r.login(ctx, "alice")
		sid, sctx := r.openSession(ctx)
		blockedBefore := blockedSending("muxlink.(*Stream).recvLoop")
		stctx, cancel := context.WithCancel(sctx)
		defer cancel()
		st, err := r.api.Stream(stctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Open{Open: &mwsv1.StreamOpen{SessionId: sid, Backend: streamBackend}}}); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 1<<20; {
			m, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			got += len(m.GetData().GetData())
		}
		pollUntil(t, "the stream to back up into the MWS", func() bool {
			return blockedSending("muxlink.(*Stream).recvLoop") > blockedBefore
		})
		lc := legacyConn(t)
		vanish(r, cancel)
		released(t, lc)
	}
	t.Run("stalled raw stream, device cancels", func(t *testing.T) {
		stalled(t, "vanishing-3", func(r *rawDevice, cancel context.CancelFunc) {
			cancel()
			r.close()
		})
	})
	t.Run("stalled raw stream, device drops its connection", func(t *testing.T) {
		stalled(t, "vanishing-4", func(r *rawDevice, _ context.CancelFunc) { r.close() })
	})

	// A clientlib app that stops reading: the library queues what arrives
	// (bounded by the mux's retention), then the device closes.
	t.Run("raw stream through clientlib, device closes", func(t *testing.T) {
		c, s := e.login(ctx, "vanishing-5", "alice")
		conn, err := s.Dial(ctx, streamBackend)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, conn, 1<<20); err != nil {
			t.Fatal(err)
		}
		lc := legacyConn(t)
		pollUntil(t, "more bytes in flight than the app read", func() bool { return lc.Sent() > 8<<20 })
		_ = c.Close()
		released(t, lc)
	})

	close(stop)
	if err := <-bystanderErr; err != nil {
		t.Fatalf("bystander: %v", err)
	}
	if rounds.Load() < 5 {
		t.Fatalf("bystander made only %d rounds", rounds.Load())
	}

	// Nothing of any transfer is left: exactly by function, and overall
	// with a margin for runtime and gRPC housekeeping goroutines. (The
	// bystander is still connected, as it was for the baseline.)
	const margin = 5
	settled := func() bool {
		for _, fn := range transferFuncs {
			if goroutinesIn(fn) > baseFuncs[fn] {
				return false
			}
		}
		return runtime.NumGoroutine() <= baseline+margin
	}
	for deadline := time.Now().Add(30 * time.Second); !settled(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines leaked: baseline %d (%v), now %d (%s)", baseline, baseFuncs, runtime.NumGoroutine(), describeGoroutines(transferFuncs))
		}
	}
	t.Logf("goroutines: baseline %d, now %d; %s", baseline, runtime.NumGoroutine(), describeGoroutines(transferFuncs))
	_ = bc.Close()
}

// bystander fetches cached images and echoes bytes over fresh raw streams
// until stop is closed, counting rounds.
func bystander(ctx context.Context, s *clientlib.Session, imgs []*legacy.Image, stop <-chan struct{}, rounds *atomic.Int64) error {
	msg := bytes.Repeat([]byte("still here "), 1000)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		img := imgs[i%len(imgs)]
		obj, err := s.Get(ctx, httpBackend, "/images/"+img.Name)
		if err != nil {
			return fmt.Errorf("round %d: get: %w", i, err)
		}
		if !bytes.Equal(obj.Body, img.Bytes) || obj.Cache != mwsv1.CacheOutcome_CACHE_OUTCOME_HIT {
			return fmt.Errorf("round %d: %s: %d bytes, %v", i, img.Name, len(obj.Body), obj.Cache)
		}
		if err := echoOnce(ctx, s, msg); err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		rounds.Add(1)
	}
}

// echoOnce opens a raw stream to the echo server, sends msg, half-closes
// and checks that exactly msg comes back.
func echoOnce(ctx context.Context, s *clientlib.Session, msg []byte) error {
	conn, err := s.Dial(ctx, echoBackend)
	if err != nil {
		return fmt.Errorf("dial echo: %w", err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		if _, werr = conn.Write(msg); werr == nil {
			werr = conn.CloseWrite()
		}
	})
	got, err := io.ReadAll(conn)
	wg.Wait()
	if err := errors.Join(err, werr); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo returned %d bytes, sent %d", len(got), len(msg))
	}
	return nil
}

// blockedSending counts the goroutines blocked on a channel operation in
// fn itself (not in a function it called, such as a gRPC Recv): for a
// receive loop, blocked handing a message on.
func blockedSending(fn string) int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		lines := strings.SplitN(g, "\n", 3)
		if len(lines) < 2 {
			continue
		}
		waiting := strings.Contains(lines[0], "[chan send") || strings.Contains(lines[0], "[select")
		if waiting && strings.Contains(lines[1], fn) {
			n++
		}
	}
	return n
}
