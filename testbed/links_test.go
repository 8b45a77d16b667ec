package testbed

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
	"github.com/imashproject/imash/testbed/netem"
)

// TestDemoLinks runs the demo with its links on (the default): each of
// the four testbed devices reaches the MWS through its own emulated link,
// the links carry the traffic, the MWS measures at least each link's
// round trip, and the PDA on 802.11b and the laptop on a modem receive
// smaller variants of the image than the workstation.
func TestDemoLinks(t *testing.T) {
	jsonFile := filepath.Join(t.TempDir(), "records.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"demo", "--images", "8", "--seed", "5", "--stream-mib", "0", "--handoffs", "0", "--mws", "1", "--json", jsonFile}
	if err := Run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("Run(%q) = %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Logf("output:\n%s", out)
	for _, s := range []string{
		"links:          on — the four testbed devices, each behind its own emulated link",
		"100 Mbit/s, RTT 1 ms", "56 kbit/s, RTT 150 ms, jitter 5 ms", "5 Mbit/s, RTT 20 ms, jitter 2 ms",
		"link bytes up / down",
		"1 mux, 1 MWS, devices",
		"cluster:        skipped (--mws 1: MASH, FASH and drain need at least 2 MWSs)",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}

	doc := readReport(t, jsonFile)
	if !doc.Complete {
		t.Fatal("the report is not complete")
	}
	if c := doc.Cluster; c == nil || c.Skipped == "" || len(c.MWSs) != 1 || c.MASH != nil || c.Handoffs != nil || c.Drain != nil {
		t.Errorf("cluster record %+v: want the phase skipped on 1 MWS", c)
	}
	byDevice := map[string]linkResult{}
	for _, r := range doc.Links {
		byDevice[r.Device] = r
	}
	if len(doc.Links) != 4 || len(byDevice) != 4 {
		t.Fatalf("%d link records for %d devices, want 4: %+v", len(doc.Links), len(byDevice), doc.Links)
	}
	img := linkObject(mustSet(t, 5, 8))
	for _, kind := range []string{"workstation", "desktop", "laptop", "pda"} {
		r, ok := byDevice[kind]
		if !ok {
			t.Fatalf("no link record for %s", kind)
		}
		shape, err := netem.Testbed(kind)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Object != img.Name || r.OriginalBytes != len(img.Bytes):
			t.Errorf("%s fetched %s of %d bytes, want %s of %d", kind, r.Object, r.OriginalBytes, img.Name, len(img.Bytes))
		case r.LinkRateBPS != shape.Down.Rate*8 || r.LinkRTTUS != shape.RTT().Microseconds():
			t.Errorf("%s: link of %d bit/s and %d µs, want its preset %d bit/s and %v", kind, r.LinkRateBPS, r.LinkRTTUS, shape.Down.Rate*8, shape.RTT())
		case r.LinkConns < 1 || r.LinkUpBytes <= 0 || r.LinkDownBytes < int64(r.Bytes):
			t.Errorf("%s: the link carried %d bytes up and %d down on %d connections; want some up and at least the %d body bytes down",
				kind, r.LinkUpBytes, r.LinkDownBytes, r.LinkConns, r.Bytes)
		case r.MeasuredRTTUS < shape.RTT().Microseconds()*9/10:
			// A probe crosses the link both ways: a lower bound only.
			t.Errorf("%s: the MWS measured an RTT of %d µs, below the link's %v", kind, r.MeasuredRTTUS, shape.RTT())
		case r.Bytes <= 0 || r.Width <= 0 || r.FetchUS <= 0:
			t.Errorf("%s: received %d bytes (%dx%d) in %d µs", kind, r.Bytes, r.Width, r.Height, r.FetchUS)
		}
	}
	ws := byDevice["workstation"]
	for _, kind := range []string{"pda", "laptop"} {
		if r := byDevice[kind]; !r.Adapted || r.Bytes >= ws.Bytes {
			t.Errorf("%s received %d bytes (adapted %t); want a variant smaller than the workstation's %d bytes", kind, r.Bytes, r.Adapted, ws.Bytes)
		}
	}
}

// TestLinksSurviveMASH: a device behind a netem.Network whose session
// moves to another MWS follows it through a new link of the same shape,
// which carries the session's traffic from then on.
func TestLinksSurviveMASH(t *testing.T) {
	set := mustSet(t, 5, 4)
	hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Close() })
	cl, err := cluster.Start(cluster.Options{
		Backends:     map[string]string{imagesBackend: hs.Addr()},
		HTTPBackends: []string{imagesBackend},
		Users:        map[string]string{demoUser: demoPassword},
		MWSs:         2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	shape, err := netem.Testbed("pda")
	if err != nil {
		t.Fatal(err)
	}
	nw, err := netem.NewNetwork(shape, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nw.Close() })
	cert, roots, err := cl.DeviceCert("pda")
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientlib.Dial(ctx, cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots, Dialer: nw.Dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(ctx, demoUser, demoPassword); err != nil {
		t.Fatal(err)
	}
	sess, err := c.OpenSession(ctx, demoApp)
	if err != nil {
		t.Fatal(err)
	}
	// The largest image under 512 KiB: a few tenths of a second on the
	// PDA's link.
	var img *legacy.Image
	for _, im := range set.Images() {
		if len(im.Bytes) <= 512<<10 && (img == nil || len(im.Bytes) > len(img.Bytes)) {
			img = im
		}
	}
	get := func() {
		t.Helper()
		obj, err := sess.Get(ctx, imagesBackend, "/images/"+img.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(obj.Body, img.Bytes) {
			t.Fatalf("body of %d bytes differs from the image's %d", len(obj.Body), len(img.Bytes))
		}
	}
	get()
	from, to := 0, 1
	if sess.MWS() != cl.MWS[0].Name() {
		from, to = 1, 0
	}
	if _, err := cl.MWS[from].MoveSession(ctx, sess.ID(), cl.MWS[to].Name(), "operator"); err != nil {
		t.Fatal(err)
	}
	get()
	if sess.MWS() != cl.MWS[to].Name() {
		t.Fatalf("session on %s after the move to %s", sess.MWS(), cl.MWS[to].Name())
	}
	targets := nw.Targets()
	if len(targets) != 2 || targets[1] != cl.MWSAddrs[to] {
		t.Fatalf("links to %v; want the first MWS's, then %s", targets, cl.MWSAddrs[to])
	}
	l, err := nw.Link(cl.MWSAddrs[to])
	if err != nil {
		t.Fatal(err)
	}
	if l.Config() != shape {
		t.Fatalf("the new link is %+v, want the device's %+v", l.Config(), shape)
	}
	// The link counts a segment once its write returned, which may be
	// after the device read it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := l.Stats()
		if st.Accepted >= 1 && st.Down.Bytes >= int64(len(img.Bytes)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the link to %s carried %d bytes down on %d connections; want at least the image's %d", cl.MWSAddrs[to], st.Down.Bytes, st.Accepted, len(img.Bytes))
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
}

func mustSet(t *testing.T, seed uint64, n int) *legacy.ImageSet {
	t.Helper()
	set, err := legacy.GenerateImages(seed, n, MinObjectBytes, MaxObjectBytes)
	if err != nil {
		t.Fatal(err)
	}
	return set
}
