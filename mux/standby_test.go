package mux_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/mux"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// standbyResult is what a standby attach ended with.
type standbyResult struct {
	ch  *channel
	err error
}

// startStandby begins a standby attach of c to stream id at epoch; its
// result arrives on the returned channel.
func startStandby(ctx context.Context, t *testing.T, c muxv1.MuxClient, id string, epoch uint64) <-chan standbyResult {
	out := make(chan standbyResult, 1)
	go func() {
		ch, err := attachHello(ctx, t, c, &muxv1.Hello{StreamId: id, Epoch: epoch, Standby: true})
		out <- standbyResult{ch, err}
	}()
	return out
}

func waitStandby(t *testing.T, r <-chan standbyResult) standbyResult {
	t.Helper()
	select {
	case res := <-r:
		if res.ch != nil {
			t.Cleanup(res.ch.cancel)
		}
		return res
	case <-time.After(time.Minute):
		t.Fatal("standby attach did not end")
		return standbyResult{}
	}
}

// echoOnce sends msg at up offset up on ch and reads its echo at down
// offset down, then commits it.
func echoOnce(t *testing.T, ch *channel, up uint64, down uint64, msg []byte) {
	t.Helper()
	ch.data(up, msg)
	var got []byte
	for len(got) < len(msg) {
		m, err := ch.ac.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if d := m.GetData(); d != nil {
			if d.Offset != down+uint64(len(got)) {
				t.Fatalf("data at %d, want %d", d.Offset, down+uint64(len(got)))
			}
			got = append(got, d.Data...)
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
	ch.commit(down + uint64(len(got)))
}

// TestStandbyAttach: an MWS about to be handed a stream attaches ahead as a
// standby; the handover gives it the stream at once, with every byte in
// order. Standbys that cannot get the stream end with a typed error, and
// the stream is as it was.
func TestStandbyAttach(t *testing.T) {
	echo, err := legacy.NewEchoServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	e := newEnv(t, []mux.Backend{{Name: "echo", Addr: echo.Addr()}}, func(c *mux.Config) { c.StandbyTimeout = 2 * time.Second })
	ctx := testCtx(t)
	a, b, c := e.mws("mws-a"), e.mws("mws-b"), e.mws("mws-c")
	op := open(ctx, t, a, "echo")
	ach := mustAttach(ctx, t, a, op.StreamId, op.Epoch)

	// Refused at once: the owner's own standby, a wrong epoch, an unknown
	// stream.
	_, err = attachHello(ctx, t, a, &muxv1.Hello{StreamId: op.StreamId, Epoch: op.Epoch, Standby: true})
	wantCode(t, err, codes.FailedPrecondition, "ALREADY_OWNER")
	_, err = attachHello(ctx, t, b, &muxv1.Hello{StreamId: op.StreamId, Epoch: op.Epoch + 1, Standby: true})
	wantCode(t, err, codes.FailedPrecondition, "STALE_EPOCH")
	_, err = attachHello(ctx, t, b, &muxv1.Hello{StreamId: "nosuch", Epoch: 1, Standby: true})
	wantCode(t, err, codes.NotFound, "")

	// A standby that waits past the limit.
	res := waitStandby(t, startStandby(ctx, t, b, op.StreamId, op.Epoch))
	wantCode(t, res.err, codes.DeadlineExceeded, "STANDBY_TIMEOUT")

	// A standby while the owner works on: the owner's bytes go on.
	first := startStandby(ctx, t, b, op.StreamId, op.Epoch)
	echoOnce(t, ach, 0, 0, []byte("while b stands by"))
	// A newer standby ends the first. Which of the two calls reaches the
	// mux first is not known, so the one that ended is the older.
	second := startStandby(ctx, t, b, op.StreamId, op.Epoch)
	var waiting <-chan standbyResult
	select {
	case r := <-first:
		wantCode(t, r.err, codes.Aborted, "STANDBY_REPLACED")
		waiting = second
	case r := <-second:
		wantCode(t, r.err, codes.Aborted, "STANDBY_REPLACED")
		waiting = first
	case <-time.After(time.Minute):
		t.Fatal("neither standby ended")
	}
	n := uint64(len("while b stands by"))
	echoOnce(t, ach, n, n, []byte("still a's"))
	n += uint64(len("still a's"))

	// The handover to b hands b's waiting standby the stream.
	resp, err := a.Handover(ctx, &muxv1.HandoverRequest{StreamId: op.StreamId, Epoch: op.Epoch, To: "mws-b", HasCommit: true, CommitOffset: n})
	if err != nil {
		t.Fatal(err)
	}
	r := waitStandby(t, waiting)
	if r.err != nil {
		t.Fatalf("standby after the handover: %v", r.err)
	}
	if r.ch.attached.Epoch != resp.Epoch || r.ch.attached.DownOffset != n || r.ch.attached.UpOffset != n {
		t.Fatalf("standby attached %v, want epoch %d at offsets %d", r.ch.attached, resp.Epoch, n)
	}
	echoOnce(t, r.ch, n, n, []byte("now b's"))
	n += uint64(len("now b's"))

	// The owner detached when it hands the stream over: the standby gets
	// it all the same.
	cs := startStandby(ctx, t, c, op.StreamId, resp.Epoch)
	r.ch.cancel()
	pollUntil(t, "b detached", func() bool {
		in, err := a.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
		return err == nil && !in.Attached
	})
	respC, err := b.Handover(ctx, &muxv1.HandoverRequest{StreamId: op.StreamId, Epoch: resp.Epoch, To: "mws-c", HasCommit: true, CommitOffset: n})
	if err != nil {
		t.Fatal(err)
	}
	rc := waitStandby(t, cs)
	if rc.err != nil || rc.ch.attached.Epoch != respC.Epoch {
		t.Fatalf("standby of c after a detached owner's handover: %v, %v", rc.err, rc.ch)
	}
	echoOnce(t, rc.ch, n, n, []byte("c's"))
	n += uint64(len("c's"))
	resp = respC
	b, c = c, b

	// A standby of c's, then b hands the stream to a: c's standby ends.
	cs = startStandby(ctx, t, c, op.StreamId, resp.Epoch)
	resp2, err := b.Handover(ctx, &muxv1.HandoverRequest{StreamId: op.StreamId, Epoch: resp.Epoch, To: "mws-a", HasCommit: true, CommitOffset: n})
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, waitStandby(t, cs).err, codes.FailedPrecondition, "")
	ach2 := mustAttach(ctx, t, a, op.StreamId, resp2.Epoch)
	echoOnce(t, ach2, n, n, []byte("a's again"))

	// A standby ends when the stream closes.
	cs = startStandby(ctx, t, c, op.StreamId, resp2.Epoch)
	if _, err := a.Close(ctx, &muxv1.CloseRequest{StreamId: op.StreamId, Epoch: resp2.Epoch}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, waitStandby(t, cs).err, codes.NotFound, "")
	if got := echo.Accepted(); got != 1 {
		t.Fatalf("legacy server accepted %d connections, want 1", got)
	}
}
