package clientlib_test

import (
	"context"
	"crypto/sha256"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// libEnv is a cluster in front of an HTTP legacy server and, optionally, a
// stream server, with one logged-in device.
type libEnv struct {
	cl     *cluster.Cluster
	set    *legacy.ImageSet
	http   *legacy.HTTPServer
	stream *legacy.StreamServer
}

func newLibEnv(t *testing.T, stream *legacy.StreamConfig, tune func(*mws.Config)) *libEnv {
	t.Helper()
	set, err := legacy.GenerateImages(3, 6, 512, 48<<10)
	if err != nil {
		t.Fatal(err)
	}
	e := &libEnv{set: set}
	if e.http, err = legacy.NewHTTPServer(set, legacy.HTTPOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.http.Close() })
	backends := map[string]string{"images": e.http.Addr()}
	if stream != nil {
		if e.stream, err = legacy.NewStreamServer(*stream); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.stream.Close() })
		backends["stream"] = e.stream.Addr()
	}
	e.cl, err = cluster.Start(cluster.Options{
		Backends: backends, HTTPBackends: []string{"images"},
		Users: map[string]string{"alice": "secret"}, TuneMWS: tune,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.cl.Close(ctx); err != nil {
			t.Errorf("closing the cluster: %v", err)
		}
	})
	return e
}

// dial connects device with cfg adjusted by tune, without logging in.
func (e *libEnv) dial(t *testing.T, device string, tune func(*clientlib.Config)) *clientlib.Client {
	t.Helper()
	cert, roots, err := e.cl.DeviceCert(device)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientlib.Config{Certificate: cert, Roots: roots}
	if tune != nil {
		tune(&cfg)
	}
	c, err := clientlib.Dial(context.Background(), e.cl.MWSAddrs[0], cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (e *libEnv) session(t *testing.T, ctx context.Context, tune func(*clientlib.Config)) *clientlib.Session {
	t.Helper()
	c := e.dial(t, "pda-1", tune)
	if err := c.Login(ctx, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenSession(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func libCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestConnDetachResume detaches a raw stream in the middle of a transfer
// in both directions and resumes it from the offset the app had read: every
// byte arrives exactly once each way, over the one legacy connection.
func TestConnDetachResume(t *testing.T) {
	size := int64(16 << 20)
	if testing.Short() {
		size = 4 << 20
	}
	const upBefore, upAfter = 1 << 20, 512 << 10
	// The legacy server stops halfway until the device has detached, so the
	// detach is in the middle of the transfer.
	gate := make(chan struct{})
	var release sync.Once
	open := func() { release.Do(func() { close(gate) }) }
	e := newLibEnv(t, &legacy.StreamConfig{SendBytes: size, Seed: 31, CloseWriteAfterSend: true, OnWrite: func(total int64) {
		if total >= size/2 {
			<-gate
		}
	}}, nil)
	t.Cleanup(open)
	ctx := libCtx(t)
	s := e.session(t, ctx, nil)

	conn, err := s.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	up := io.LimitReader(legacy.RandomStream(32), upBefore+upAfter)
	upSum := sha256.New()
	upTee := io.TeeReader(up, upSum)
	if _, err := io.CopyN(conn, upTee, upBefore); err != nil {
		t.Fatal(err)
	}
	down := sha256.New()
	if _, err := io.CopyN(down, conn, size/4); err != nil {
		t.Fatal(err)
	}
	lc, err := e.stream.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Detach once the legacy server has the first upload: up bytes in
	// flight are the app's to resend, and clientlib keeps no copy of them.
	deadline := time.Now().Add(time.Minute)
	for lc.Received() < upBefore {
		if time.Now().After(deadline) {
			t.Fatalf("legacy server received %d of %d bytes", lc.Received(), upBefore)
		}
		time.Sleep(5 * time.Millisecond)
	}
	read, written := conn.Offsets()
	if read != uint64(size/4) || written != upBefore {
		t.Fatalf("offsets read %d written %d, want %d and %d", read, written, size/4, upBefore)
	}
	conn.Detach()
	if sent := lc.Sent(); sent >= size {
		t.Fatalf("the legacy server sent all %d bytes before the detach", sent)
	}
	open()

	// Resuming before what the app acknowledged is refused and changes
	// nothing.
	if _, err := s.Resume(ctx, conn.StreamID(), 0); rpcerr.Code(err) != codes.InvalidArgument || rpcerr.Reason(err) != "RESUME_BEFORE_ACK" {
		t.Fatalf("resume at 0 after acknowledging: %v, want InvalidArgument RESUME_BEFORE_ACK", err)
	}

	conn2, err := s.Resume(ctx, conn.StreamID(), read)
	if err != nil {
		t.Fatal(err)
	}
	if r2, w2 := conn2.Offsets(); r2 != read || w2 != written {
		t.Fatalf("resumed offsets read %d written %d, want %d and %d", r2, w2, read, written)
	}
	upErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn2, upTee)
		if err == nil {
			err = conn2.CloseWrite()
		}
		upErr <- err
	}()
	n, err := io.Copy(down, conn2)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-upErr; err != nil {
		t.Fatal(err)
	}
	select {
	case <-lc.Done():
	case <-ctx.Done():
		t.Fatal("legacy connection did not finish")
	}
	if got := int64(read) + n; got != size || [32]byte(down.Sum(nil)) != lc.SentSum() {
		t.Fatalf("down: %d bytes arrived (want %d) or their SHA-256 differs", got, size)
	}
	if lc.Received() != upBefore+upAfter || [32]byte(upSum.Sum(nil)) != lc.ReceivedSum() {
		t.Fatalf("up: legacy server received %d bytes (want %d) or their SHA-256 differs", lc.Received(), upBefore+upAfter)
	}
	if n := e.stream.Accepted(); n != 1 {
		t.Fatalf("legacy server accepted %d connections, want 1", n)
	}
	_ = conn2.Close()
}
