package clientlib_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws/muxlink"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// openWithToken opens a Stream call that moves its session in with tok and
// returns the call and its first answer.
func openWithToken(ctx context.Context, d *rawDevice, tok string, open *mwsv1.StreamOpen) (mwsv1.Device_StreamClient, *mwsv1.StreamResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "imash-move-token", tok)
	st, err := d.api.Stream(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Open{Open: open}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	m, err := st.Recv()
	return st, m, err
}

// TestStreamMoveInBadInput: a Stream call that carries a move token is
// refused with a typed error, before anything moves, when its Open opens a
// new stream, names another session, or the token is unknown or too long.
// The token still works afterwards, and other sessions are untouched.
func TestStreamMoveInBadInput(t *testing.T) {
	e := newMASHEnv(t, 1<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.device(t, "laptop", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.OpenSession(ctx, "viewer") // stays on mws-1
	if err != nil {
		t.Fatal(err)
	}
	get := func(s *clientlib.Session) { t.Helper(); getOne(t, ctx, e, s) }
	get(sess)
	at1, at2 := dialRaw(t, e, "laptop", 0), dialRaw(t, e, "laptop", 1)
	at1.login(t, ctx)
	if _, err := operatorAPI(t, e, 0).Move(ctx, &mwsv1.MoveRequest{SessionId: sess.ID(), To: "mws-2"}); err != nil {
		t.Fatal(err)
	}
	tok := at1.redirect(t, ctx, sess.ID())["token"]

	for _, tc := range []struct {
		name   string
		tok    string
		open   *mwsv1.StreamOpen
		code   codes.Code
		reason string
	}{
		{"new stream", tok, &mwsv1.StreamOpen{SessionId: sess.ID(), Backend: "stream"}, codes.InvalidArgument, "MOVE_TOKEN_ON_NEW_STREAM"},
		{"another session", tok, &mwsv1.StreamOpen{SessionId: other.ID(), StreamId: "s1"}, codes.InvalidArgument, "SESSION_MISMATCH"},
		{"unknown token", "AAAA" + tok[4:], &mwsv1.StreamOpen{SessionId: sess.ID(), StreamId: "s1"}, codes.Unauthenticated, "BAD_MOVE_TOKEN"},
		{"token too long", strings.Repeat("x", 300), &mwsv1.StreamOpen{SessionId: sess.ID(), StreamId: "s1"}, codes.InvalidArgument, "FIELD_TOO_LONG"},
	} {
		_, m, err := openWithToken(ctx, at2, tc.tok, tc.open)
		if rpcerr.Code(err) != tc.code || rpcerr.Reason(err) != tc.reason {
			t.Fatalf("%s: answer %v, error %v; want %v %s", tc.name, m, err, tc.code, tc.reason)
		}
	}
	if n := e.cl.MWS[1].Stats().Sessions; n != 1 {
		t.Fatalf("mws-2 holds %d sessions, want the moved one", n)
	}

	// The token was not spent: the device follows with it.
	followed := c.MoveStats().Followed
	get(sess)
	if sess.MWS() != "mws-2" || c.MoveStats().Followed != followed+1 {
		t.Fatalf("session on %s, %d follows", sess.MWS(), c.MoveStats().Followed)
	}
	if _, _, err := openWithToken(ctx, at2, tok, &mwsv1.StreamOpen{SessionId: sess.ID(), StreamId: "s1"}); rpcerr.Reason(err) != "BAD_MOVE_TOKEN" {
		t.Fatalf("the spent token: %v", err)
	}
	get(other)
	if other.MWS() != "mws-1" {
		t.Fatalf("the other session is on %s", other.MWS())
	}
}

// TestMoveInstalledFromTheSourcesWord: a source that announced no streams
// at PrepareMove (so the target has no standby attach at the mux) moves a
// session with a legacy stream; in a second move the stream is not in the
// header either (it opened as the move began). The target installs each
// session with the source's list of handed streams, which must come last,
// after the state's end; a ship out of that order is refused and installs
// nothing. The device then moves in with its stream in one call and reads
// the legacy server's bytes, over one legacy connection a stream.
func TestMoveInstalledFromTheSourcesWord(t *testing.T) {
	const size = 64 << 10
	e := newMASHEnv(t, size, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cert, cc := rogueMWS(t, e, 1)
	peerAPI := mwsv1.NewPeerClient(cc)
	ml, err := muxlink.Dial(e.cl.MuxAddr, pki.ClientTLS(cert, e.cl.CA.Pool(), pki.RoleMux), testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Close()
	ship := func(msgs ...*mwsv1.CompleteMoveMsg) error {
		cm, err := peerAPI.CompleteMove(ctx)
		if err != nil {
			return err
		}
		return sendAll(cm.Send, msgs, func() error { _, err := cm.CloseAndRecv(); return err })
	}
	end := &mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_StateEnd{StateEnd: &mwsv1.StateEnd{}}}
	target := e.cl.MWS[1]
	// A PrepareMove naming a bad stream is refused before anything is
	// reserved or attached.
	kh := sha256.Sum256([]byte("k"))
	_, err = peerAPI.PrepareMove(ctx, &mwsv1.PrepareMoveRequest{Reason: "operator",
		Session: &mwsv1.SessionRecord{SessionId: "00112233445566778899aabbccddeeff", User: "doc", App: "viewer", Device: "pda", KeyHash: kh[:]},
		Streams: []*mwsv1.MovedStream{{StreamId: "s1", Backend: "../x", Epoch: 1}}})
	if rpcerr.Code(err) != codes.InvalidArgument || rpcerr.Reason(err) != "BAD_MOVE_STATE" {
		t.Fatalf("PrepareMove with a bad stream: %v", err)
	}
	pda := dialRaw(t, e, "pda", 1)

	for i, inHeader := range []bool{true, false} {
		st, err := ml.Open(ctx, "stream", "rogue")
		if err != nil {
			t.Fatal(err)
		}
		st.Detach()
		key := fmt.Sprintf("session-key-%d", i)
		kh := sha256.Sum256([]byte(key))
		rec := &mwsv1.SessionRecord{SessionId: fmt.Sprintf("00112233445566778899aabbccddeef%d", i), User: "doc", App: "viewer",
			Device: "pda", CreatedUnixNano: time.Now().UnixNano(), KeyHash: kh[:]}
		prep, err := peerAPI.PrepareMove(ctx, &mwsv1.PrepareMoveRequest{Session: rec, Reason: "operator"})
		if err != nil {
			t.Fatal(err)
		}
		h := &mwsv1.CompleteMoveHeader{MoveId: prep.GetMoveId(), KeyHash: kh[:]}
		if inHeader {
			h.Streams = []*mwsv1.MovedStream{{StreamId: st.ID(), Backend: "stream", Epoch: st.Epoch()}}
		}
		hdr := &mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_Header{Header: h}}
		handedAt := func(epoch uint64) *mwsv1.CompleteMoveMsg {
			return &mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_Handed{Handed: &mwsv1.HandedStreams{
				Streams: []*mwsv1.MovedStream{{StreamId: st.ID(), Backend: "stream", Epoch: epoch}}}}}
		}
		if i == 0 {
			object := &mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_Object{Object: &mwsv1.ShippedObject{Digest: "sha256:00", Last: true}}}
			for _, tc := range []struct {
				name string
				msgs []*mwsv1.CompleteMoveMsg
			}{
				{"no state end", []*mwsv1.CompleteMoveMsg{hdr}},
				{"handed streams before the state's end", []*mwsv1.CompleteMoveMsg{hdr, handedAt(st.Epoch() + 1), end}},
				{"an object after the state's end", []*mwsv1.CompleteMoveMsg{hdr, end, object}},
				{"no handed streams", []*mwsv1.CompleteMoveMsg{hdr, end}},
				{"more after the handed streams", []*mwsv1.CompleteMoveMsg{hdr, end, handedAt(st.Epoch() + 1), end}},
				{"a bad stream", []*mwsv1.CompleteMoveMsg{hdr, end, {Msg: &mwsv1.CompleteMoveMsg_Handed{Handed: &mwsv1.HandedStreams{
					Streams: []*mwsv1.MovedStream{{StreamId: st.ID(), Backend: "../x", Epoch: 2}}}}}}},
			} {
				err := ship(tc.msgs...)
				if rpcerr.Code(err) != codes.InvalidArgument || rpcerr.Reason(err) != "BAD_MOVE_STATE" {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if n := target.Stats().Sessions; n != 0 {
					t.Fatalf("%s: the target holds %d sessions", tc.name, n)
				}
			}
		}

		// For real: the stream is handed over, then the state ships.
		hr, err := ml.API().Handover(ctx, &muxv1.HandoverRequest{StreamId: st.ID(), Epoch: st.Epoch(), To: "mws-2"})
		if err != nil {
			t.Fatal(err)
		}
		if err := ship(hdr, end, handedAt(hr.GetEpoch())); err != nil {
			t.Fatal(err)
		}
		if n := target.Stats().Sessions; n != i+1 {
			t.Fatalf("the target holds %d sessions, want %d", n, i+1)
		}
		readMovedStream(t, ctx, pda, prep.GetToken(), rec.GetSessionId(), st.ID(), size)
		if a := e.stream.Accepted(); a != int64(i+1) {
			t.Fatalf("legacy server accepted %d connections, want %d", a, i+1)
		}
		// The token is spent; the key before the move no longer works.
		if _, _, err := openWithToken(ctx, pda, prep.GetToken(), &mwsv1.StreamOpen{SessionId: rec.GetSessionId(), StreamId: st.ID()}); rpcerr.Reason(err) != "BAD_MOVE_TOKEN" {
			t.Fatalf("the spent token: %v", err)
		}
		_, err = pda.api.MoveIn(ctx, &mwsv1.MoveInRequest{SessionId: rec.GetSessionId(), SessionKey: key})
		if rpcerr.Reason(err) != "BAD_SESSION_KEY" {
			t.Fatalf("the key before the move: %v", err)
		}
	}
}

// readMovedStream moves session id in at d's MWS with tok in a Stream call
// that attaches to stream from offset 0, and checks that it reads the
// legacy stream server's first size bytes.
func readMovedStream(t *testing.T, ctx context.Context, d *rawDevice, tok, id, stream string, size uint64) {
	t.Helper()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	ds, m, err := openWithToken(ctx, d, tok, &mwsv1.StreamOpen{SessionId: id, StreamId: stream})
	if err != nil || m.GetMovedIn().GetSessionKey() == "" || m.GetMovedIn().GetCredential() == "" || m.GetMovedIn().GetMws() != "mws-2" {
		t.Fatalf("first answer %v, %v: want MovedIn", m, err)
	}
	if m, err = ds.Recv(); err != nil || m.GetOpened().GetStreamId() != stream || m.GetOpened().GetDownOffset() != 0 {
		t.Fatalf("second answer %v, %v: want Opened at 0", m, err)
	}
	got := sha256.New()
	var n uint64
	for n < size {
		m, err := ds.Recv()
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		if d := m.GetData(); d != nil {
			if d.Offset != n {
				t.Fatalf("data at %d, want %d", d.Offset, n)
			}
			got.Write(d.Data)
			n += uint64(len(d.Data))
		}
	}
	want := sha256.New()
	if _, err := io.CopyN(want, legacy.RandomStream(21), int64(size)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("the stream's bytes differ from the legacy server's")
	}
}
