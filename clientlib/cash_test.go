package clientlib_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
	"google.golang.org/grpc/codes"
)

// cashEnv is a cluster with an image server, a stream server and devices
// of one user, each serving its target side.
type cashEnv struct {
	t       testing.TB
	cl      *cluster.Cluster
	images  *legacy.HTTPServer
	set     *legacy.ImageSet
	stream  *legacy.StreamServer
	devices map[string]*device
}

type device struct {
	name    string
	c       *clientlib.Client
	arrived chan *clientlib.Resumed
	refuse  bool
	mu      sync.Mutex
}

func newCASHEnv(t testing.TB, streamBytes int64, tune func(*mws.Config), names ...string) *cashEnv {
	t.Helper()
	set, err := legacy.GenerateImages(2, 4, 2<<10, 300<<10)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Close() })
	ss, err := legacy.NewStreamServer(legacy.StreamConfig{SendBytes: streamBytes, Seed: 11, CloseWriteAfterSend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cl, err := cluster.Start(cluster.Options{
		Backends:     map[string]string{"images": hs.Addr(), "stream": ss.Addr()},
		HTTPBackends: []string{"images"},
		Users:        map[string]string{"doc": "pw"},
		TuneMWS:      tune,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	e := &cashEnv{t: t, cl: cl, images: hs, set: set, stream: ss, devices: map[string]*device{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, n := range names {
		d := e.connect(ctx, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.c.Serve(ctx, clientlib.Target{
				Accept: func(clientlib.Offer) (bool, string) {
					d.mu.Lock()
					defer d.mu.Unlock()
					if d.refuse {
						return false, "busy"
					}
					return true, ""
				},
				Resumed: func(r *clientlib.Resumed) { d.arrived <- r },
			})
		}()
	}
	// Every device is online once the MWS lists it so.
	pollDeadline(t, "devices online", func() bool {
		list, err := e.devices[names[0]].c.Devices(ctx)
		if err != nil {
			return false
		}
		online := 0
		for _, d := range list {
			if d.Online {
				online++
			}
		}
		return online == len(names)
	})
	return e
}

func (e *cashEnv) connect(ctx context.Context, name string) *device {
	cert, roots, err := e.cl.DeviceCert(name)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := clientlib.Dial(ctx, e.cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Login(ctx, "doc", "pw"); err != nil {
		e.t.Fatal(err)
	}
	d := &device{name: name, c: c, arrived: make(chan *clientlib.Resumed, 4)}
	e.devices[name] = d
	return d
}

func pollDeadline(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (d *device) waitArrival(t *testing.T) *clientlib.Resumed {
	t.Helper()
	select {
	case r := <-d.arrived:
		return r
	case <-time.After(60 * time.Second):
		t.Fatalf("no session arrived on %s", d.name)
		return nil
	}
}

// TestCASHImageViewer: an image viewer's session moves from a PDA to a
// workstation with its object, notes and progress; the object comes from
// the MWS's copy, and the PDA's session key no longer works.
func TestCASHImageViewer(t *testing.T) {
	e := newCASHEnv(t, 0, nil, "pda", "workstation")
	ctx := context.Background()
	pda, ws := e.devices["pda"], e.devices["workstation"]
	sess, err := pda.c.OpenSession(ctx, "xray-viewer", "patient-records")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[1]
	obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
	if err != nil {
		t.Fatal(err)
	}
	notes := []byte("fracture of the left radius; check again in 2 weeks")
	sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
		return []clientlib.Element{
			{Name: "xray", Kind: clientlib.ServerObject, Digest: obj.Digest},
			{Name: "notes", Kind: clientlib.AppObject, ContentType: "text/plain", Data: notes},
			{Name: "progress", Kind: clientlib.Progress, ContentType: "text/plain", Data: []byte("zoom=2;x=100;y=40")},
			{Name: "draft", Kind: clientlib.AppObject, Data: []byte("private scribble"), Private: true},
		}, nil
	})
	requests := e.images.Requests()
	res, err := sess.Handoff(ctx, "workstation")
	if err != nil {
		t.Fatal(err)
	}
	if res.Timings.Total <= 0 || res.Timings.StateUpload <= 0 {
		t.Fatalf("timings %+v", res.Timings)
	}
	r := ws.waitArrival(t)
	got := map[string]clientlib.DeliveredElement{}
	for _, el := range r.Elements {
		got[el.Name] = el
	}
	if len(got) != 3 || got["draft"].Name != "" {
		t.Fatalf("delivered %v; want xray, notes, progress and no private draft", r.Elements)
	}
	if !bytes.Equal(got["xray"].Data, img.Bytes) || got["xray"].Digest != obj.Digest {
		t.Fatal("the x-ray differs from the original")
	}
	if !bytes.Equal(got["notes"].Data, notes) || string(got["progress"].Data) != "zoom=2;x=100;y=40" {
		t.Fatalf("notes/progress differ: %q %q", got["notes"].Data, got["progress"].Data)
	}
	if n := e.images.Requests(); n != requests {
		t.Fatalf("the legacy server saw %d new requests during the handoff", n-requests)
	}
	// The target works with the session; the source's no longer does.
	if _, err := r.Session.Get(ctx, "images", "/images/"+img.Name); err != nil {
		t.Fatalf("target Get: %v", err)
	}
	if _, err := sess.Get(ctx, "images", "/images/"+img.Name); rpcerr.Code(err) != codes.PermissionDenied && rpcerr.Code(err) != codes.Unauthenticated {
		t.Fatalf("source Get after handoff: %v, want refused", err)
	}
}

// TestCASHRawStream: the legacy server keeps sending during the handoff;
// the target receives every byte exactly once over one legacy connection.
func TestCASHRawStream(t *testing.T) {
	const size = 8 << 20
	e := newCASHEnv(t, size, nil, "laptop", "desktop")
	ctx := context.Background()
	sess, err := e.devices["laptop"].c.OpenSession(ctx, "shell")
	if err != nil {
		t.Fatal(err)
	}
	_, up, h := startLegacyStream(t, ctx, sess, 5, 1<<20, 300000, 3<<20+12345)
	if _, err := sess.Handoff(ctx, "desktop"); err != nil {
		t.Fatal(err)
	}
	r := e.devices["desktop"].waitArrival(t)
	var streamEl clientlib.DeliveredElement
	for _, el := range r.Elements {
		if el.Kind == clientlib.StreamState {
			streamEl = el
		}
	}
	if streamEl.StreamOffset != 3<<20+12345 {
		t.Fatalf("stream element %+v", streamEl)
	}
	c2, err := r.Conn(ctx, streamEl)
	if err != nil {
		t.Fatal(err)
	}
	finishLegacyStream(t, ctx, c2, e.stream, up, 300000, h)
}

// TestCASHRefusalsRollBack: a refusal, a policy denial, an unknown device
// and a second handoff in progress all leave the session with the source.
func TestCASHRefusalsRollBack(t *testing.T) {
	policy, err := mws.ParsePolicy([]byte(`{"device_classes": {"kiosk*": "public"},
		"rules": [{"name": "records-never-public", "labels": ["patient-records"], "deny_classes": ["public"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	e := newCASHEnv(t, 0, func(c *mws.Config) { c.Policy = policy }, "pda", "kiosk-lobby", "tablet")
	ctx := context.Background()
	sess, err := e.devices["pda"].c.OpenSession(ctx, "records", "patient-records")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	check := func(t *testing.T) {
		t.Helper()
		if _, err := sess.Get(ctx, "images", "/images/"+img.Name); err != nil {
			t.Fatalf("the source lost its session: %v", err)
		}
	}
	check(t)
	for _, tc := range []struct {
		name   string
		target string
		setup  func()
		code   codes.Code
		reason string
	}{
		{"policy", "kiosk-lobby", nil, codes.PermissionDenied, "POLICY_DENIED"},
		{"unknown device", "stranger", nil, codes.NotFound, "UNKNOWN_DEVICE"},
		{"same device", "pda", nil, codes.InvalidArgument, "SAME_DEVICE"},
		{"refused", "tablet", func() {
			d := e.devices["tablet"]
			d.mu.Lock()
			d.refuse = true
			d.mu.Unlock()
		}, codes.FailedPrecondition, "TARGET_REFUSED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			_, err := sess.Handoff(ctx, tc.target)
			if rpcerr.Code(err) != tc.code || rpcerr.Reason(err) != tc.reason {
				t.Fatalf("got %v (reason %q), want %v %s", err, rpcerr.Reason(err), tc.code, tc.reason)
			}
			if errors.Is(err, clientlib.ErrRolledBack) {
				t.Fatal("rolled back after a savepoint, want refusal before it")
			}
			check(t)
		})
	}
}
