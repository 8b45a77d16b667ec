package mux_test

import (
	"bytes"
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/mux"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestBadInput: every bad request gets its code and reason, and changes
// nothing: the stream keeps its offsets, its owner can go on, and a second
// stream relays undisturbed throughout.
func TestBadInput(t *testing.T) {
	echo, err := legacy.NewEchoServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()
	e := newEnv(t, []mux.Backend{{Name: "echo", Addr: echo.Addr()}, {Name: "refusing", Addr: refusedAddr}},
		func(c *mux.Config) { c.MaxChunk = 1024; c.UpQueue = 4096; c.MaxStreams = 3 })
	ctx := testCtx(t)
	a := e.mws("mws-a")

	// A bystander stream that must stay unaffected.
	by := open(ctx, t, a, "echo")
	byCh := mustAttach(ctx, t, a, by.StreamId, by.Epoch)
	var byOff uint64
	checkBystander := func(t *testing.T) {
		t.Helper()
		msg := []byte("still here")
		byCh.data(byOff, msg)
		var got []byte
		for len(got) < len(msg) {
			m, err := byCh.ac.Recv()
			if err != nil {
				t.Fatalf("bystander: %v", err)
			}
			if d := m.GetData(); d != nil {
				got = append(got, d.Data...)
			}
		}
		byOff += uint64(len(msg))
		byCh.commit(byOff)
		if !bytes.Equal(got, msg) {
			t.Fatalf("bystander echoed %q", got)
		}
	}

	op := open(ctx, t, a, "echo")
	info := func() *muxv1.StreamInfo {
		in, err := a.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	outer := t
	ch := mustAttach(ctx, t, a, op.StreamId, op.Epoch)
	ch.data(0, []byte("hello"))
	pollUntil(t, "5 bytes written", func() bool { return info().UpWritten == 5 })

	// Each bad message ends the channel with its code; the stream is as it
	// was, and the owner re-attaches.
	for _, tc := range []struct {
		name   string
		send   func(c *channel)
		code   codes.Code
		reason string
	}{
		{"gap", func(c *channel) { c.data(9, []byte("x")) }, codes.InvalidArgument, "OFFSET_GAP"},
		{"too large", func(c *channel) { c.data(5, make([]byte, 1025)) }, codes.InvalidArgument, "CHUNK_TOO_LARGE"},
		{"commit beyond delivered", func(c *channel) { c.commit(1 << 40) }, codes.InvalidArgument, "COMMIT_BEYOND_DELIVERED"},
		{"close at wrong offset", func(c *channel) { c.closeWrite(3) }, codes.InvalidArgument, "CLOSE_OFFSET_MISMATCH"},
		{"second hello", func(c *channel) {
			c.send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Hello{Hello: &muxv1.Hello{StreamId: op.StreamId, Epoch: 1}}})
		}, codes.InvalidArgument, "DUPLICATE_HELLO"},
		{"empty", func(c *channel) { c.send(&muxv1.AttachRequest{}) }, codes.InvalidArgument, "EMPTY_MESSAGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := info()
			tc.send(ch)
			err := ch.drain(nil)
			wantCode(t, err, tc.code, tc.reason)
			after := info()
			if after.UpAccepted != before.UpAccepted || after.UpWritten != before.UpWritten ||
				after.DownCommitted != before.DownCommitted || after.Epoch != before.Epoch || after.Owner != before.Owner {
				t.Fatalf("stream changed: before %v after %v", before, after)
			}
			ch = mustAttach(ctx, outer, a, op.StreamId, op.Epoch)
			checkBystander(t)
		})
	}
	// The stream still works after all of it: "hello" comes back once.
	ch.data(0, []byte("hello world")) // resend of "hello" plus 6 new bytes
	var got []byte
	for len(got) < len("hello world") {
		m, err := ch.ac.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if d := m.GetData(); d != nil {
			got = append(got, d.Data...)
		}
	}
	if string(got) != "hello world" {
		t.Fatalf("echo %q", got)
	}

	t.Run("first message not hello", func(t *testing.T) {
		ac, err := a.Attach(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ac.Send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Commit{Commit: &muxv1.Commit{}}})
		_, err = ac.Recv()
		wantCode(t, err, codes.InvalidArgument, "HELLO_REQUIRED")
	})
	t.Run("unknown stream", func(t *testing.T) {
		_, err := attach(ctx, t, a, "nope", 1)
		wantCode(t, err, codes.NotFound, "UNKNOWN_STREAM")
		_, err = a.Handover(ctx, &muxv1.HandoverRequest{StreamId: "nope", Epoch: 1, To: "b"})
		wantCode(t, err, codes.NotFound, "UNKNOWN_STREAM")
	})
	t.Run("stale epoch", func(t *testing.T) {
		_, err := attach(ctx, t, a, op.StreamId, 2)
		wantCode(t, err, codes.FailedPrecondition, "STALE_EPOCH")
		_, err = a.Handover(ctx, &muxv1.HandoverRequest{StreamId: op.StreamId, Epoch: 0, To: "mws-b"})
		wantCode(t, err, codes.FailedPrecondition, "STALE_EPOCH")
	})
	t.Run("not the owner", func(t *testing.T) {
		_, err := attach(ctx, t, e.mws("mws-z"), op.StreamId, op.Epoch)
		wantCode(t, err, codes.FailedPrecondition, "NOT_OWNER")
		_, err = e.mws("mws-z").Close(ctx, &muxv1.CloseRequest{StreamId: op.StreamId, Epoch: op.Epoch})
		wantCode(t, err, codes.FailedPrecondition, "NOT_OWNER")
	})
	t.Run("bad handover target", func(t *testing.T) {
		_, err := a.Handover(ctx, &muxv1.HandoverRequest{StreamId: op.StreamId, Epoch: op.Epoch, To: "../evil"})
		wantCode(t, err, codes.InvalidArgument, "BAD_TARGET")
	})
	t.Run("unknown backend", func(t *testing.T) {
		_, err := a.Open(ctx, &muxv1.OpenRequest{Backend: "nope"})
		wantCode(t, err, codes.NotFound, "UNKNOWN_BACKEND")
	})
	t.Run("backend refusing", func(t *testing.T) {
		_, err := a.Open(ctx, &muxv1.OpenRequest{Backend: "refusing"})
		wantCode(t, err, codes.Unavailable, "BACKEND_UNAVAILABLE")
	})
	t.Run("too many streams", func(t *testing.T) {
		third := open(ctx, t, a, "echo")
		_, err := a.Open(ctx, &muxv1.OpenRequest{Backend: "echo"})
		wantCode(t, err, codes.ResourceExhausted, "TOO_MANY_STREAMS")
		if _, err := a.Close(ctx, &muxv1.CloseRequest{StreamId: third.StreamId, Epoch: third.Epoch}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("device certificate", func(t *testing.T) {
		dev := e.client(pki.RoleDevice, "pda-1", nil)
		_, err := dev.Open(ctx, &muxv1.OpenRequest{Backend: "echo"})
		wantCode(t, err, codes.PermissionDenied, "WRONG_ROLE")
		_, err = dev.GetStream(ctx, &muxv1.GetStreamRequest{StreamId: op.StreamId})
		wantCode(t, err, codes.PermissionDenied, "WRONG_ROLE")
		_, err = attach(ctx, t, dev, op.StreamId, op.Epoch)
		wantCode(t, err, codes.PermissionDenied, "WRONG_ROLE")
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		other, err := pki.NewCA("test.imash", 0)
		if err != nil {
			t.Fatal(err)
		}
		c := e.client(pki.RoleMWS, "mws-a", other)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err = c.Open(ctx, &muxv1.OpenRequest{Backend: "echo"})
		wantCode(t, err, codes.Unavailable, "")
	})
	checkBystander(t)
	if n := echo.Accepted(); n != 3 {
		t.Fatalf("echo server accepted %d connections, want 3 (the refused open never dials)", n)
	}
}
