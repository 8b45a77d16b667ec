package clientlib_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/profiles"
	"github.com/imashproject/imash/testbed/legacy"
)

// testbedDocs returns the device and network profile documents of one of
// the paper's testbed devices.
func testbedDocs(t testing.TB, name string) [][]byte {
	t.Helper()
	device, network, err := profiles.TestbedDevice(name)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, p := range []*profiles.Profile{device, network} {
		b, err := profiles.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	return docs
}

// fashEnv is a PDA on the first MWS with a session mid-transfer on a raw
// stream and an adapted image, and a workstation on the second MWS serving
// its target side.
type fashEnv struct {
	*mashEnv
	src, dst *clientlib.Client
	arrived  chan *clientlib.Resumed
	failed   chan error
	sess     *clientlib.Session
	conn     *clientlib.Conn
	img      *legacy.Image
	obj      *clientlib.Object
	up       []byte
	upSent   int
	down     hash.Hash
	downRead int64
	notes    []byte
}

func newFASHEnv(t *testing.T, ctx context.Context, target clientlib.Target) *fashEnv {
	t.Helper()
	e := &fashEnv{mashEnv: newMASHEnv(t, 8<<20, nil), arrived: make(chan *clientlib.Resumed, 1), failed: make(chan error, 1)}
	e.src = e.device(t, "pda", 0, testbedDocs(t, "pda")...)
	e.dst = e.device(t, "workstation", 1)
	target.Resumed = func(r *clientlib.Resumed) { e.arrived <- r }
	target.Failed = func(_ string, err error) { e.failed <- err }
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan struct{})
	t.Cleanup(func() { cancel(); <-served })
	go func() {
		defer close(served)
		e.dst.Serve(sctx, target)
	}()
	home, far := e.cl.MWS[0].Name(), e.cl.MWS[1].Name()
	pollDeadline(t, "the workstation in the cluster's directory", func() bool {
		at, online, ok := e.cl.Peers.For(home).LookupDevice("doc", "workstation")
		return ok && online && at == far
	})

	var err error
	if e.sess, err = e.src.OpenSession(ctx, "xray-viewer", "patient-records"); err != nil {
		t.Fatal(err)
	}
	imgs := e.set.Images()
	e.img = imgs[len(imgs)-1]
	if e.obj, err = e.sess.Get(ctx, "images", "/images/"+e.img.Name); err != nil {
		t.Fatal(err)
	}
	if !e.obj.Adapted || bytes.Equal(e.obj.Body, e.img.Bytes) {
		t.Fatalf("the PDA got the original (%d bytes), want its adapted variant", len(e.obj.Body))
	}
	e.upSent, e.downRead = 700001, 3<<20+4321
	e.conn, e.up, e.down = startLegacyStream(t, ctx, e.sess, 9, 2<<20, e.upSent, e.downRead)
	e.notes = []byte("hairline fracture, distal radius")
	e.sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
		return []clientlib.Element{
			{Name: "xray", Kind: clientlib.ServerObject, Digest: e.obj.Digest},
			{Name: "notes", Kind: clientlib.AppObject, ContentType: "text/plain", Data: e.notes},
		}, nil
	})
	return e
}

// resumeStream resumes the stream of r at the next byte.
func (e *fashEnv) resumeStream(t *testing.T, ctx context.Context, r *clientlib.Resumed) *clientlib.Conn {
	t.Helper()
	var el clientlib.DeliveredElement
	for _, x := range r.Elements {
		if x.Kind == clientlib.StreamState {
			el = x
		}
	}
	if el.StreamOffset != uint64(e.downRead) {
		t.Fatalf("stream element %+v, want offset %d", el, e.downRead)
	}
	c, err := r.Conn(ctx, el)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// finishStream sends and reads the rest of the stream on c and checks both
// directions end to end, over one legacy connection.
func (e *fashEnv) finishStream(t *testing.T, ctx context.Context, c *clientlib.Conn) {
	t.Helper()
	finishLegacyStream(t, ctx, c, e.stream, e.up, e.upSent, e.down)
}

// startLegacyStream dials the "stream" backend in sess, writes the first
// upFirst bytes of upTotal bytes of random data (seeded) and reads
// downFirst bytes into the returned hash; finishLegacyStream ends the
// transfer.
func startLegacyStream(t *testing.T, ctx context.Context, sess *clientlib.Session, seed uint64, upTotal, upFirst int, downFirst int64) (*clientlib.Conn, []byte, hash.Hash) {
	t.Helper()
	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	up := make([]byte, upTotal)
	if _, err := io.ReadFull(legacy.RandomStream(seed), up); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(up[:upFirst]); err != nil {
		t.Fatal(err)
	}
	down := sha256.New()
	if _, err := io.CopyN(down, conn, downFirst); err != nil {
		t.Fatal(err)
	}
	return conn, up, down
}

// finishLegacyStream sends up[sent:] on c, half-closes, reads the rest into
// down (which holds what was read before), and checks both directions
// against the stream server's own sums, over its one connection.
func finishLegacyStream(t *testing.T, ctx context.Context, c *clientlib.Conn, srv *legacy.StreamServer, up []byte, sent int, down hash.Hash) {
	t.Helper()
	if _, err := c.Write(up[sent:]); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(down, c); err != nil {
		t.Fatal(err)
	}
	lc, err := srv.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	<-lc.Done()
	if [32]byte(down.Sum(nil)) != lc.SentSum() {
		t.Fatal("down bytes differ")
	}
	if lc.ReceivedSum() != sha256.Sum256(up) {
		t.Fatalf("up bytes differ: the legacy server received %d of %d", lc.Received(), len(up))
	}
	if n := srv.Accepted(); n != 1 {
		t.Fatalf("the legacy server accepted %d connections", n)
	}
}

func waitResumed(t *testing.T, ch <-chan *clientlib.Resumed) *clientlib.Resumed {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("no session arrived")
		return nil
	}
}

// TestFASH: a PDA on one MWS hands its session to a workstation served by
// another MWS, in the middle of a raw-stream transfer. The workstation gets
// the original image (made from the MWS's copy, not the PDA's variant), the
// notes, and the stream from the next byte; the legacy server sees one
// connection and no new request; the PDA's credentials stop working.
func TestFASH(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newFASHEnv(t, ctx, clientlib.Target{})
	requests := e.images.Requests()
	// The PDA's MWS lists the workstation, online at the other MWS.
	devs, err := e.src.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(devs, func(d clientlib.DeviceInfo) bool { return d.Name == "workstation" })
	if i < 0 || !devs[i].Online || devs[i].MWS != e.cl.MWS[1].Name() {
		t.Fatalf("devices %+v: want the workstation online at %s", devs, e.cl.MWS[1].Name())
	}

	res, err := e.sess.Handoff(ctx, "workstation")
	if err != nil {
		t.Fatal(err)
	}
	if res.Timings.Move <= 0 || res.Timings.Total < res.Timings.Move {
		t.Fatalf("timings %+v: want a move phase within the total", res.Timings)
	}
	r := waitResumed(t, e.arrived)
	got := map[string]clientlib.DeliveredElement{}
	for _, el := range r.Elements {
		got[el.Name] = el
	}
	if x := got["xray"]; !bytes.Equal(x.Data, e.img.Bytes) || x.Digest != e.obj.Digest || x.Adapted {
		t.Fatalf("the workstation got %d bytes (adapted %v), want the %d-byte original", len(x.Data), x.Adapted, len(e.img.Bytes))
	}
	if !bytes.Equal(got["notes"].Data, e.notes) {
		t.Fatalf("notes %q", got["notes"].Data)
	}
	e.finishStream(t, ctx, e.resumeStream(t, ctx, r))
	if n := e.images.Requests(); n != requests {
		t.Fatalf("the legacy server saw %d new requests during the handoff", n-requests)
	}
	if _, err := r.Session.Get(ctx, "images", "/images/"+e.img.Name); err != nil {
		t.Fatalf("the workstation's Get: %v", err)
	}
	if _, err := e.sess.Get(ctx, "images", "/images/"+e.img.Name); err == nil {
		t.Fatal("the PDA still uses the session after the handoff")
	} else {
		t.Logf("the PDA after the handoff: %v", err)
	}
	t.Logf("FASH timings: %+v", res.Timings)
}

// TestFASHRollsBack: the target refuses (nothing moves), or accepts and
// then fails to resume after the session went to its MWS: the session
// comes back to the source's MWS and the source takes it back, stream and
// all, without a byte lost.
func TestFASHRollsBack(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		e := newFASHEnv(t, ctx, clientlib.Target{Accept: func(clientlib.Offer) (bool, string) { return false, "in surgery" }})
		_, err := e.sess.Handoff(ctx, "workstation")
		if rpcerr.Code(err) != codes.FailedPrecondition || rpcerr.Reason(err) != "TARGET_REFUSED" || errors.Is(err, clientlib.ErrRolledBack) {
			t.Fatalf("got %v, want TARGET_REFUSED before any savepoint", err)
		}
		if _, err := e.sess.Get(ctx, "images", "/images/"+e.img.Name); err != nil {
			t.Fatalf("the PDA lost its session: %v", err)
		}
		// The stream goes on as it was.
		e.finishStream(t, ctx, e.conn)
	})
	t.Run("resume fails", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Selecting an element the savepoint does not have makes the
		// target's Resume fail after the state reached its MWS.
		e := newFASHEnv(t, ctx, clientlib.Target{Select: func(clientlib.Summary) []string { return []string{"no-such-element"} }})
		res, err := e.sess.Handoff(ctx, "workstation")
		if !errors.Is(err, clientlib.ErrRolledBack) || res == nil || res.Restored == nil {
			t.Fatalf("got %v, want a rollback with the state restored", err)
		}
		select {
		case ferr := <-e.failed:
			if rpcerr.Reason(ferr) != "UNKNOWN_ELEMENT" {
				t.Fatalf("the target failed with %v", ferr)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the target never reported its failure")
		}
		if _, err := res.Restored.Session.Get(ctx, "images", "/images/"+e.img.Name); err != nil {
			t.Fatalf("the restored session: %v", err)
		}
		e.finishStream(t, ctx, e.resumeStream(t, ctx, res.Restored))
	})
}
