package adapters

import (
	"fmt"
	"image"
	"image/draw"
	"math"
	"testing"

	"github.com/disintegration/imaging"
)

func TestMakeWeights(t *testing.T) {
	for _, tt := range [][2]int{{250, 240}, {461, 240}, {2000, 240}, {7, 3}, {3, 7}, {1, 1}, {5, 1}, {1, 4}, {240, 240}} {
		src, dst := tt[0], tt[1]
		kw := makeWeights(dst, src, resizeFilter(src, dst))
		for v := range dst {
			sum := int32(0)
			for k, w := range kw.w[v*kw.taps : (v+1)*kw.taps] {
				if w < 0 || w != 0 && (kw.start[v]+k < 0 || kw.start[v]+k >= src) {
					t.Fatalf("%d->%d: output %d: weight %d at source %d", src, dst, v, w, kw.start[v]+k)
				}
				sum += w
			}
			if sum != 1<<weightBits || kw.start[v] < 0 || kw.start[v]+kw.taps > src {
				t.Fatalf("%d->%d: output %d: weights sum to %d, span %d+%d", src, dst, v, sum, kw.start[v], kw.taps)
			}
		}
	}
}

// TestResizeYCbCrMatchesImaging compares the planar resampler with
// imaging.Resize (float, in RGB) on the same image: they use the same
// filters, so they differ by rounding and, with 4:2:0 output, by the
// chroma resolution only.
func TestResizeYCbCrMatchesImaging(t *testing.T) {
	src := photo(203, 157, 3)
	ratios := []image.YCbCrSubsampleRatio{
		image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422, image.YCbCrSubsampleRatio420,
		image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410,
	}
	sizes := [][2]int{{100, 77}, {190, 150}, {40, 31}, {1, 1}, {203, 80}, {250, 200}}
	for _, r := range ratios {
		ycc := toYCbCr(src, r)
		// A sub-image whose origin is not (0,0) nor on a chroma sample.
		sub := ycc.SubImage(image.Rect(3, 5, 203, 157)).(*image.YCbCr)
		for _, m := range []*image.YCbCr{ycc, sub} {
			for _, sz := range sizes {
				for _, full := range []bool{true, false} {
					name := fmt.Sprintf("%v/%v/%dx%d/full=%v", r, m.Rect, sz[0], sz[1], full)
					got := resizeYCbCr(m, sz[0], sz[1], full)
					if got.Rect != image.Rect(0, 0, sz[0], sz[1]) {
						t.Fatalf("%s: bounds %v", name, got.Rect)
					}
					want := imaging.Resize(m, sz[0], sz[1], resizeFilter(m.Rect.Dx(), sz[0]))
					if d := meanRGBDiff(got, want); d > 1 {
						t.Errorf("%s: mean |diff| %.2f > 1", name, d)
					}
				}
			}
		}
	}
}

func TestResizeGray(t *testing.T) {
	gray := image.NewGray(image.Rect(0, 0, 97, 61))
	draw.Draw(gray, gray.Rect, photo(97, 61, 4), image.Point{}, draw.Src)
	for _, sz := range [][2]int{{40, 25}, {97, 30}, {1, 1}, {120, 80}} {
		got := resize(gray, sz[0], sz[1], nil)
		g, ok := got.(*image.Gray)
		if !ok || g.Rect != image.Rect(0, 0, sz[0], sz[1]) {
			t.Fatalf("%v: got %T %v", sz, got, got.Bounds())
		}
		want := imaging.Resize(gray, sz[0], sz[1], resizeFilter(97, sz[0]))
		if d := meanRGBDiff(g, want); d > 1 {
			t.Errorf("%v: mean |diff| %.2f", sz, d)
		}
	}
}

func toYCbCr(src image.Image, r image.YCbCrSubsampleRatio) *image.YCbCr {
	b := src.Bounds()
	m := image.NewYCbCr(b, r)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			rr, g, bb, _ := src.At(x, y).RGBA()
			yy, cb, cr := colorToYCbCr(uint8(rr>>8), uint8(g>>8), uint8(bb>>8))
			m.Y[m.YOffset(x, y)] = yy
			m.Cb[m.COffset(x, y)] = cb
			m.Cr[m.COffset(x, y)] = cr
		}
	}
	return m
}

func colorToYCbCr(r, g, b uint8) (uint8, uint8, uint8) {
	yf := 0.299*float64(r) + 0.587*float64(g) + 0.114*float64(b)
	cb := 128 - 0.168736*float64(r) - 0.331264*float64(g) + 0.5*float64(b)
	cr := 128 + 0.5*float64(r) - 0.418688*float64(g) - 0.081312*float64(b)
	return clamp(math.Round(yf)), clamp(math.Round(cb)), clamp(math.Round(cr))
}

func meanRGBDiff(a, b image.Image) float64 {
	ra := image.NewRGBA(a.Bounds())
	draw.Draw(ra, ra.Rect, a, a.Bounds().Min, draw.Src)
	rb := image.NewRGBA(b.Bounds())
	draw.Draw(rb, rb.Rect, b, b.Bounds().Min, draw.Src)
	sum := 0.0
	for i := range ra.Pix {
		if i%4 != 3 {
			sum += math.Abs(float64(ra.Pix[i]) - float64(rb.Pix[i]))
		}
	}
	return sum / float64(len(ra.Pix)/4*3)
}
