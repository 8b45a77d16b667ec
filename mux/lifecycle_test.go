package mux_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/mux"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestOwnerVanishes: the owner disappears abruptly with nothing committed
// past some offset; another MWS takes the stream over and receives every
// byte from the last committed offset on.
func TestOwnerVanishes(t *testing.T) {
	const size = 8 << 20
	ls, err := legacy.NewStreamServer(legacy.StreamConfig{SendBytes: size, Seed: 3, CloseWriteAfterSend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Close() })
	e := newEnv(t, []mux.Backend{{Name: "stream", Addr: ls.Addr()}}, nil)
	ctx := testCtx(t)
	a, b := e.mws("mws-a"), e.mws("mws-b")
	op := open(ctx, t, a, "stream")

	upload := make([]byte, 2<<20)
	if _, err := io.ReadFull(legacy.RandomStream(99), upload); err != nil {
		t.Fatal(err)
	}
	down := sha256.New()
	var committed uint64
	chA := mustAttach(ctx, t, a, op.StreamId, op.Epoch)
	chA.data(0, upload[:60000])
	chA.data(60000, upload[60000:100000])
	var got uint64
	for got < 3<<20 {
		m, err := chA.ac.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if d := m.GetData(); d != nil {
			got += uint64(len(d.Data))
			if committed == 0 && got >= 1<<20 {
				// Commit a prefix once; everything after it stays uncommitted.
				committed = got
				chA.commit(committed)
			}
		}
	}
	// The bytes A processed (and committed) are the prefix [0, committed).
	// Rebuild them from the deterministic stream for the final checksum.
	prefix := make([]byte, committed)
	if _, err := io.ReadFull(legacy.RandomStream(3), prefix); err != nil {
		t.Fatal(err)
	}
	down.Write(prefix)

	// A has not seen its commit acknowledged; wait until the mux applied it
	// before A vanishes, so the test knows which offset is committed.
	pollUntil(t, "commit applied", func() bool {
		in, err := a.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
		return err == nil && in.DownCommitted == committed
	})
	chA.cancel() // abrupt: RPC cancelled, no handover, no further commit

	// Without force, a takeover waits until the mux saw the owner go.
	pollUntil(t, "owner detached", func() bool {
		in, err := b.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
		return err == nil && !in.Attached
	})
	_, err = b.Takeover(ctx, &muxv1.TakeoverRequest{StreamId: op.StreamId, ExpectEpoch: 7})
	wantCode(t, err, codes.FailedPrecondition, "STALE_EPOCH")
	tr, err := b.Takeover(ctx, &muxv1.TakeoverRequest{StreamId: op.StreamId, ExpectEpoch: op.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Epoch != op.Epoch+1 || tr.Committed != committed || tr.PreviousOwner != "mws-a" {
		t.Fatalf("takeover %v, want epoch %d committed %d from mws-a", tr, op.Epoch+1, committed)
	}
	// A second MWS racing for the same stream loses.
	_, err = e.mws("mws-c").Takeover(ctx, &muxv1.TakeoverRequest{StreamId: op.StreamId, ExpectEpoch: op.Epoch})
	wantCode(t, err, codes.FailedPrecondition, "STALE_EPOCH")

	chB := mustAttach(ctx, t, b, op.StreamId, tr.Epoch)
	if chB.attached.DownOffset != committed {
		t.Fatalf("B starts at %d, want %d", chB.attached.DownOffset, committed)
	}
	upOff := chB.attached.UpOffset
	if upOff != 100000 {
		t.Fatalf("up offset %d, want 100000", upOff)
	}
	chB.dataAll(upOff, upload[upOff:])
	chB.closeWrite(uint64(len(upload)))
	n := committed
	for done := false; !done; {
		m, err := chB.ac.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.Msg.(type) {
		case *muxv1.AttachResponse_Data:
			if m.Data.Offset != n {
				t.Fatalf("data at %d, want %d", m.Data.Offset, n)
			}
			down.Write(m.Data.Data)
			n += uint64(len(m.Data.Data))
			chB.commit(n)
		case *muxv1.AttachResponse_Closed:
			done = true
		}
	}
	lc, _ := ls.WaitConn(ctx, 0)
	<-lc.Done()
	if [32]byte(down.Sum(nil)) != lc.SentSum() || n != size {
		t.Fatalf("down bytes differ: got %d bytes", n)
	}
	if lc.ReceivedSum() != sha256.Sum256(upload) {
		t.Fatalf("up bytes differ: legacy received %d", lc.Received())
	}
	if ls.Accepted() != 1 {
		t.Fatalf("legacy accepted %d connections", ls.Accepted())
	}
}

// TestForcedTakeover cuts an owner that is still attached.
func TestForcedTakeover(t *testing.T) {
	echo, err := legacy.NewEchoServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	e := newEnv(t, []mux.Backend{{Name: "echo", Addr: echo.Addr()}}, nil)
	ctx := testCtx(t)
	a, b := e.mws("mws-a"), e.mws("mws-b")
	op := open(ctx, t, a, "echo")
	chA := mustAttach(ctx, t, a, op.StreamId, op.Epoch)
	_, err = b.Takeover(ctx, &muxv1.TakeoverRequest{StreamId: op.StreamId, ExpectEpoch: op.Epoch})
	wantCode(t, err, codes.FailedPrecondition, "OWNER_ATTACHED")
	if _, err := b.Takeover(ctx, &muxv1.TakeoverRequest{StreamId: op.StreamId, ExpectEpoch: op.Epoch, Force: true}); err != nil {
		t.Fatal(err)
	}
	var cut *muxv1.Cut
	if err := chA.drain(func(m *muxv1.AttachResponse) { cut = m.GetCut() }); err != nil || cut == nil || cut.Reason != muxv1.CutReason_CUT_REASON_TAKEOVER || cut.Owner != "mws-b" {
		t.Fatalf("A's channel: err %v, cut %v", err, cut)
	}
}

// TestSlowOwner: an owner that commits slowly holds the legacy server back;
// the mux never retains more than its limit and every byte arrives.
func TestSlowOwner(t *testing.T) {
	const size = 32 << 20
	const retention = 256 << 10
	// Kernel socket buffers between the legacy server and the mux hold some
	// bytes the mux has not read; on loopback they stay well below this.
	const socketSlack = 16 << 20
	ls, err := legacy.NewStreamServer(legacy.StreamConfig{SendBytes: size, Seed: 5, CloseWriteAfterSend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Close() })
	e := newEnv(t, []mux.Backend{{Name: "stream", Addr: ls.Addr()}}, func(c *mux.Config) { c.Retention = retention })
	ctx := testCtx(t)
	a := e.mws("mws-a")
	op := open(ctx, t, a, "stream")
	lc, err := ls.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := mustAttach(ctx, t, a, op.StreamId, op.Epoch)
	down := sha256.New()
	var n, committed uint64
	held := 0
	for eof := false; !eof; {
		m, err := ch.ac.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.Msg.(type) {
		case *muxv1.AttachResponse_Data:
			down.Write(m.Data.Data)
			n += uint64(len(m.Data.Data))
			if n > committed+retention {
				t.Fatalf("delivered %d bytes past the commit at %d: more than the retention limit %d", n-committed, committed, retention)
			}
			if n == committed+retention {
				// The window is full: the mux may read nothing more until we
				// commit, so the legacy server is held back.
				if sent := lc.Sent(); sent > int64(n)+socketSlack {
					t.Fatalf("legacy server sent %d bytes while only %d were delivered", sent, n)
				}
				held++
				committed = n
				ch.commit(committed)
			}
		case *muxv1.AttachResponse_Eof:
			eof = true
			ch.commit(n)
		}
	}
	in, err := a.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
	if err != nil {
		t.Fatal(err)
	}
	if in.DownRetainedPeak > retention || in.DownRetainedPeak == 0 {
		t.Fatalf("retained peak %d, limit %d", in.DownRetainedPeak, retention)
	}
	if [32]byte(down.Sum(nil)) != lc.SentSum() || n != size {
		t.Fatalf("down bytes differ after %d bytes", n)
	}
	if held < size/retention/2 {
		t.Fatalf("the window filled only %d times", held)
	}
	t.Logf("window of %d bytes filled %d times; retained peak %d", retention, held, in.DownRetainedPeak)
}

// TestHalfClose covers EOF and half-close in each direction, Close and the
// orphan timeout.
func TestHalfClose(t *testing.T) {
	ls, err := legacy.NewStreamServer(legacy.StreamConfig{SendBytes: 300000, Seed: 8, CloseWriteAfterSend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Close() })
	echo, err := legacy.NewEchoServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	e := newEnv(t, []mux.Backend{{Name: "stream", Addr: ls.Addr()}, {Name: "echo", Addr: echo.Addr()}}, nil)
	// The orphan timeout gets its own mux: the other cases must not race it.
	eo := newEnv(t, []mux.Backend{{Name: "stream", Addr: ls.Addr()}}, func(c *mux.Config) { c.OrphanTimeout = 300 * time.Millisecond })
	ctx := testCtx(t)
	a := e.mws("mws-a")

	t.Run("server half-closes first", func(t *testing.T) {
		op := open(ctx, t, a, "stream")
		ch := mustAttach(ctx, t, a, op.StreamId, op.Epoch)
		var n uint64
		for eof := false; !eof; {
			m, err := ch.ac.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if d := m.GetData(); d != nil {
				n += uint64(len(d.Data))
			}
			if m.GetEof() != nil {
				if m.GetEof().Offset != 300000 || n != 300000 {
					t.Fatalf("eof at %d after %d bytes", m.GetEof().Offset, n)
				}
				eof = true
			}
		}
		// The legacy server still reads after its half-close.
		ch.data(0, []byte("after eof"))
		ch.closeWrite(9)
		ch.commit(n)
		var closed *muxv1.Closed
		if err := ch.drain(func(m *muxv1.AttachResponse) {
			if c := m.GetClosed(); c != nil {
				closed = c
			}
		}); err != nil || closed == nil || closed.Reason != muxv1.CloseReason_CLOSE_REASON_FINISHED {
			t.Fatalf("end: %v, closed %v", err, closed)
		}
		lc, _ := ls.WaitConn(ctx, 0)
		<-lc.Done()
		if lc.Received() != 9 || lc.ReceivedSum() != sha256.Sum256([]byte("after eof")) {
			t.Fatalf("legacy received %d bytes", lc.Received())
		}
		_, err := a.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
		wantCode(t, err, codes.NotFound, "UNKNOWN_STREAM")
	})

	t.Run("owner half-closes first", func(t *testing.T) {
		op := open(ctx, t, a, "echo")
		ch := mustAttach(ctx, t, a, op.StreamId, op.Epoch)
		msg := bytes.Repeat([]byte("imash "), 50000)
		for off := 0; off < len(msg); off += 60000 {
			ch.data(uint64(off), msg[off:min(off+60000, len(msg))])
		}
		ch.closeWrite(uint64(len(msg)))
		var got []byte
		for eof := false; !eof; {
			m, err := ch.ac.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if d := m.GetData(); d != nil {
				got = append(got, d.Data...)
				ch.commit(uint64(len(got)))
			}
			if f := m.GetEof(); f != nil {
				eof = true
				if f.Offset != uint64(len(msg)) {
					t.Fatalf("eof at %d", f.Offset)
				}
			}
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo differs: %d bytes", len(got))
		}
	})

	t.Run("close closes the legacy connection", func(t *testing.T) {
		before := len(ls.Conns())
		op := open(ctx, t, a, "stream")
		lc, err := ls.WaitConn(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Close(ctx, &muxv1.CloseRequest{StreamId: op.StreamId, Epoch: op.Epoch}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-lc.Done():
		case <-ctx.Done():
			t.Fatal("legacy connection still open after Close")
		}
	})

	t.Run("orphan expires", func(t *testing.T) {
		a := eo.mws("mws-a")
		before := len(ls.Conns())
		op := open(ctx, t, a, "stream")
		lc, err := ls.WaitConn(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		select {
		case <-lc.Done():
		case <-waitCtx.Done():
			t.Fatal("orphaned stream not closed")
		}
		pollUntil(t, "stream forgotten", func() bool {
			_, err := a.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
			return err != nil
		})
	})
}
