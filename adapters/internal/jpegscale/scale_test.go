// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegscale

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Accuracy bounds for DecodeScaled against image/jpeg followed by a box
// downscale: the mean absolute difference of each channel (R, G, B, or
// C, M, Y, K for CMYK images, whose conversion to RGB is not linear), in
// 8-bit levels. The differences come from rounding, from clipping (the
// reference clips every full-size pixel before averaging, which matters
// in saturated colours) and, at the right and bottom edges, from the
// encoder's padding, which the reference does not see. Photo-like images
// (generated here or by cjpeg, see testdata/README.md) stay within
// maxMeanAbsDiffPhoto; the strongly saturated video frames from the Go
// distribution within maxMeanAbsDiffSaturated.
const (
	maxMeanAbsDiffPhoto     = 1.0
	maxMeanAbsDiffSaturated = 2.0
)

// photo renders a photo-like image: gradients, low-frequency waves, a disc
// and per-pixel noise.
func photo(w, h int, seed uint64) *image.RGBA {
	rng := rand.New(rand.NewPCG(seed, 7))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fx, fy := 2+4*rng.Float64(), 2+4*rng.Float64()
	clamp := func(v float64) uint8 { return uint8(min(255, max(0, v))) }
	for y := range h {
		for x := range w {
			u, v := float64(x)/float64(w), float64(y)/float64(h)
			base := 60*math.Sin(fx*u*math.Pi)*math.Cos(fy*v*math.Pi) + 128
			if (u-0.5)*(u-0.5)+(v-0.5)*(v-0.5) < 0.04 {
				base -= 60
			}
			n := rng.IntN(40) - 20
			i := img.PixOffset(x, y)
			img.Pix[i] = clamp(base + 80*u + float64(n))
			img.Pix[i+1] = clamp(base + float64(n))
			img.Pix[i+2] = clamp(base + 80*v + float64(n))
			img.Pix[i+3] = 255
		}
	}
	return img
}

func encode(t testing.TB, img image.Image, q int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// samples returns the test images: the files in testdata and images
// generated with image/jpeg's encoder (4:2:0 and grayscale, sizes that are
// and are not multiples of the MCU).
func samples(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	files, err := filepath.Glob("testdata/*.jpeg")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test images: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	for _, sz := range []image.Point{{64, 48}, {203, 157}, {17, 9}, {1, 1}} {
		img := photo(sz.X, sz.Y, uint64(sz.X))
		out[fmt.Sprintf("gen.420.%dx%d", sz.X, sz.Y)] = encode(t, img, 85)
		gray := image.NewGray(img.Rect)
		draw.Draw(gray, gray.Rect, img, image.Point{}, draw.Src)
		out[fmt.Sprintf("gen.gray.%dx%d", sz.X, sz.Y)] = encode(t, gray, 90)
	}
	out["gen.420.q100.96x80"] = encode(t, photo(96, 80, 5), 100)
	return out
}

// toRGBA converts img to 4 bytes per pixel at origin (0,0): RGBA, or the
// CMYK bytes themselves for a CMYK image.
func toRGBA(img image.Image) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	if c, ok := img.(*image.CMYK); ok {
		for y := range b.Dy() {
			copy(out.Pix[y*out.Stride:(y+1)*out.Stride], c.Pix[c.PixOffset(b.Min.X, b.Min.Y+y):])
		}
		return out
	}
	draw.Draw(out, out.Rect, img, b.Min, draw.Src)
	return out
}

// boxDown averages every k x k cell of src (the pixels inside src only).
func boxDown(src *image.RGBA, k int) [][4]float64 {
	w, h := src.Rect.Dx(), src.Rect.Dy()
	ow, oh := (w+k-1)/k, (h+k-1)/k
	out := make([][4]float64, ow*oh)
	for oy := range oh {
		for ox := range ow {
			var sum [4]float64
			n := 0
			for y := oy * k; y < min(h, oy*k+k); y++ {
				for x := ox * k; x < min(w, ox*k+k); x++ {
					p := src.Pix[src.PixOffset(x, y):]
					for c := range 4 {
						sum[c] += float64(p[c])
					}
					n++
				}
			}
			for c := range 4 {
				out[oy*ow+ox][c] = sum[c] / float64(n)
			}
		}
	}
	return out
}

func TestDecodeMatchesStdlib(t *testing.T) {
	for name, data := range samples(t) {
		t.Run(name, func(t *testing.T) {
			want, wantErr := jpeg.Decode(bytes.NewReader(data))
			got, err := Decode(bytes.NewReader(data))
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("err = %v, image/jpeg: %v", err, wantErr)
			}
			if err != nil {
				return
			}
			if fmt.Sprintf("%T", got) != fmt.Sprintf("%T", want) || got.Bounds() != want.Bounds() {
				t.Fatalf("got %T %v, image/jpeg %T %v", got, got.Bounds(), want, want.Bounds())
			}
			if g, w := toRGBA(got), toRGBA(want); !bytes.Equal(g.Pix, w.Pix) {
				t.Fatal("pixels differ from image/jpeg")
			}
			cfg, err := DecodeConfig(bytes.NewReader(data))
			wantCfg, _ := jpeg.DecodeConfig(bytes.NewReader(data))
			if err != nil || cfg != wantCfg {
				t.Errorf("DecodeConfig = %+v, %v; image/jpeg %+v", cfg, err, wantCfg)
			}
		})
	}
}

func TestDecodeScaledAccuracy(t *testing.T) {
	for name, data := range samples(t) {
		full, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ref := toRGBA(full)
		bound := maxMeanAbsDiffPhoto
		if strings.HasPrefix(name, "video-") {
			bound = maxMeanAbsDiffSaturated
		}
		for _, denom := range []int{2, 4, 8} {
			t.Run(fmt.Sprintf("%s/1:%d", name, denom), func(t *testing.T) {
				img, err := DecodeScaled(bytes.NewReader(data), denom)
				if err != nil {
					t.Fatal(err)
				}
				w, h := ScaledSize(ref.Rect.Dx(), ref.Rect.Dy(), denom)
				if img.Bounds() != image.Rect(0, 0, w, h) {
					t.Fatalf("bounds %v, want %dx%d", img.Bounds(), w, h)
				}
				if fmt.Sprintf("%T", img) != fmt.Sprintf("%T", full) {
					t.Errorf("type %T, full size %T", img, full)
				}
				got, want := toRGBA(img), boxDown(ref, denom)
				var mad [4]float64
				for y := range h {
					for x := range w {
						p := got.Pix[got.PixOffset(x, y):]
						for c := range 4 {
							mad[c] += math.Abs(float64(p[c]) - want[y*w+x][c])
						}
					}
				}
				for c := range mad {
					mad[c] /= float64(w * h)
					if mad[c] > bound {
						t.Errorf("channel %d: mean |diff| %.3f > %.1f", c, mad[c], bound)
					}
				}
				t.Logf("mean |diff| per channel %.3f", mad)
			})
		}
	}
}

func TestBoxIDCTConstants(t *testing.T) {
	half := [2][8]int64{{w00, w01, w02, w03, 0, w05, w06, w07}, {w00, w11, -w02, w13, 0, w15, -w06, w17}}
	for x, want := range half {
		if boxIDCT[1][x] != want {
			t.Errorf("boxIDCT[1][%d] = %v, constants %v", x, boxIDCT[1][x], want)
		}
	}
	if want := [8]int64{w00, q01, 0, q03, 0, q05, 0, q07}; boxIDCT[2][0] != want {
		t.Errorf("boxIDCT[2][0] = %v, constants %v", boxIDCT[2][0], want)
	}
	for shift := range 4 {
		n := 8 >> shift
		for x := range n {
			for u := range 8 {
				w, mirror := boxIDCT[shift][x][u], boxIDCT[shift][n-1-x][u]
				if u%2 == 1 {
					mirror = -mirror
				}
				if w != mirror || n == 4 && u == 4 && w != 0 || n == 2 && u%2 == 0 && u > 0 && w != 0 || n == 1 && u > 0 && w != 0 {
					t.Fatalf("boxIDCT[%d][%d][%d] = %d: symmetry or zeroes idct1D relies on do not hold", shift, x, u, w)
				}
			}
		}
	}
}

// TestReconstructScaledUnrolled checks the unrolled 1/2 and 1/4 cases
// against the direct sums of boxIDCT.
func TestReconstructScaledUnrolled(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		var b block
		for k := range b {
			if rng.IntN(3) == 0 {
				b[k] = int32(rng.IntN(2048) - 1024)
			}
		}
		if iter%4 == 0 {
			for k := 8; k < blockSize; k++ {
				b[k] = 0
			}
		}
		for _, s := range []uint{1, 2} {
			n := 8 >> s
			var got, ref [8 * 8]byte
			reconstructScaled(&b, s, s, got[:], 8)
			// Reference: the direct sums of the table.
			var rows [8][8]int64
			for v := range 8 {
				for x := range n {
					var acc int64
					for u := range 8 {
						acc += boxIDCT[s][x][u] * int64(b[8*v+u])
					}
					rows[v][x] = (acc + rowRound) >> rowShift
				}
			}
			for y := range n {
				for x := range n {
					var acc int64
					for v := range 8 {
						acc += boxIDCT[s][y][v] * rows[v][x]
					}
					ref[y*8+x] = clampLevel64((acc + colRound) >> colShift)
				}
			}
			if got != ref {
				t.Fatalf("shift %d, block %v: got %v, want %v", s, b, got, ref)
			}
		}
	}
}

// TestIDCTDC checks that idctDC, which the decoder uses for blocks with
// only a DC coefficient, gives what idct gives them (its row and column
// shortcuts). That those shortcuts are image/jpeg's full butterflies on
// such blocks is checked end to end, by TestDecodeMatchesStdlib.
func TestIDCTDC(t *testing.T) {
	for dc := int32(-1 << 16); dc <= 1<<16; dc += 7 {
		b := block{0: dc}
		idct(&b)
		for k, v := range b {
			if v != idctDC(dc) {
				t.Fatalf("dc %d: idct[%d] = %d, idctDC %d", dc, k, v, idctDC(dc))
			}
		}
	}
}
