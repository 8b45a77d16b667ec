package adapters

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"image"
	"image/png"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/imashproject/imash/profiles"
)

func TestQuantTable(t *testing.T) {
	tests := []struct {
		bits   int
		levels int
	}{{1, 2}, {2, 4}, {4, 16}, {8, 256}}
	for _, tt := range tests {
		t.Run(strings.Repeat("b", tt.bits), func(t *testing.T) {
			q := quantTable(tt.bits)
			seen := map[uint8]bool{}
			for v := range 256 {
				seen[q[v]] = true
				if d := int(q[v]) - v; d > 128>>(tt.bits-1) || d < -(128>>(tt.bits-1)) {
					t.Fatalf("q[%d] = %d: error %d too large for %d bits", v, q[v], d, tt.bits)
				}
			}
			if len(seen) != tt.levels || q[0] != 0 || q[255] != 255 {
				t.Errorf("%d levels (ends %d,%d), want %d levels from 0 to 255", len(seen), q[0], q[255], tt.levels)
			}
		})
	}
}

func TestRecolor(t *testing.T) {
	src := photo(64, 48, 2)
	tests := []struct {
		name     string
		bits     int
		gray     bool
		wantGray bool
		levels   int
	}{
		{"12bit", 4, false, false, 16},
		{"gray8", 8, true, true, 256},
		{"gray2", 2, true, true, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := recolor(src, tt.bits, tt.gray)
			if out.Bounds().Size() != src.Bounds().Size() {
				t.Fatalf("size changed: %v", out.Bounds())
			}
			var pix []uint8
			switch o := out.(type) {
			case *image.Gray:
				if !tt.wantGray {
					t.Fatal("got *image.Gray for a colour request")
				}
				pix = o.Pix
			case *image.NRGBA:
				if tt.wantGray {
					t.Fatal("opaque grayscale should be *image.Gray")
				}
				for i, v := range o.Pix {
					if i%4 != 3 {
						pix = append(pix, v)
					}
				}
			}
			levels := map[uint8]bool{}
			for _, v := range pix {
				levels[v] = true
			}
			if len(levels) > tt.levels {
				t.Errorf("%d distinct channel values, want at most %d", len(levels), tt.levels)
			}
		})
	}
}

func TestGeometryFig1(t *testing.T) {
	// Paper Fig. 1: saved on a 19" 1600x1200 desktop, resumed on a 240x320 PDA.
	a := newTestAdapter(t, nil)
	in := []byte(`<window id="editor" x="100" y="50" width="1600" height="1200" title="notes"><state>caret=12</state></window>`)
	res, err := a.Adapt(t.Context(), in, pda())
	if err != nil {
		t.Fatal(err)
	}
	var w Window
	if err := xml.Unmarshal(res.Data, &w); err != nil {
		t.Fatalf("output %s: %v", res.Data, err)
	}
	if w.X != 0 || w.Y != 50 || w.Width != 240 || w.Height != 180 {
		t.Errorf("window %+v, want 240x180 at (0,50)", w)
	}
	if !res.Adapted || res.ContentType != MediaGeometry || !slices.Equal(res.Steps, []string{"geometry(240x320)"}) {
		t.Errorf("result %+v", res)
	}
	for _, keep := range []string{`id="editor"`, `title="notes"`, `<state>caret=12</state>`} {
		if !bytes.Contains(res.Data, []byte(keep)) {
			t.Errorf("output %s lost %s", res.Data, keep)
		}
	}
}

func TestGeometryFit(t *testing.T) {
	tests := []struct {
		name       string
		in         Window
		maxW, maxH int
		want       Window
	}{
		{"inside", Window{X: 10, Y: 10, Width: 100, Height: 100}, 240, 320, Window{X: 10, Y: 10, Width: 100, Height: 100}},
		{"off-right", Window{X: 200, Y: 10, Width: 100, Height: 100}, 240, 320, Window{X: 140, Y: 10, Width: 100, Height: 100}},
		{"negative", Window{X: -50, Y: -5, Width: 100, Height: 100}, 240, 320, Window{X: 0, Y: 0, Width: 100, Height: 100}},
		{"too-tall", Window{X: 0, Y: 0, Width: 100, Height: 1000}, 240, 320, Window{X: 0, Y: 0, Width: 32, Height: 320}},
		{"width-only-limit", Window{X: 500, Y: 900, Width: 1000, Height: 100}, 500, 0, Window{X: 0, Y: 900, Width: 500, Height: 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &GeometryDoc{Windows: []Window{tt.in}}
			changed := d.Fit(tt.maxW, tt.maxH)
			geom := func(w Window) [4]int { return [4]int{w.X, w.Y, w.Width, w.Height} }
			if got := d.Windows[0]; geom(got) != geom(tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if changed != (geom(tt.in) != geom(tt.want)) {
				t.Errorf("changed = %t", changed)
			}
		})
	}
}

func TestGeometryDocument(t *testing.T) {
	a := newTestAdapter(t, nil)
	in := []byte(`<?xml version="1.0"?>
<windows app="browser">
  <window id="a" x="0" y="0" width="1280" height="1024"/>
  <window id="b" x="1300" y="700" width="300" height="200"/>
  <window id="c" x="5" y="5" width="50" height="50"/>
</windows>`)
	res, err := a.Adapt(t.Context(), in, pda())
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ParseGeometry(res.Data, 10)
	if err != nil {
		t.Fatalf("output does not parse: %v\n%s", err, res.Data)
	}
	if len(doc.Windows) != 3 || !bytes.Contains(res.Data, []byte(`app="browser"`)) {
		t.Errorf("output lost windows or attributes: %s", res.Data)
	}
	for _, w := range doc.Windows {
		if w.X < 0 || w.Y < 0 || w.X+w.Width > 240 || w.Y+w.Height > 320 {
			t.Errorf("window %s at %dx%d+%d+%d outside 240x320", w.ID, w.Width, w.Height, w.X, w.Y)
		}
	}
	if c := doc.Windows[2]; c.X != 5 || c.Width != 50 {
		t.Errorf("window c moved although it fit: %+v", c)
	}
	// A document that fits passes through untouched.
	fits := []byte(`<window x="1" y="1" width="10" height="10"/>`)
	res, err = a.Adapt(t.Context(), fits, pda())
	if err != nil || res.Adapted || !bytes.Equal(res.Data, fits) {
		t.Errorf("fitting document: adapted=%v err=%v", res, err)
	}
}

func TestGeometryInvalid(t *testing.T) {
	a := newTestAdapter(t, func(c *Config) { c.MaxWindows = 2 })
	tests := []struct {
		name string
		data string
	}{
		{"zero-width", `<window x="0" y="0" width="0" height="10"/>`},
		{"huge", `<window x="0" y="0" width="99999999999" height="10"/>`},
		{"not-a-number", `<window x="left" y="0" width="1" height="1"/>`},
		{"unclosed", `<windows><window x="0" y="0" width="1" height="1"/>`},
		{"too-many", `<windows><window x="0" y="0" width="1" height="1"/><window x="0" y="0" width="1" height="1"/><window x="0" y="0" width="1" height="1"/></windows>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Adapt(t.Context(), []byte(tt.data), pda())
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestReencodeBudget(t *testing.T) {
	a := newTestAdapter(t, nil)
	src := mustJPEG(t, photo(800, 600, 5), 95)
	tests := []struct {
		name       string
		c          profiles.Constraints
		wantMet    bool
		wantShrink bool
		wantW      int // expected output width; 0 = smaller than 800
	}{
		{"reachable", profiles.Constraints{ByteBudget: int64(len(src) / 4)}, true, false, 800},
		{"needs-shrink", profiles.Constraints{ByteBudget: 3000}, true, true, 0},
		{"unreachable-no-resize", profiles.Constraints{ByteBudget: 100, Allowed: []string{"reencode"}}, false, false, 800},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := a.Adapt(t.Context(), src, tt.c)
			if err != nil {
				t.Fatal(err)
			}
			if res.BudgetMet != tt.wantMet {
				t.Fatalf("BudgetMet = %t (%d bytes, budget %d), steps %q", res.BudgetMet, len(res.Data), tt.c.ByteBudget, res.Steps)
			}
			if tt.wantMet && int64(len(res.Data)) > tt.c.ByteBudget {
				t.Errorf("%d bytes > budget %d", len(res.Data), tt.c.ByteBudget)
			}
			shrunk := slices.ContainsFunc(res.Steps, func(s string) bool { return strings.HasPrefix(s, "shrink(") })
			if shrunk != tt.wantShrink {
				t.Errorf("shrunk = %t, steps %q", shrunk, res.Steps)
			}
			if tt.wantW != 0 && res.After.Width != tt.wantW || tt.wantW == 0 && res.After.Width >= 800 {
				t.Errorf("output width %d (want %d; 0 = smaller)", res.After.Width, tt.wantW)
			}
			if !tt.wantMet && !strings.HasSuffix(res.Steps[len(res.Steps)-1], "best-effort") {
				t.Errorf("best effort not flagged in steps %q", res.Steps)
			}
			if !tt.wantMet && res.Quality != a.cfg.MinQuality {
				t.Errorf("best effort quality %d, want MinQuality %d", res.Quality, a.cfg.MinQuality)
			}
		})
	}
}

func TestPNGToJPEGFlattensAlpha(t *testing.T) {
	a := newTestAdapter(t, nil)
	res, err := a.Adapt(t.Context(), alphaPNG(t, 40, 40), profiles.Constraints{Formats: []string{MediaJPEG}})
	if err != nil {
		t.Fatal(err)
	}
	if res.ContentType != MediaJPEG || res.After.Format != MediaJPEG {
		t.Fatalf("content type %s / %s, want JPEG", res.ContentType, res.After.Format)
	}
	img, _, err := image.Decode(bytes.NewReader(res.Data))
	if err != nil {
		t.Fatal(err)
	}
	if r, g, b, _ := img.At(2, 20).RGBA(); r>>8 < 240 || g>>8 < 240 || b>>8 < 240 {
		t.Errorf("transparent pixel became (%d,%d,%d), want near white", r>>8, g>>8, b>>8)
	}
}

func TestPipelineCancelBetweenSteps(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var ran []string
	p := Pipeline{
		func(*Context) error { ran = append(ran, "first"); return nil },
		func(*Context) error { ran = append(ran, "second"); cancel(); return nil },
		func(*Context) error { ran = append(ran, "third"); return nil },
	}
	err := p.Run(ctx, &Context{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if !slices.Equal(ran, []string{"first", "second"}) {
		t.Errorf("ran %q, want the steps before cancellation only", ran)
	}
}

func TestAdaptCancelled(t *testing.T) {
	a := newTestAdapter(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := a.Adapt(ctx, mustJPEG(t, photo(400, 300, 1), 80), pda())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPDAPNGQuantized(t *testing.T) {
	// With a lossless output the 12-bit reduction is exact: every channel
	// is one of 16 levels (multiples of 17).
	a := newTestAdapter(t, nil)
	c := pda()
	c.Formats = []string{MediaPNG}
	res, err := a.Adapt(t.Context(), mustPNG(t, photo(600, 400, 9)), c)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(res.Data))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 240 || b.Dy() != 160 {
		t.Fatalf("size %v, want 240x160", b)
	}
	for y := range 160 {
		for x := range 240 {
			r, g, b, _ := img.At(x, y).RGBA()
			for _, v := range []uint32{r >> 8, g >> 8, b >> 8} {
				if v%17 != 0 {
					t.Fatalf("channel value %d at (%d,%d) is not a 4-bit level", v, x, y)
				}
			}
		}
	}
}

// TestFitQualitySearch checks the budget search on synthetic size curves
// that grow with the quality (smoothly, in steps, with flat stretches):
// it must return the highest quality that fits, as trying every quality
// would, in a bounded number of encodes.
func TestFitQualitySearch(t *testing.T) {
	cfg := NewDefaultConfig()
	k := &Codec{MediaType: MediaJPEG, SupportsQuality: true}
	curves := map[string]func(q int) int{
		"photo":  func(q int) int { s, _ := sizeFromModel(q, 4000, -0.7); return s },
		"steep":  func(q int) int { s, _ := sizeFromModel(q, 30000, -1.3); return s },
		"flat":   func(q int) int { return 1500 + 10*q },
		"steps":  func(q int) int { return 1000 + 500*(q/10) },
		"jump":   func(q int) int { return map[bool]int{true: 900, false: 20000}[q < 60] + q },
		"convex": func(q int) int { return 700 + q*q*q/40 },
	}
	for name, size := range curves {
		for budget := int64(size(1)) - 50; budget <= int64(size(100))+50; budget += max(1, int64(size(100)-size(1))/97) {
			tries := 0
			try := func(q int) ([]byte, error) {
				tries++
				return make([]byte, size(q)), nil
			}
			data, q, err := fitQuality(k, cfg, cfg.DefaultQuality, budget, try)
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			for c := cfg.MinQuality; c <= cfg.DefaultQuality; c++ {
				if int64(size(c)) <= budget {
					want = c
				}
			}
			if int64(size(cfg.DefaultQuality)) <= budget {
				want = cfg.DefaultQuality
			}
			if q != want && !(want == 0 && data == nil) || want != 0 && len(data) != size(want) {
				t.Errorf("%s, budget %d: quality %d (%d bytes), want %d", name, budget, q, len(data), want)
			}
			if tries > 1+maxGuesses+7 {
				t.Errorf("%s, budget %d: %d encodes", name, budget, tries)
			}
		}
	}
}

// sizeFromModel is a size curve that is a straight line in sizeModel's
// coordinates through (85, size85) with the given slope.
func sizeFromModel(q, size85 int, slope float64) (int, float64) {
	x85, y85 := sizeModel(85, size85)
	x, _ := sizeModel(q, size85)
	return jpegHeaderBytes + int(math.Exp(y85+slope*(x-x85))), x
}
