package mws_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/profiles"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
	"github.com/imashproject/imash/testbed/netem"
)

// probedDevice is a device on the raw API that answers the MWS's probes,
// as clientlib does.
type probedDevice struct {
	api     mwsv1.DeviceClient
	token   string
	session string
	key     string
	answers atomic.Int64
}

// dialProbed dials addr (the MWS, or a link in front of it) as device,
// logs in with the testbed profiles of kind (e.g. "desktop") and opens a
// session and an Events channel whose probes it answers.
func (e *env) dialProbed(ctx context.Context, addr, device, kind string) *probedDevice {
	e.t.Helper()
	iss, err := e.cl.CA.Issue(pki.IssueRequest{Role: pki.RoleDevice, Name: device})
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(iss.TLS, e.cl.CA.Pool(), pki.RoleMWS))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	d := &probedDevice{api: mwsv1.NewDeviceClient(cc)}
	dev, netp, err := profiles.TestbedDevice(kind)
	if err != nil {
		e.t.Fatal(err)
	}
	var docs [][]byte
	for _, p := range []*profiles.Profile{dev, netp} {
		b, err := profiles.Marshal(p)
		if err != nil {
			e.t.Fatal(err)
		}
		docs = append(docs, b)
	}
	resp, err := d.api.Login(ctx, &mwsv1.LoginRequest{User: "alice", Password: testUsers["alice"], Profiles: docs})
	if err != nil {
		e.t.Fatalf("login %s: %v", device, err)
	}
	d.token = resp.Credential
	open, err := d.api.OpenSession(withToken(ctx, d.token), &mwsv1.OpenSessionRequest{App: "minibrowser"})
	if err != nil {
		e.t.Fatal(err)
	}
	d.session, d.key = open.SessionId, open.SessionKey

	evctx, cancel := context.WithCancel(ctx)
	events, err := d.api.Events(withToken(evctx, d.token), &mwsv1.EventsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	e.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for {
			ev, err := events.Recv()
			if err != nil {
				return
			}
			if pr := ev.GetProbe(); pr != nil {
				if _, err := d.api.ProbeReply(withToken(evctx, d.token), &mwsv1.ProbeReplyRequest{Seq: pr.Seq}); err == nil {
					d.answers.Add(1)
				}
			}
		}
	}()
	return d
}

// get fetches path and returns its metadata and body size.
func (d *probedDevice) get(ctx context.Context, path string) (*mwsv1.ObjectMeta, int, error) {
	ctx = metadata.AppendToOutgoingContext(withToken(ctx, d.token), "imash-session-key", d.key)
	st, err := d.api.Get(ctx, &mwsv1.GetRequest{SessionId: d.session, Backend: httpBackend, Path: path})
	if err != nil {
		return nil, 0, err
	}
	var meta *mwsv1.ObjectMeta
	n := 0
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return meta, n, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if m.GetMeta() != nil {
			meta = m.GetMeta()
		}
		n += len(m.GetChunk())
	}
}

// TestLiveNetworkProfile puts one device behind an emulated 1 Mbit/s link
// with 50 ms of round-trip time and another, with the same profiles, on
// loopback. Both declare 100 Mbit/s Ethernet. The MWS must measure the
// slow device's RTT and goodput, and adapt a large image for the
// bandwidth it measured, not the one declared.
func TestLiveNetworkProfile(t *testing.T) {
	set, err := legacy.GenerateImages(21, 2, 200<<10, 1_250_000)
	if err != nil {
		t.Fatal(err)
	}
	imgs := set.Images()
	slices.SortFunc(imgs, func(a, b *legacy.Image) int { return len(a.Bytes) - len(b.Bytes) })
	warm, large := imgs[0], imgs[len(imgs)-1]
	if len(large.Bytes) < 1<<20 {
		t.Fatalf("the large image has %d bytes; want over 1 MiB", len(large.Bytes))
	}
	e := newEnv(t, envOptions{set: set, tuneMWS: func(c *mws.Config) { c.ProbeInterval = 200 * time.Millisecond }})
	ctx := testCtx(t)

	const rate = 1_000_000 / 8 // bytes/s
	const oneWay = 25 * time.Millisecond
	link, err := netem.Listen("127.0.0.1:0", e.addr, netem.Symmetric(rate, oneWay), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() })

	fast := e.dialProbed(ctx, e.addr, "desktop-fast", "desktop")
	slow := e.dialProbed(ctx, link.Addr(), "desktop-slow", "desktop")

	// Some traffic: probes answered, one body big enough to measure.
	start := time.Now()
	if _, n, err := slow.get(ctx, "/images/"+warm.Name); err != nil || n < 128<<10 {
		t.Fatalf("warm-up get: %d bytes, %v", n, err)
	}
	t.Logf("warm-up: %s of %d bytes in %v through the link", warm.Name, len(warm.Bytes), time.Since(start))
	var smp mws.NetSample
	pollUntil(t, "a goodput sample and 3 answered probes", func() bool {
		var ok bool
		smp, ok = e.mws.NetworkOf("desktop-slow")
		return ok && smp.Transfers > 0 && smp.Probes >= 3
	})
	t.Logf("slow device: RTT %v (SRTT %v, %d probes), goodput %d bit/s (bucket %d, %d transfers)",
		smp.RTT, smp.SRTT, smp.Probes, smp.GoodputBPS, smp.BandwidthBPS, smp.Transfers)
	if smp.RTT < 2*oneWay*9/10 {
		t.Errorf("RTT %v: below the link's %v", smp.RTT, 2*oneWay)
	}
	if bps := smp.GoodputBPS; bps < rate*8/3 || bps > rate*8*3 {
		t.Errorf("goodput %d bit/s: want within a factor 3 of %d", bps, rate*8)
	}

	fm, fn, err := fast.get(ctx, "/images/"+large.Name)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	sm, sn, err := slow.get(ctx, "/images/"+large.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s (%d bytes, %dx%d): %d bytes for the fast device, %d for the slow one (%v through the link)",
		large.Name, len(large.Bytes), large.Width, large.Height, fn, sn, time.Since(start))
	if fsmp, ok := e.mws.NetworkOf("desktop-fast"); ok {
		t.Logf("fast device: RTT %v, goodput %d bit/s", fsmp.RTT, fsmp.GoodputBPS)
	}
	// The byte budget is the live bandwidth's bucket × the default two
	// seconds of patience.
	budget := int(smp.BandwidthBPS / 8 * 2)
	if !sm.Adapted || sn >= fn || sn > budget*11/10 {
		t.Fatalf("slow device got %d bytes (adapted %t, budget met %t), fast device %d: want a smaller variant within the live budget of %d bytes",
			sn, sm.Adapted, sm.BudgetMet, fn, budget)
	}
	if fm.Size != int64(fn) || sm.Size != int64(sn) {
		t.Fatalf("meta sizes %d and %d differ from the bodies' %d and %d", fm.Size, sm.Size, fn, sn)
	}
	if slow.answers.Load() == 0 || fast.answers.Load() == 0 {
		t.Fatalf("probes answered: slow %d, fast %d", slow.answers.Load(), fast.answers.Load())
	}
}
