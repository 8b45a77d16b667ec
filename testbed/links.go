package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // variants may come in any format a device accepts
	_ "image/jpeg"
	_ "image/png"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/profiles"
	"github.com/imashproject/imash/testbed/legacy"
	"github.com/imashproject/imash/testbed/netem"
)

// The links phase: the paper's four testbed devices (profiles.TestbedDevices)
// log in with their testbed profiles — device and nominal network — and,
// with --links=on, each reaches the MWSs only through its own emulated
// access network (a netem.Network of its preset, netem.Testbed), by way of
// clientlib.Config.Dialer: a workstation and a desktop on 100 Mbit/s
// Ethernet, a laptop on a 56 kbit/s modem, a PDA on 802.11b. Each fetches
// the same image through imash, and the report shows the variant each got
// beside what the MWS measured of its link. The devices run concurrently;
// the modem laptop, whose byte budget (56 kbit/s × two seconds of
// patience) makes its variant thumbnail-sized, sets the phase's length.

// linkDevicePrefix names the links phase's devices ("link-pda", …), apart
// from the workload's devices, which log in without profiles.
const linkDevicePrefix = "link-"

// measurableBytes is the smallest body on which the MWS samples a device's
// goodput (mws's minGoodputBytes); for a smaller one the report shows no
// goodput rather than wait for a sample that will not come.
const measurableBytes = 64 << 10

// demoProbeInterval is how often the demo's MWS probes each device's
// round-trip time (the MWS's default is seconds apart): the links phase
// waits for probes answered after its fetch, on an idle link, so that the
// smallest sample is the link's round trip rather than one queued behind
// the login or the body.
const demoProbeInterval = 200 * time.Millisecond

// probesAfterFetch is how many probes the links phase waits for after its
// fetch.
const probesAfterFetch = 2

// Bounds of the waits for the MWS's measurements: an RTT sample needs a
// probe answered over the link; a goodput sample follows the last
// acknowledgement of a fetched body at once, if the MWS takes one (a body
// that crosses the link faster than the MWS's shortest sampling span gives
// none), so its wait is short and ends the wait without a failure.
const (
	rttWait     = 30 * time.Second
	goodputWait = 2 * time.Second
)

// linkResult is one device of the links phase: the JSON records of
// "links" in --json.
type linkResult struct {
	// Device is the testbed device kind: workstation, desktop, laptop, pda.
	Device string `json:"device"`
	// Link describes the emulated link ("loopback" with --links=off);
	// LinkRateBPS (bits per second each way) and LinkRTTUS are its shape,
	// zero without a link.
	Link        string `json:"link"`
	LinkRateBPS int64  `json:"link_rate_bps"`
	LinkRTTUS   int64  `json:"link_rtt_us"`
	// MeasuredRTTUS and MeasuredGoodputBPS are what the MWS measured on
	// the device's connection (mws.Server.NetworkOf); zero when it has no
	// sample.
	MeasuredRTTUS      int64 `json:"measured_rtt_us"`
	MeasuredGoodputBPS int64 `json:"measured_goodput_bps"`
	// Object is the fetched image and OriginalBytes its size at the legacy
	// server; Bytes, ContentType, Width and Height describe what the
	// device received, Adapted whether it is a variant, BudgetMet whether
	// the variant fits the device's byte budget.
	Object        string `json:"object"`
	OriginalBytes int    `json:"original_bytes"`
	Bytes         int    `json:"bytes"`
	ContentType   string `json:"content_type"`
	Width         int    `json:"width"`
	Height        int    `json:"height"`
	Adapted       bool   `json:"adapted"`
	BudgetMet     bool   `json:"budget_met"`
	// FetchUS is how long the Get took, until the whole body had arrived.
	FetchUS int64 `json:"fetch_us"`
	// LinkUpBytes and LinkDownBytes are what the device's links carried
	// each way over the whole phase (login, probes and fetch); LinkConns
	// counts the connections through them. Zero with --links=off.
	LinkUpBytes   int64 `json:"link_up_bytes"`
	LinkDownBytes int64 `json:"link_down_bytes"`
	LinkConns     int64 `json:"link_conns"`
}

// linkObject picks the image of the links phase: the largest, where the
// devices' variants differ most.
func linkObject(set *legacy.ImageSet) *legacy.Image {
	var best *legacy.Image
	for _, img := range set.Images() {
		if best == nil || len(img.Bytes) > len(best.Bytes) {
			best = img
		}
	}
	return best
}

// runLinks runs the links phase: the four testbed devices at once, each
// fetching img. It returns their results in profiles.TestbedDevices order.
func runLinks(ctx context.Context, env *testbedEnv, links bool, img *legacy.Image, log *slog.Logger) ([]linkResult, error) {
	kinds := profiles.TestbedDevices()
	out := make([]linkResult, len(kinds))
	errs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, kind := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = env.linkDevice(ctx, kind, links, img, log)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("links: %s: %w", kind, errs[i])
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// linkDevice connects the testbed device kind — through its emulated
// network when links is set — logs it in with its testbed profiles, opens a
// session, fetches img and reads what the MWS measured of it.
func (e *testbedEnv) linkDevice(ctx context.Context, kind string, links bool, img *legacy.Image, log *slog.Logger) (res linkResult, err error) {
	res = linkResult{Device: kind, Link: "loopback", Object: img.Name, OriginalBytes: len(img.Bytes)}
	docs, err := testbedProfiles(kind)
	if err != nil {
		return res, err
	}
	cert, roots, err := e.cluster.DeviceCert(linkDevicePrefix + kind)
	if err != nil {
		return res, err
	}
	cfg := clientlib.Config{Certificate: cert, Roots: roots, Profiles: docs, Log: log.With("device", linkDevicePrefix+kind)}
	if links {
		shape, err := netem.Testbed(kind)
		if err != nil {
			return res, err
		}
		nw, err := netem.NewNetwork(shape, log.With("component", "netem", "device", kind))
		if err != nil {
			return res, err
		}
		defer func() {
			err = errors.Join(err, nw.Close())
			st := nw.Stats()
			res.LinkUpBytes, res.LinkDownBytes, res.LinkConns = st.Up.Bytes, st.Down.Bytes, st.Accepted
		}()
		cfg.Dialer = nw.Dial
		res.Link = describeLink(shape)
		res.LinkRateBPS, res.LinkRTTUS = shape.Down.Rate*8, shape.RTT().Microseconds()
	}

	c, err := clientlib.Dial(ctx, e.cluster.MWSAddrs[0], cfg)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	if err := c.Login(ctx, demoUser, demoPassword); err != nil {
		return res, fmt.Errorf("login: %w", err)
	}
	// The event channel answers the MWS's probes: its RTT samples.
	evctx, stopEvents := context.WithCancel(ctx)
	events := make(chan struct{})
	go func() {
		defer close(events)
		_ = c.Events(evctx, func(clientlib.Event) {})
	}()
	defer func() { stopEvents(); <-events }()
	sess, err := c.OpenSession(ctx, demoApp)
	if err != nil {
		return res, fmt.Errorf("open session: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if cerr := sess.Close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close session: %w", cerr))
		}
	}()

	start := time.Now()
	obj, err := sess.Get(ctx, imagesBackend, "/images/"+img.Name)
	if err != nil {
		return res, fmt.Errorf("get %s: %w", img.Name, err)
	}
	res.FetchUS = time.Since(start).Microseconds()
	if err := checkVariant(img, obj); err != nil {
		return res, fmt.Errorf("get %s: %w", img.Name, err)
	}
	res.Bytes, res.ContentType, res.Adapted, res.BudgetMet = len(obj.Body), obj.ContentType, obj.Adapted, obj.BudgetMet
	if ic, _, err := image.DecodeConfig(bytes.NewReader(obj.Body)); err == nil {
		res.Width, res.Height = ic.Width, ic.Height
	}

	srv := e.mwsNamed(sess.MWS())
	if srv == nil {
		return res, fmt.Errorf("the session is on %q, which is not in the cluster", sess.MWS())
	}
	before, _ := srv.NetworkOf(c.Device())
	smp, err := waitMeasured(ctx, srv, c.Device(), before.Probes+probesAfterFetch, len(obj.Body) >= measurableBytes)
	if err != nil {
		return res, err
	}
	res.MeasuredRTTUS, res.MeasuredGoodputBPS = smp.RTT.Microseconds(), smp.GoodputBPS
	return res, nil
}

// checkVariant checks what a device received for img: the image itself,
// or a variant that names the original (digest and size) and decodes as an
// image no larger than it.
func checkVariant(img *legacy.Image, obj *clientlib.Object) error {
	if obj.Status != http.StatusOK {
		return fmt.Errorf("status %d", obj.Status)
	}
	if !obj.Adapted {
		if !bytes.Equal(obj.Body, img.Bytes) {
			return fmt.Errorf("%w: unadapted body is %s, the image %s", ErrMismatch, describe(obj.Body), describe(img.Bytes))
		}
		return nil
	}
	sum := sha256.Sum256(img.Bytes)
	if want := "sha256:" + hex.EncodeToString(sum[:]); obj.Digest != want || obj.OriginalSize != int64(len(img.Bytes)) {
		return fmt.Errorf("%w: variant names the original %s (%d bytes), the image is %s (%d bytes)", ErrMismatch, obj.Digest, obj.OriginalSize, want, len(img.Bytes))
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(obj.Body))
	if err != nil {
		return fmt.Errorf("variant of %s (%s) does not decode: %w", describe(obj.Body), obj.ContentType, err)
	}
	if cfg.Width > img.Width || cfg.Height > img.Height {
		return fmt.Errorf("variant is %dx%d, larger than the original %dx%d", cfg.Width, cfg.Height, img.Width, img.Height)
	}
	return nil
}

// waitMeasured polls srv until it has taken probes RTT samples of device
// and, when goodput is set, a goodput sample too (for at most goodputWait:
// a sample that does not come is reported as none).
func waitMeasured(ctx context.Context, srv *mws.Server, device string, probes int64, goodput bool) (mws.NetSample, error) {
	start := time.Now()
	for {
		smp, _ := srv.NetworkOf(device)
		waited := time.Since(start)
		switch {
		case smp.Probes >= probes && (!goodput || smp.Transfers > 0 || waited > goodputWait):
			return smp, nil
		case waited > rttWait:
			return smp, fmt.Errorf("the MWS answered %d of %d probes of %s in %v", smp.Probes, probes, device, rttWait)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return smp, err
		}
	}
}

// testbedProfiles returns the XML documents a testbed device of kind
// presents at login: its device profile and its nominal network's.
func testbedProfiles(kind string) ([][]byte, error) {
	dev, netp, err := profiles.TestbedDevice(kind)
	if err != nil {
		return nil, err
	}
	var docs [][]byte
	for _, p := range []*profiles.Profile{dev, netp} {
		b, err := profiles.Marshal(p)
		if err != nil {
			return nil, err
		}
		docs = append(docs, b)
	}
	return docs, nil
}

// mwsNamed returns the cluster's MWS named name, or nil.
func (e *testbedEnv) mwsNamed(name string) *mws.Server {
	for _, s := range e.cluster.MWS {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// describeLink is a link's shape for the report, e.g. "56 kbit/s, RTT
// 150 ms, jitter 5 ms".
func describeLink(c netem.Config) string {
	s := fmt.Sprintf("%s, RTT %s", bitRate(c.Down.Rate*8), roundMS(c.RTT()))
	if c.Up.Rate != c.Down.Rate {
		s = fmt.Sprintf("%s up, %s", bitRate(c.Up.Rate*8), s)
	}
	if j := max(c.Up.Jitter, c.Down.Jitter); j > 0 {
		s += ", jitter " + roundMS(j)
	}
	return s
}

// bitRate formats bits per second: "100 Mbit/s", "56 kbit/s".
func bitRate(bps int64) string {
	switch {
	case bps <= 0:
		return "unlimited"
	case bps >= 1e6:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(bps)/1e6), ".0") + " Mbit/s"
	case bps >= 1e3:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(bps)/1e3), ".0") + " kbit/s"
	}
	return fmt.Sprintf("%d bit/s", bps)
}

// roundMS formats a duration in milliseconds, with one decimal under 10 ms.
func roundMS(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return strings.TrimSuffix(fmt.Sprintf("%.1f", ms), ".0") + " ms"
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// plural is "s" unless n is 1.
func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// kib formats a byte count in KiB, or MiB from 1 MiB.
func kib(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// writeLinks reports the links phase: one row per device.
func writeLinks(w io.Writer, links bool, img *legacy.Image, rows []linkResult) {
	how := "on — the four testbed devices, each behind its own emulated link (testbed/netem)"
	if !links {
		how = "off — the four testbed devices, each on loopback"
	}
	fmt.Fprintf(w, "links:          %s and logged in with its testbed profiles, fetch %s (%s, %dx%d) through imash\n",
		how, img.Name, kib(int64(len(img.Bytes))), img.Width, img.Height)
	const row = "  %-12s %-36s %-26s %-34s %7s   %s"
	line := func(format string, args ...any) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf(format, args...), " "))
	}
	line(row, "device", "link", "MWS measured", "received", "fetch", "link bytes up / down")
	for _, r := range rows {
		measured := "-"
		if r.MeasuredRTTUS > 0 {
			measured = "RTT " + roundMS(time.Duration(r.MeasuredRTTUS)*time.Microsecond)
			if r.MeasuredGoodputBPS > 0 {
				measured += ", " + bitRate(r.MeasuredGoodputBPS)
			}
		}
		got := kib(int64(r.Bytes))
		if r.Adapted {
			got += " variant"
		} else {
			got += " original"
		}
		if r.Width > 0 {
			got += fmt.Sprintf(" %dx%d", r.Width, r.Height)
		}
		got += " " + strings.TrimPrefix(r.ContentType, "image/")
		if r.Adapted && !r.BudgetMet {
			got += " (over budget)"
		}
		counters := "-"
		if r.LinkConns > 0 {
			counters = fmt.Sprintf("%s / %s (%d connection%s)", kib(r.LinkUpBytes), kib(r.LinkDownBytes), r.LinkConns, plural(r.LinkConns))
		}
		line(row, r.Device, r.Link, measured, got, fmt.Sprintf("%.2f s", float64(r.FetchUS)/1e6), counters)
	}
}
