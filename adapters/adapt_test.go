package adapters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"slices"
	"sync"
	"testing"

	"github.com/imashproject/imash/profiles"
	"github.com/imashproject/imash/testbed/legacy"
)

// corpus returns real JPEGs from the testbed generator plus PNG (with
// alpha), GIF and a large photo.
func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	set, err := legacy.GenerateImages(42, 4, 512, 120_000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, img := range set.Images() {
		out[img.Name] = img.Bytes
	}
	out["alpha.png"] = alphaPNG(t, 300, 500)
	out["photo.png"] = mustPNG(t, photo(320, 240, 4))
	out["photo.gif"] = mustGIF(t, photo(500, 260, 6))
	out["big.jpg"] = mustJPEG(t, photo(1200, 900, 8), 90)
	return out
}

func TestAdaptProperties(t *testing.T) {
	a := newTestAdapter(t, nil)
	profilesUnderTest := map[string]profiles.Constraints{
		"pda-12bit":      pda(),
		"pda-budget":     {MaxWidth: 240, MaxHeight: 320, ColorDepth: 12, Formats: []string{MediaJPEG}, ByteBudget: 8_000},
		"desktop":        {MaxWidth: 1000, MaxHeight: 1000, Formats: []string{MediaJPEG, MediaPNG, MediaGIF}},
		"modem":          {ByteBudget: 4_000, Formats: []string{MediaJPEG, MediaPNG}},
		"gray-png":       {MaxWidth: 160, MaxHeight: 160, Grayscale: true, Formats: []string{MediaPNG}},
		"tiny-budget":    {MaxWidth: 64, MaxHeight: 64, ByteBudget: 600, Formats: []string{MediaJPEG}},
		"no-adaptation":  {MaxWidth: 10, MaxHeight: 10, NoAdaptation: true},
		"resize-only":    {MaxWidth: 100, MaxHeight: 100, Allowed: []string{"resize"}},
		"budget-no-size": {ByteBudget: 300, Formats: []string{MediaJPEG, MediaPNG, MediaGIF}, Allowed: []string{"reencode", "convert"}},
	}
	for cname, c := range profilesUnderTest {
		for name, data := range corpus(t) {
			t.Run(cname+"/"+name, func(t *testing.T) {
				res, err := a.Adapt(t.Context(), data, c)
				if errors.Is(err, ErrUnsupported) && !c.Allows(CmdConvert) && !c.Supports(res2format(t, a, data)) {
					return // expected: format unsupported and conversion not allowed
				}
				if err != nil {
					t.Fatalf("Adapt: %v", err)
				}
				if c.NoAdaptation {
					if res.Adapted || !bytes.Equal(res.Data, data) {
						t.Fatal("NoAdaptation output differs from input")
					}
					return
				}
				if !res.Adapted && !bytes.Equal(res.Data, data) {
					t.Fatal("Adapted=false but data changed")
				}
				cfg, format, err := image.DecodeConfig(bytes.NewReader(res.Data))
				if err != nil {
					t.Fatalf("output does not decode: %v", err)
				}
				if mt := "image/" + format; mt != res.ContentType || !c.Supports(mt) {
					t.Errorf("output %s (ContentType %s) not in %v", mt, res.ContentType, c.Formats)
				}
				if c.Allows(CmdResize) && (c.MaxWidth > 0 && cfg.Width > c.MaxWidth || c.MaxHeight > 0 && cfg.Height > c.MaxHeight) {
					t.Errorf("output %dx%d exceeds %dx%d", cfg.Width, cfg.Height, c.MaxWidth, c.MaxHeight)
				}
				if cfg.Width > res.Before.Width || cfg.Height > res.Before.Height {
					t.Errorf("upscaled %dx%d -> %dx%d", res.Before.Width, res.Before.Height, cfg.Width, cfg.Height)
				}
				if met := c.ByteBudget <= 0 || int64(len(res.Data)) <= c.ByteBudget; met != res.BudgetMet {
					t.Errorf("BudgetMet = %t but %d bytes vs budget %d", res.BudgetMet, len(res.Data), c.ByteBudget)
				}
				if res.After.Width != cfg.Width || res.After.Bytes != int64(len(res.Data)) {
					t.Errorf("After %+v disagrees with output %dx%d %d bytes", res.After, cfg.Width, cfg.Height, len(res.Data))
				}
			})
		}
	}
}

func res2format(t *testing.T, a *Adapter, data []byte) string {
	attrs, _, _, err := a.Characterize(data)
	if err != nil {
		t.Fatal(err)
	}
	return attrs.Format
}

func TestAdaptPDA(t *testing.T) {
	// The paper's PDA: 240x320, 12-bit colour, JPEG only.
	a := newTestAdapter(t, nil)
	src := mustJPEG(t, photo(2000, 1500, 1), 85)
	res, err := a.Adapt(t.Context(), src, pda())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"decode(1/8)", "resize(240x180)", "recolor(4bit/channel)", "encode(image/jpeg,q=85)"}
	if !slices.Equal(res.Steps, want) {
		t.Errorf("steps %q, want %q", res.Steps, want)
	}
	if res.After.Width != 240 || res.After.Height != 180 || res.ContentType != MediaJPEG || !res.Adapted || !res.BudgetMet {
		t.Errorf("result %+v", res.After)
	}
	if len(res.Data) >= len(src)/10 {
		t.Errorf("output %d bytes, input %d: expected a large reduction", len(res.Data), len(src))
	}
}

func TestUnknownPassesThrough(t *testing.T) {
	a := newTestAdapter(t, nil)
	for _, data := range [][]byte{[]byte("plain text\n"), {0, 1, 2, 3}, nil, []byte("<html><p>hi</p></html>")} {
		t.Run(fmt.Sprintf("%.8q", data), func(t *testing.T) {
			res, err := a.Adapt(t.Context(), data, pda())
			if err != nil {
				t.Fatal(err)
			}
			if res.Adapted || !bytes.Equal(res.Data, data) || len(res.Steps) != 0 || res.ContentType == "" {
				t.Errorf("result %+v", res)
			}
		})
	}
}

func TestPool(t *testing.T) {
	a := newTestAdapter(t, func(c *Config) { c.Workers, c.QueueSize = 2, 1 })
	p := NewPool(a)
	src := mustJPEG(t, photo(400, 300, 2), 85)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			res, err := p.Adapt(t.Context(), src, pda())
			if err == nil && res.After.Width != 240 {
				err = fmt.Errorf("width %d", res.After.Width)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.Adapt(ctx, src, pda()); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled submit: err = %v", err)
	}
	if err := p.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Adapt(t.Context(), src, pda()); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("after Close: err = %v, want ErrPoolClosed", err)
	}
}
