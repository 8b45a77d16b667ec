package clientlib_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/testbed/legacy"
	"google.golang.org/grpc/codes"
)

// TestCASHRollbackAfterSavepoint: the target accepts but never resumes;
// after the resume timeout the source takes its state back and keeps
// working, streams included.
func TestCASHRollbackAfterSavepoint(t *testing.T) {
	e := newCASHEnv(t, 1<<20, func(c *mws.Config) { c.ResumeTimeout = 500 * time.Millisecond }, "pda")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A target that accepts and then hangs before selecting elements.
	hung := e.connect(ctx, "car")
	release := make(chan struct{})
	defer close(release)
	go hung.c.Serve(ctx, clientlib.Target{Select: func(clientlib.Summary) []string { <-release; return nil }})
	waitDeviceOnline(t, hung.c, "car")
	sess, err := e.devices["pda"].c.OpenSession(ctx, "notes")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, conn, 100000); err != nil {
		t.Fatal(err)
	}
	sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
		return []clientlib.Element{{Name: "notes", Kind: clientlib.AppObject, Data: []byte("keep me")}}, nil
	})
	res, err := sess.Handoff(ctx, "car")
	if !errors.Is(err, clientlib.ErrRolledBack) || res == nil || res.Restored == nil {
		t.Fatalf("got %v, want a rollback with the state restored", err)
	}
	var stream clientlib.DeliveredElement
	notes := ""
	for _, el := range res.Restored.Elements {
		switch el.Kind {
		case clientlib.StreamState:
			stream = el
		case clientlib.AppObject:
			notes = string(el.Data)
		}
	}
	if notes != "keep me" || stream.StreamOffset != 100000 {
		t.Fatalf("restored %+v", res.Restored.Elements)
	}
	// The source works on: its session and its stream.
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
		t.Fatalf("Get after rollback: %v", err)
	}
	c2, err := res.Restored.Conn(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(h, c2); err != nil {
		t.Fatal(err)
	}
	lc, _ := e.stream.WaitConn(ctx, 0)
	<-lc.Done()
	if [32]byte(h.Sum(nil)) != lc.SentSum() || e.stream.Accepted() != 1 {
		t.Fatal("stream bytes differ after the rollback")
	}
}

// TestCASHFailureBeforeSavepointKeepsStreams: a savepoint the MWS refuses
// (a reference to an object the session never fetched) leaves the session
// and its open stream with the source, unchanged.
func TestCASHFailureBeforeSavepointKeepsStreams(t *testing.T) {
	e := newCASHEnv(t, 1<<20, nil, "pda", "desk")
	ctx := context.Background()
	sess, err := e.devices["pda"].c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, conn, 5000); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		els    []clientlib.Element
		reason string
	}{
		{"foreign object", []clientlib.Element{{Name: "x", Kind: clientlib.ServerObject, Digest: "sha256:00"}}, "UNKNOWN_OBJECT_REF"},
		{"bad name", []clientlib.Element{{Name: "bad name!", Kind: clientlib.AppObject}}, "BAD_SAVEPOINT"},
		{"too large", []clientlib.Element{{Name: "big", Kind: clientlib.AppObject, Data: make([]byte, 3<<20+1)}}, "SAVEPOINT_TOO_LARGE"},
		{"duplicate", []clientlib.Element{{Name: "a", Kind: clientlib.AppObject}, {Name: "a", Kind: clientlib.AppObject}}, "BAD_SAVEPOINT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) { return tc.els, nil })
			_, err := sess.Handoff(ctx, "desk")
			if rpcerr.Code(err) != codes.InvalidArgument || rpcerr.Reason(err) != tc.reason {
				t.Fatalf("got %v (%q), want InvalidArgument %s", err, rpcerr.Reason(err), tc.reason)
			}
			if _, err := io.CopyN(h, conn, 5000); err != nil {
				t.Fatalf("the stream stopped working: %v", err)
			}
		})
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(h, conn); err != nil {
		t.Fatal(err)
	}
	lc, _ := e.stream.WaitConn(ctx, 0)
	<-lc.Done()
	if [32]byte(h.Sum(nil)) != lc.SentSum() {
		t.Fatal("stream bytes differ")
	}
}

// TestCASHParkAndPickUp: a handoff to an offline device parks the session
// until the device connects and accepts.
func TestCASHParkAndPickUp(t *testing.T) {
	e := newCASHEnv(t, 0, nil, "pda")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wall := e.connect(ctx, "wall-display") // logged in once, not online
	sess, err := e.devices["pda"].c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
		return []clientlib.Element{{Name: "progress", Kind: clientlib.Progress, Data: []byte("slide 7")}}, nil
	})
	type outcome struct {
		res *clientlib.HandoffResult
		err error
	}
	done := make(chan outcome, 1)
	parked := make(chan time.Time, 1)
	go func() {
		res, err := sess.Handoff(ctx, "wall-display", clientlib.OnParked(func(exp time.Time) { parked <- exp }))
		done <- outcome{res, err}
	}()
	// The device comes online later and picks the session up.
	select {
	case exp := <-parked:
		if !exp.After(time.Now()) {
			t.Fatalf("parked until %v, already past", exp)
		}
	case o := <-done:
		t.Fatalf("the handoff ended without parking: %+v, %v", o.res, o.err)
	}
	go wall.c.Serve(ctx, clientlib.Target{Resumed: func(r *clientlib.Resumed) { wall.arrived <- r }})
	r := wall.waitArrival(t)
	if len(r.Elements) != 1 || string(r.Elements[0].Data) != "slide 7" {
		t.Fatalf("picked up %+v", r.Elements)
	}
	o := <-done
	if o.err != nil || !o.res.Parked {
		t.Fatalf("handoff: %+v, %v", o.res, o.err)
	}
}

// TestCASHRoundTrips moves one session among three devices many times while
// its stream carries data both ways; every byte arrives exactly once.
func TestCASHRoundTrips(t *testing.T) {
	trips := 500
	if testing.Short() {
		trips = 50
	}
	const size = 16 << 20
	e := newCASHEnv(t, size, nil, "pda", "car", "wall")
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	up := make([]byte, 4<<20)
	if _, err := io.ReadFull(legacy.RandomStream(seed), up); err != nil {
		t.Fatal(err)
	}
	names := []string{"pda", "car", "wall"}
	at := 0
	sess, err := e.devices[names[at]].c.OpenSession(ctx, "shell")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	down := sha256.New()
	var downN, upN int64
	counter := 0
	buf := make([]byte, 64<<10)
	for i := range trips {
		// Work a little on this device.
		for n := rng.IntN(4); n > 0 && downN < size; n-- {
			k, err := conn.Read(buf[:1+rng.IntN(len(buf))])
			if err != nil {
				t.Fatalf("trip %d: read: %v", i, err)
			}
			down.Write(buf[:k])
			downN += int64(k)
		}
		if k := min(int64(rng.IntN(16<<10)), int64(len(up))-upN); k > 0 {
			if _, err := conn.Write(up[upN : upN+k]); err != nil {
				t.Fatalf("trip %d: write: %v", i, err)
			}
			upN += k
		}
		counter++
		c := counter
		sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
			return []clientlib.Element{{Name: "counter", Kind: clientlib.Progress, Data: fmt.Appendf(nil, "%d", c)}}, nil
		})
		next := (at + 1 + rng.IntN(2)) % 3
		if _, err := sess.Handoff(ctx, names[next]); err != nil {
			t.Fatalf("trip %d %s -> %s: %v", i, names[at], names[next], err)
		}
		r := e.devices[names[next]].waitArrival(t)
		var st clientlib.DeliveredElement
		for _, el := range r.Elements {
			switch {
			case el.Kind == clientlib.StreamState:
				st = el
			case el.Name == "counter" && string(el.Data) != fmt.Sprint(c):
				t.Fatalf("trip %d: counter %q, want %d", i, el.Data, c)
			}
		}
		if int64(st.StreamOffset) != downN {
			t.Fatalf("trip %d: stream resumes at %d, the app read %d", i, st.StreamOffset, downN)
		}
		conn, err = r.Conn(ctx, st)
		if err != nil {
			t.Fatalf("trip %d: resume stream: %v", i, err)
		}
		sess, at = r.Session, next
	}
	if _, err := conn.Write(up[upN:]); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(down, conn); err != nil {
		t.Fatal(err)
	}
	lc, _ := e.stream.WaitConn(ctx, 0)
	<-lc.Done()
	if [32]byte(down.Sum(nil)) != lc.SentSum() {
		t.Fatal("down bytes differ")
	}
	if lc.ReceivedSum() != sha256.Sum256(up) {
		t.Fatalf("up bytes differ (%d received)", lc.Received())
	}
	if e.stream.Accepted() != 1 {
		t.Fatalf("legacy server accepted %d connections", e.stream.Accepted())
	}
	t.Logf("%d handoffs among 3 devices; checksums equal both ways; one legacy connection", trips)
}

// TestCASHConsentTimeoutAndInProgress: a target that never answers times
// the handoff out, a second handoff of the same session meanwhile is
// refused, and the session stays with the source throughout.
func TestCASHConsentTimeoutAndInProgress(t *testing.T) {
	e := newCASHEnv(t, 0, func(c *mws.Config) { c.ConsentTimeout = 2 * time.Second }, "pda")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	silent := e.connect(ctx, "tv")
	go silent.c.Serve(ctx, clientlib.Target{Accept: func(clientlib.Offer) (bool, string) {
		asked <- struct{}{}
		<-release
		return false, "too late"
	}})
	waitDeviceOnline(t, silent.c, "tv")
	sess, err := e.devices["pda"].c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() {
		_, err := sess.Handoff(ctx, "tv")
		first <- err
	}()
	<-asked
	_, err = sess.Handoff(ctx, "tv")
	if rpcerr.Code(err) != codes.FailedPrecondition || rpcerr.Reason(err) != "HANDOFF_IN_PROGRESS" {
		t.Fatalf("second handoff: %v", err)
	}
	err = <-first
	if rpcerr.Code(err) != codes.DeadlineExceeded || rpcerr.Reason(err) != "TARGET_TIMEOUT" {
		t.Fatalf("first handoff: %v", err)
	}
	if _, err := sess.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
		t.Fatalf("the source lost its session: %v", err)
	}
}

// waitDeviceOnline polls until the MWS lists the device as online.
func waitDeviceOnline(t testing.TB, c *clientlib.Client, name string) {
	t.Helper()
	pollDeadline(t, name+" online", func() bool {
		list, _ := c.Devices(context.Background())
		for _, d := range list {
			if d.Name == name && d.Online {
				return true
			}
		}
		return false
	})
}

// TestCASHSourceGoneThenReclaim: the source drops its state once the
// savepoint is stored and goes away; the target then fails. Nothing is
// lost: the session stays bound to the source device, which reclaims it
// from the MWS's stored state.
func TestCASHSourceGoneThenReclaim(t *testing.T) {
	e := newCASHEnv(t, 0, func(c *mws.Config) { c.ResumeTimeout = 500 * time.Millisecond }, "pda")
	ctx := context.Background()
	srcCtx, srcGone := context.WithCancel(ctx)
	hangCtx, stopHang := context.WithCancel(ctx)
	defer stopHang()
	hung := e.connect(hangCtx, "car")
	go hung.c.Serve(hangCtx, clientlib.Target{Select: func(clientlib.Summary) []string {
		srcGone() // the summary comes after the savepoint was acknowledged
		<-hangCtx.Done()
		return nil
	}})
	waitDeviceOnline(t, hung.c, "car")
	pda := e.devices["pda"]
	sess, err := pda.c.OpenSession(ctx, "notes")
	if err != nil {
		t.Fatal(err)
	}
	sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
		return []clientlib.Element{{Name: "notes", Kind: clientlib.AppObject, Data: []byte("do not lose me")}}, nil
	})
	if _, err := sess.Handoff(srcCtx, "car"); err == nil {
		t.Fatal("the handoff succeeded although the target hung")
	}
	// Reclaiming while the failed handoff is still winding down is refused;
	// once it is over the device gets its state back.
	var r *clientlib.Resumed
	pollDeadline(t, "reclaim", func() bool {
		r, err = pda.c.Reclaim(ctx, sess.ID())
		return err == nil
	})
	if len(r.Elements) != 1 || string(r.Elements[0].Data) != "do not lose me" {
		t.Fatalf("reclaimed %+v", r.Elements)
	}
	if _, err := r.Session.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); err != nil {
		t.Fatalf("the reclaimed session does not work: %v", err)
	}
	// Another device of the user cannot reclaim it.
	if _, err := hung.c.Reclaim(ctx, sess.ID()); rpcerr.Code(err) != codes.PermissionDenied {
		t.Fatalf("reclaim from another device: %v", err)
	}
}
