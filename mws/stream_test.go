package mws_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mux"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestRawStreamBothWays moves 64 MiB of random bytes each way at once over
// one raw stream and proves that each end received exactly what the other
// sent, over a single legacy TCP connection.
func TestRawStreamBothWays(t *testing.T) {
	size := int64(64 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	const downSeed, upSeed = 21, 22
	e := newEnv(t, envOptions{stream: &legacy.StreamConfig{SendBytes: size, Seed: downSeed, CloseWriteAfterSend: true}})
	ctx := testCtx(t)
	_, s := e.login(ctx, "laptop-1", "alice")
	conn, err := s.Dial(ctx, streamBackend)
	if err != nil {
		t.Fatal(err)
	}

	upSum := sha256.New()
	upErr := make(chan error, 1)
	go func() {
		src := io.TeeReader(io.LimitReader(legacy.RandomStream(upSeed), size), upSum)
		n, err := io.Copy(conn, src)
		if err == nil && n != size {
			err = fmt.Errorf("wrote %d of %d bytes", n, size)
		}
		if err == nil {
			err = conn.CloseWrite()
		}
		upErr <- err
	}()

	downSum := sha256.New()
	got, err := io.Copy(downSum, conn)
	if err != nil {
		t.Fatalf("reading after %d bytes: %v", got, err)
	}
	if err := <-upErr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if got != size {
		t.Fatalf("read %d bytes, the legacy server sent %d", got, size)
	}

	lc, err := e.stream.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lc.Done():
	case <-ctx.Done():
		t.Fatalf("legacy connection did not finish: received %d of %d bytes", lc.Received(), size)
	}
	if err := lc.Err(); err != nil {
		t.Fatalf("legacy connection: %v", err)
	}
	if lc.Sent() != size || [32]byte(downSum.Sum(nil)) != lc.SentSum() {
		t.Fatalf("down: legacy server sent %d bytes; the device's SHA-256 differs", lc.Sent())
	}
	if lc.Received() != size || [32]byte(upSum.Sum(nil)) != lc.ReceivedSum() {
		t.Fatalf("up: legacy server received %d of %d bytes, or their SHA-256 differs", lc.Received(), size)
	}
	if n := e.stream.Accepted(); n != 1 {
		t.Fatalf("legacy server accepted %d connections, want 1", n)
	}
	if err := conn.Close(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("close: %v", err)
	}
}

// TestExpiredStreamFreesItsPlace proves that a raw stream the mux closed
// while no device was attached (its orphan timeout expired) no longer
// counts against the session's stream limit, and that resuming it reports
// it unknown.
func TestExpiredStreamFreesItsPlace(t *testing.T) {
	e := newEnv(t, envOptions{
		stream:  &legacy.StreamConfig{SendBytes: 1 << 20, Seed: 3},
		tuneMux: func(c *mux.Config) { c.OrphanTimeout = time.Second },
		tuneMWS: func(c *mws.Config) { c.MaxStreamsPerSession = 1 },
	})
	ctx := testCtx(t)
	_, s := e.login(ctx, "pda-1", "alice")
	conn, err := s.Dial(ctx, streamBackend)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Dial(ctx, streamBackend); rpcerr.Code(err) != codes.ResourceExhausted || rpcerr.Reason(err) != "TOO_MANY_STREAMS" {
		t.Fatalf("second stream while the first is open: %v, want ResourceExhausted TOO_MANY_STREAMS", err)
	}
	conn.Detach()
	lc, err := e.stream.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lc.Done(): // the orphaned stream expired at the mux
	case <-ctx.Done():
		t.Fatal("the orphaned stream never expired")
	}
	conn2, err := s.Dial(ctx, streamBackend)
	if err != nil {
		t.Fatalf("a new stream after the first expired: %v", err)
	}
	defer conn2.Close()
	if _, err := s.Resume(ctx, conn.StreamID(), 0); rpcerr.Code(err) != codes.NotFound {
		t.Fatalf("resume of the expired stream: %v, want NotFound", err)
	}
	if n := e.stream.Accepted(); n != 2 {
		t.Fatalf("legacy server accepted %d connections, want 2", n)
	}
}
