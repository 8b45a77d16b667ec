package clientlib_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// TestSavepointSurvivesMWSFailure: a handoff's savepoint is stored, and
// then the MWS that stored it fails before the target takes the session.
// The source finds the session's replica on another MWS with its key and
// takes it up there: with the savepoint as stored, and the raw stream from
// the next byte, both directions checked end to end over the one legacy
// connection.
//
// An MWS that stops gracefully rolls the handoff back first, so the source
// always has the acknowledgement and reclaims its stored state. One killed
// at once may take the acknowledgement with it; the source then never
// dropped its state, the handoff fails, and the session goes on from the
// replica as it was.
func TestSavepointSurvivesMWSFailure(t *testing.T) {
	t.Run("graceful", func(t *testing.T) { testMWSFailure(t, true) })
	t.Run("killed", func(t *testing.T) { testMWSFailure(t, false) })
}

func testMWSFailure(t *testing.T, graceful bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newMASHEnv(t, 8<<20, nil)
	src := e.device(t, "pda", 0)
	dst := e.device(t, "laptop", 0)
	// The target accepts and then holds on to the summary: the savepoint
	// is stored and acknowledged, the session not yet resumed.
	summarised := make(chan struct{})
	release := make(chan struct{})
	sctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	defer func() { close(release); stop(); <-served }()
	go func() {
		defer close(served)
		dst.Serve(sctx, clientlib.Target{Select: func(clientlib.Summary) []string {
			close(summarised)
			<-release
			return nil
		}})
	}()
	home := e.cl.MWS[0].Name()
	pollDeadline(t, "the laptop online", func() bool {
		_, online, _ := e.cl.Peers.For(home).LookupDevice("doc", "laptop")
		return online
	})

	sess, err := src.OpenSession(ctx, "notes")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil {
		t.Fatal(err)
	}
	const upFirst, downFirst = 400009, 2<<20 + 77
	conn, up, down := startLegacyStream(t, ctx, sess, 3, 1<<20, upFirst, downFirst)
	notes := bytes.Repeat([]byte("ward 4, bed 12; "), 4096)
	sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
		return []clientlib.Element{
			{Name: "image", Kind: clientlib.ServerObject, Digest: obj.Digest},
			{Name: "notes", Kind: clientlib.AppObject, Data: notes},
		}, nil
	})

	type outcome struct {
		res *clientlib.HandoffResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := sess.Handoff(ctx, "laptop")
		done <- outcome{res, err}
	}()
	select {
	case <-summarised:
	case o := <-done:
		t.Fatalf("the handoff ended before the target had the summary: %v", o.err)
	case <-time.After(time.Minute):
		t.Fatal("the target never got the summary")
	}
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 10*time.Second)
	if !graceful {
		closeCancel()
	}
	e.cl.MWS[0].Close(closeCtx)
	closeCancel()

	var o outcome
	select {
	case o = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the handoff never ended after its MWS failed")
	}
	var c2 *clientlib.Conn
	var session *clientlib.Session
	switch {
	case errors.Is(o.err, clientlib.ErrRolledBack):
		if o.res == nil || o.res.Restored == nil {
			t.Fatalf("rolled back without the state: %v", o.err)
		}
		r := o.res.Restored
		got := map[string]clientlib.DeliveredElement{}
		for _, el := range r.Elements {
			got[el.Name] = el
		}
		if !bytes.Equal(got["notes"].Data, notes) {
			t.Fatalf("notes: %d bytes back, want %d", len(got["notes"].Data), len(notes))
		}
		if !bytes.Equal(got["image"].Data, obj.Body) {
			t.Fatalf("image: %d bytes back, want the %d stored", len(got["image"].Data), len(obj.Body))
		}
		el := got["stream/"+conn.StreamID()]
		if el.StreamOffset != downFirst {
			t.Fatalf("stream element %+v, want offset %d", el, downFirst)
		}
		if c2, err = r.Conn(ctx, el); err != nil {
			t.Fatal(err)
		}
		session = r.Session
	case graceful:
		t.Fatalf("got %v, want the session taken back from its replica", o.err)
	case rpcerr.Code(o.err) == codes.Unavailable:
		// The acknowledgement was lost with the MWS: the source kept
		// everything, and its stream goes on.
		c2, session = conn, sess
		t.Logf("the acknowledgement was lost with the MWS: %v", o.err)
	default:
		t.Fatalf("got %v", o.err)
	}
	finishLegacyStream(t, ctx, c2, e.stream, up, upFirst, down)
	if _, err := session.Get(ctx, "images", "/images/"+img.Name); err != nil {
		t.Fatalf("Get on the taken-up session: %v", err)
	}
	if at := session.MWS(); at == home || at == "" {
		t.Fatalf("the session is at %q, want another MWS than the failed %s", at, home)
	}
}

// rogueMWS issues an MWS certificate, named mws-rogue, from the cluster's
// CA and dials the MWS of index i with it, as a peer.
func rogueMWS(t testing.TB, e *mashEnv, i int) (tls.Certificate, *grpc.ClientConn) {
	t.Helper()
	iss, err := e.cl.CA.Issue(pki.IssueRequest{Role: pki.RoleMWS, Name: "mws-rogue"})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.cl.MWSAddrs[i], grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(iss.TLS, e.cl.CA.Pool(), pki.RoleMWS))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return iss.TLS, cc
}

// sendAll sends msgs on a call until a send fails (the peer ended it),
// then ends the call with end and returns its error.
func sendAll[M any](send func(M) error, msgs []M, end func() error) error {
	for _, m := range msgs {
		if send(m) != nil {
			break
		}
	}
	return end()
}

// TestPeerCallsBadInput: malformed FASH and replica calls from an MWS
// certificate get typed errors and change nothing; a replica's owner alone
// drops it; a session whose owner is alive is not taken up from its
// replica.
func TestPeerCallsBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newMASHEnv(t, 0, nil)
	_, cc := rogueMWS(t, e, 1)
	peer := mwsv1.NewPeerClient(cc)

	src := e.device(t, "pda", 0)
	sess, err := src.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
		t.Fatal(err)
	}

	fash := func(msgs ...*mwsv1.FashMsg) error {
		st, err := peer.Fash(ctx)
		if err != nil {
			return err
		}
		return sendAll(st.Send, msgs, func() error { _, err := st.Recv(); return err })
	}
	replicate := func(msgs ...*mwsv1.ReplicaMsg) error {
		st, err := peer.Replicate(ctx)
		if err != nil {
			return err
		}
		return sendAll(st.Send, msgs, func() error { _, err := st.CloseAndRecv(); return err })
	}
	goodStart := &mwsv1.FashStart{HandoffId: "0123456789abcdef01234567", User: "doc", App: "viewer", FromDevice: "pda", TargetDevice: "pda", ConsentTimeoutMs: 1000}
	badID := proto.Clone(goodStart).(*mwsv1.FashStart)
	badID.HandoffId = "x"
	badDev := proto.Clone(goodStart).(*mwsv1.FashStart)
	badDev.TargetDevice = "../etc"
	unknown := proto.Clone(goodStart).(*mwsv1.FashStart)
	unknown.TargetDevice = "stranger"
	rec := &mwsv1.SessionRecord{SessionId: "00112233445566778899aabbccddeeff", User: "doc", App: "viewer", Device: "pda", KeyHash: make([]byte, 32)}
	for _, tc := range []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
	}{
		{"fash without start", func() error {
			return fash(&mwsv1.FashMsg{Msg: &mwsv1.FashMsg_State{State: &mwsv1.FashState{MoveId: "x"}}})
		}, codes.InvalidArgument, "START_REQUIRED"},
		{"fash bad handoff id", func() error { return fash(&mwsv1.FashMsg{Msg: &mwsv1.FashMsg_Start{Start: badID}}) }, codes.InvalidArgument, "BAD_FASH_START"},
		{"fash bad device", func() error { return fash(&mwsv1.FashMsg{Msg: &mwsv1.FashMsg_Start{Start: badDev}}) }, codes.InvalidArgument, "BAD_FASH_START"},
		{"fash unknown device", func() error { return fash(&mwsv1.FashMsg{Msg: &mwsv1.FashMsg_Start{Start: unknown}}) }, codes.NotFound, "UNKNOWN_DEVICE"},
		{"replica without header", func() error {
			return replicate(&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Object{Object: &mwsv1.ShippedObject{}}})
		}, codes.InvalidArgument, "HEADER_REQUIRED"},
		{"replica bad record", func() error {
			return replicate(&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Header{Header: &mwsv1.ReplicaHeader{Session: &mwsv1.SessionRecord{SessionId: "short"}}}})
		}, codes.InvalidArgument, "BAD_SESSION_RECORD"},
		{"replica object not announced", func() error {
			return replicate(&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Header{Header: &mwsv1.ReplicaHeader{Session: rec}}},
				&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Object{Object: &mwsv1.ShippedObject{Digest: "sha256:00", Chunk: []byte("x"), Last: true}}})
		}, codes.InvalidArgument, "UNKNOWN_OBJECT_REF"},
		{"replica refers to an object never fetched", func() error {
			return replicate(&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Header{Header: &mwsv1.ReplicaHeader{Session: rec,
				Savepoint: []*mwsv1.Element{{Name: "x", Kind: mwsv1.ElementKind_ELEMENT_KIND_SERVER_OBJECT, Digest: "sha256:00"}}}}})
		}, codes.InvalidArgument, "UNKNOWN_OBJECT_REF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if rpcerr.Code(err) != tc.code || rpcerr.Reason(err) != tc.reason {
				t.Fatalf("got %v (reason %q), want %v %s", err, rpcerr.Reason(err), tc.code, tc.reason)
			}
			if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
				t.Fatalf("the session suffered: %v", err)
			}
		})
	}

	// A replica of the real session, sent by a rogue MWS with a key hash
	// of its choosing, is never taken up without the session's key; the
	// session stays with its owner, streams and all.
	hdr := &mwsv1.ReplicaHeader{Session: proto.Clone(rec).(*mwsv1.SessionRecord), Version: 1}
	hdr.Session.SessionId = sess.ID()
	if err := replicate(&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Header{Header: hdr}}); err != nil {
		t.Fatal(err)
	}
	pda, roots, err := e.cl.DeviceCert("pda")
	if err != nil {
		t.Fatal(err)
	}
	dc, err := grpc.NewClient(e.cl.MWSAddrs[1], grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(pda, roots, pki.RoleMWS))))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	_, err = mwsv1.NewDeviceClient(dc).MoveIn(ctx, &mwsv1.MoveInRequest{SessionId: sess.ID(), SessionKey: "guess"})
	if rpcerr.Code(err) != codes.Unauthenticated || rpcerr.Reason(err) != "BAD_SESSION_KEY" {
		t.Fatalf("move-in to a planted replica: %v, want BAD_SESSION_KEY", err)
	}
	if n := e.cl.MWS[1].Stats().Sessions; n != 0 {
		t.Fatalf("%s holds %d sessions after the refused move-in", e.cl.MWS[1].Name(), n)
	}
	if sess.MWS() != e.cl.MWS[0].Name() {
		t.Fatalf("the session moved to %s", sess.MWS())
	}
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[1].Name); err != nil {
		t.Fatalf("the session suffered: %v", err)
	}
}

// TestReplicaPlacedAgain: when the MWS keeping a session's replica dies,
// the session's MWS places the replica on another peer; when the
// session's own MWS then dies, its device finds the session there.
func TestReplicaPlacedAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newMASHEnv(t, 0, func(c *mws.Config) { c.Cluster.BalanceInterval = 50 * time.Millisecond })
	src := e.device(t, "pda", 0)
	sess, err := src.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	if _, err := sess.Get(ctx, "images", "/images/"+img.Name); err != nil {
		t.Fatal(err)
	}
	holder := func(gone *mws.Server) *mws.Server {
		for _, s := range e.cl.MWS[1:] {
			if s != gone && s.Stats().Replicas == 1 {
				return s
			}
		}
		return nil
	}
	var first *mws.Server
	pollDeadline(t, "the session's replica", func() bool { first = holder(nil); return first != nil })
	e.kill(first)
	var second *mws.Server
	pollDeadline(t, "the replica placed again", func() bool {
		second = holder(first)
		return second != nil
	})
	e.kill(e.cl.MWS[0])
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
		t.Fatalf("Get after the session's MWS died: %v", err)
	}
	if at := sess.MWS(); at != second.Name() {
		t.Fatalf("the session is at %q, want %s", at, second.Name())
	}
}

// TestSessionFoundAfterItsMWSForgot: an idle device (no event channel)
// whose session moved while its MWS forgot where (here: the forwarding
// record expired, as after a restart) finds the session on the cluster's
// other MWSs with its key at its next call, on an MWS that joined the
// cluster after the device logged in.
func TestSessionFoundAfterItsMWSForgot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newMASHEnv(t, 0, func(c *mws.Config) { c.Cluster.ForwardTTL = time.Millisecond })
	late := e.cl.MWS[2].Name()
	e.cl.Peers.SetAlive(late, false)
	c := e.device(t, "pda", 0)
	e.cl.Peers.SetAlive(late, true)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.OpenSession(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	src := e.cl.MWS[0]
	if _, err := src.MoveSession(ctx, sess.ID(), e.cl.MWS[2].Name(), "operator"); err != nil {
		t.Fatal(err)
	}
	// The forwarding record expires; the next move drops it.
	moved := time.Now()
	pollDeadline(t, "the forwarding record to expire", func() bool { return time.Since(moved) > 10*time.Millisecond })
	if _, err := src.MoveSession(ctx, other.ID(), e.cl.MWS[1].Name(), "operator"); err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
		t.Fatalf("Get after the MWS forgot the session: %v", err)
	}
	if at := sess.MWS(); at != e.cl.MWS[2].Name() {
		t.Fatalf("the session is at %q, want %s", at, e.cl.MWS[2].Name())
	}
}

// TestMovedSessionSurvivesTargetFailure: the MWS a session was just moved
// to dies as soon as the move returns, before its device has followed or
// just after (its key then rotated there). The session is not lost: the
// target placed its replica before it took the session, and the device,
// unable to reach the target, finds the replica with its key (the one
// before the rotation, if the replica had not heard of it) and goes on
// there, its raw stream checked end to end over the one legacy connection.
func TestMovedSessionSurvivesTargetFailure(t *testing.T) {
	for i := range 3 {
		t.Run(fmt.Sprintf("at-once/%d", i), func(t *testing.T) { testTargetFailure(t, false) })
		t.Run(fmt.Sprintf("followed/%d", i), func(t *testing.T) { testTargetFailure(t, true) })
	}
	t.Run("replica-has-old-key", testTargetFailureOldKey)
}

// testTargetFailureOldKey: the device follows its session to the target,
// whose key rotation never reaches the replica (the target sees no live
// peer meanwhile); the target dies. The device's key is refused at the
// replica and the key before the move is taken there; the device found
// the replica's MWS through the address it was dialled with (the target,
// seeing no peer, had listed only itself).
func testTargetFailureOldKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newMASHEnv(t, 0, nil)
	c := e.device(t, "pda", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	if _, err := sess.Get(ctx, "images", "/images/"+img.Name); err != nil {
		t.Fatal(err)
	}
	target := e.cl.MWS[1]
	if _, err := e.cl.MWS[0].MoveSession(ctx, sess.ID(), target.Name(), "operator"); err != nil {
		t.Fatal(err)
	}
	holders := func() (n int) {
		for _, s := range e.cl.MWS {
			if s != target {
				n += s.Stats().Replicas
			}
		}
		return n
	}
	// The target placed its replica before the move returned.
	pollDeadline(t, "the source to drop its own replica", func() bool { return holders() == 1 })
	others := []string{e.cl.MWS[0].Name(), e.cl.MWS[2].Name()}
	for _, n := range others {
		e.cl.Peers.SetAlive(n, false)
	}
	if _, err := sess.Get(ctx, "images", "/images/"+img.Name); err != nil {
		t.Fatal(err)
	}
	if sess.MWS() != target.Name() {
		t.Fatalf("the device did not follow: at %s", sess.MWS())
	}
	e.kill(target)
	for _, n := range others {
		e.cl.Peers.SetAlive(n, true)
	}
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
		t.Fatalf("Get after the target died: %v", err)
	}
	if at := sess.MWS(); at == target.Name() || at == "" {
		t.Fatalf("the session is at %q", at)
	}
}

func testTargetFailure(t *testing.T, followed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newMASHEnv(t, 4<<20, nil)
	c := e.device(t, "pda", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	if _, err := sess.Get(ctx, "images", "/images/"+img.Name); err != nil {
		t.Fatal(err)
	}
	const upFirst, downFirst = 300007, 1<<20 + 13
	conn, up, down := startLegacyStream(t, ctx, sess, 5, 1<<20, upFirst, downFirst)
	target := e.cl.MWS[1]
	if _, err := e.cl.MWS[0].MoveSession(ctx, sess.ID(), target.Name(), "operator"); err != nil {
		t.Fatal(err)
	}
	if followed {
		// The device's key rotates there; the replica hears of the new
		// key in the background, possibly not before the target dies.
		pollDeadline(t, "the device to follow", func() bool { return sess.MWS() == target.Name() })
	}
	e.kill(target)

	finishLegacyStream(t, ctx, conn, e.stream, up, upFirst, down)
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
		t.Fatalf("Get after the target died: %v", err)
	}
	if at := sess.MWS(); at == target.Name() || at == "" {
		t.Fatalf("the session is at %q, want an MWS other than the dead %s", at, target.Name())
	}
}
