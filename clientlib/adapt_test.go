package clientlib_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/profiles"
	"github.com/imashproject/imash/testbed/cluster"
)

// photo makes a 2000x1500 photo-like JPEG.
func photo(t testing.TB) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 2000, 1500))
	rng := rand.New(rand.NewPCG(1, 2))
	for y := range 1500 {
		for x := range 2000 {
			n := uint8(rng.IntN(24))
			img.Set(x, y, color.RGBA{uint8(x/8) + n, uint8(y/6) + n, uint8((x+y)/14) + n, 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestAdaptationPerDevice: the paper's four testbed devices fetch the same
// photo and each gets its own variant, within its display, format and byte
// budget, made from one cached original; a CASH from the workstation to the
// PDA delivers the PDA's variant of the original.
func TestAdaptationPerDevice(t *testing.T) {
	orig := photo(t)
	var requests atomic.Int64
	legacyHTTP := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write(orig)
	}))
	defer legacyHTTP.Close()
	cl, err := cluster.Start(cluster.Options{
		Backends:     map[string]string{"radiology": legacyHTTP.Listener.Addr().String()},
		HTTPBackends: []string{"radiology"},
		Users:        map[string]string{"dr": "pw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	type dev struct {
		c    *clientlib.Client
		cons profiles.Constraints
		sess *clientlib.Session
	}
	devs := map[string]*dev{}
	for _, name := range profiles.TestbedDevices() {
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
		cons, err := profiles.Merge(device, network, profiles.DefaultUser(), profiles.DefaultApplication())
		if err != nil {
			t.Fatal(err)
		}
		cert, roots, err := cl.DeviceCert(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := clientlib.Dial(ctx, cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots, Profiles: docs})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(ctx, "dr", "pw"); err != nil {
			t.Fatal(err)
		}
		s, err := c.OpenSession(ctx, "xray-viewer")
		if err != nil {
			t.Fatal(err)
		}
		devs[name] = &dev{c: c, cons: cons, sess: s}
	}

	sums := map[[32]byte]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			obj, err := d.sess.Get(ctx, "radiology", "/xray-1.jpg")
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			checkVariant(t, name, obj.Body, obj.ContentType, obj.BudgetMet, d.cons)
			if obj.OriginalSize != int64(len(orig)) && obj.Adapted {
				t.Errorf("%s: original size %d, want %d", name, obj.OriginalSize, len(orig))
			}
			mu.Lock()
			sums[sha256.Sum256(obj.Body)] = name
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(sums) != 4 {
		t.Fatalf("%d distinct variants for 4 devices", len(sums))
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("the legacy server saw %d requests; one original serves every device", n)
	}

	// CASH: the workstation's session moves to the PDA, which gets its own
	// variant of the original, not a copy of the workstation's.
	ws, pda := devs["workstation"], devs["pda"]
	own, err := pda.sess.Get(ctx, "radiology", "/xray-1.jpg")
	if err != nil {
		t.Fatal(err)
	}
	arrived := make(chan *clientlib.Resumed, 1)
	go pda.c.Serve(ctx, clientlib.Target{Resumed: func(r *clientlib.Resumed) { arrived <- r }})
	waitDeviceOnline(t, pda.c, "pda")
	wsObj, err := ws.sess.Get(ctx, "radiology", "/xray-1.jpg")
	if err != nil {
		t.Fatal(err)
	}
	ws.sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
		return []clientlib.Element{{Name: "xray", Kind: clientlib.ServerObject, Digest: wsObj.Digest}}, nil
	})
	if _, err := ws.sess.Handoff(ctx, "pda"); err != nil {
		t.Fatal(err)
	}
	r := <-arrived
	if len(r.Elements) != 1 {
		t.Fatalf("elements %+v", r.Elements)
	}
	el := r.Elements[0]
	if !el.Adapted || el.Digest != wsObj.Digest || !bytes.Equal(el.Data, own.Body) {
		t.Fatalf("the PDA got %d bytes (adapted %v); its own variant of the original is %d bytes", len(el.Data), el.Adapted, len(own.Body))
	}
	checkVariant(t, "pda after CASH", el.Data, el.ContentType, true, pda.cons)
	if n := requests.Load(); n != 1 {
		t.Fatalf("the legacy server saw %d requests", n)
	}
}

func checkVariant(t *testing.T, name string, body []byte, contentType string, budgetMet bool, c profiles.Constraints) {
	t.Helper()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil {
		t.Errorf("%s: variant does not decode: %v", name, err)
		return
	}
	if cfg.Width > c.MaxWidth || cfg.Height > c.MaxHeight {
		t.Errorf("%s: %dx%d does not fit %dx%d", name, cfg.Width, cfg.Height, c.MaxWidth, c.MaxHeight)
	}
	if !c.Supports(contentType) || !slices.Contains(c.Formats, "image/"+format) {
		t.Errorf("%s: format %s (%s) not among %v", name, contentType, format, c.Formats)
	}
	if budgetMet && c.ByteBudget > 0 && int64(len(body)) > c.ByteBudget {
		t.Errorf("%s: %d bytes over the budget %d", name, len(body), c.ByteBudget)
	}
	t.Logf("%s: %dx%d %s, %d bytes (budget %d, met %v)", name, cfg.Width, cfg.Height, contentType, len(body), c.ByteBudget, budgetMet)
}
