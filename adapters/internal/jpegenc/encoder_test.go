// Copyright 2011 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegenc

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/draw"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"testing"
)

// photo renders a photo-like image: gradients, low-frequency waves and
// per-pixel noise (with saturated areas, which make 0xff bytes likely).
func photo(w, h int, seed uint64) *image.RGBA {
	rng := rand.New(rand.NewPCG(seed, 7))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			u, v := float64(x)/float64(w), float64(y)/float64(h)
			base := 90*math.Sin(5*u*math.Pi)*math.Cos(3*v*math.Pi) + 128
			n := float64(rng.IntN(60) - 30)
			i := img.PixOffset(x, y)
			img.Pix[i] = clamp(base + 120*u + n)
			img.Pix[i+1] = clamp(base + n)
			img.Pix[i+2] = clamp(base + 120*v - n)
			img.Pix[i+3] = 255
		}
	}
	return img
}

func clamp(v float64) uint8 { return uint8(min(255, max(0, v))) }

// testImages returns images of every type and layout the encoder treats
// differently.
func testImages() map[string]image.Image {
	out := map[string]image.Image{}
	for _, sz := range []image.Point{{37, 23}, {64, 48}, {1, 1}, {17, 33}} {
		src := photo(sz.X, sz.Y, uint64(sz.X))
		out[fmt.Sprintf("rgba-%v", sz)] = src
		gray := image.NewGray(src.Rect)
		draw.Draw(gray, gray.Rect, src, image.Point{}, draw.Src)
		out[fmt.Sprintf("gray-%v", sz)] = gray
		nrgba := image.NewNRGBA(src.Rect)
		draw.Draw(nrgba, nrgba.Rect, src, image.Point{}, draw.Src)
		for i := 3; i < len(nrgba.Pix); i += 28 {
			nrgba.Pix[i] = 100 // some transparency: At premultiplies
		}
		out[fmt.Sprintf("nrgba-%v", sz)] = nrgba
		pal := image.NewPaletted(src.Rect, palette.Plan9)
		draw.Draw(pal, pal.Rect, src, image.Point{}, draw.Src)
		out[fmt.Sprintf("paletted-%v", sz)] = pal
		for _, r := range []image.YCbCrSubsampleRatio{
			image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422, image.YCbCrSubsampleRatio420,
			image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410,
		} {
			m := image.NewYCbCr(src.Rect, r)
			for y := range sz.Y {
				for x := range sz.X {
					p := src.RGBAAt(x, y)
					yy, cb, cr := color.RGBToYCbCr(p.R, p.G, p.B)
					m.Y[m.YOffset(x, y)], m.Cb[m.COffset(x, y)], m.Cr[m.COffset(x, y)] = yy, cb, cr
				}
			}
			out[fmt.Sprintf("ycbcr-%v-%v", r, sz)] = m
			if sz.X > 4 && sz.Y > 4 {
				// Sub-images with an even and an odd origin.
				out[fmt.Sprintf("ycbcr-%v-%v-sub22", r, sz)] = m.SubImage(image.Rect(2, 2, sz.X, sz.Y))
				out[fmt.Sprintf("ycbcr-%v-%v-sub31", r, sz)] = m.SubImage(image.Rect(3, 1, sz.X-1, sz.Y))
			}
		}
	}
	return out
}

func TestMatchesImageJPEG(t *testing.T) {
	for name, m := range testImages() {
		for _, q := range []int{-5, 1, 10, 49, 50, 85, 100, 120} {
			var want bytes.Buffer
			if err := jpeg.Encode(&want, m, &jpeg.Options{Quality: q}); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := Encode(&got, m, q); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("%s, quality %d: %d bytes differ from image/jpeg's %d", name, q, got.Len(), want.Len())
			}
			c, err := Prepare(m)
			if err != nil {
				t.Fatal(err)
			}
			if p := c.Encode(q); !bytes.Equal(p, want.Bytes()) {
				t.Fatalf("%s, quality %d: prepared encoding differs from image/jpeg's", name, q)
			}
		}
	}
}

func TestTooLarge(t *testing.T) {
	m := image.NewGray(image.Rect(0, 0, 1<<16, 1))
	if err := Encode(&bytes.Buffer{}, m, 80); err == nil {
		t.Error("Encode accepted a 65536-pixel-wide image")
	}
	if _, err := Prepare(m); err == nil {
		t.Error("Prepare accepted a 65536-pixel-wide image")
	}
}

// TestReciprocal checks quantize against image/jpeg's division for every
// divisor the quality can give and every value the forward DCT can give
// (|a| <= 8160) and far beyond, at the values just below a multiple of the
// divisor, where a reciprocal that is too large would show first.
func TestReciprocal(t *testing.T) {
	div := func(a, b int32) int32 {
		if a >= 0 {
			return (a + (b >> 1)) / b
		}
		return -((-a + (b >> 1)) / b)
	}
	for q := uint32(1); q <= 255; q++ {
		d := 8 * q
		m := reciprocal(d)
		for k := int32(0); k*int32(d) < 1<<17; k++ {
			for _, x := range []int32{k*int32(d) - 1, k * int32(d), k*int32(d) + 1} {
				a := x - int32(d>>1)
				for _, s := range []int32{a, -a} {
					if got, want := quantize(s, d, m), div(s, int32(d)); got != want {
						t.Fatalf("quantize(%d, %d) = %d, want %d", s, d, got, want)
					}
				}
			}
		}
	}
}

// FuzzEncode builds a small image of a type and layout chosen by the
// input, filled with the input's bytes, and checks that Encode and
// Prepare's encodings are image/jpeg's.
func FuzzEncode(f *testing.F) {
	f.Add([]byte{0, 17, 9, 85, 1, 2, 3, 255, 255, 0, 128})
	f.Add([]byte{3, 1, 1, 100, 255})
	f.Add([]byte{7, 33, 20, 1, 0xff, 0xff, 0xff, 0xff, 0x00})
	f.Add([]byte{11, 16, 16, 50})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		kind, w, h, q := int(data[0]), 1+int(data[1])%40, 1+int(data[2])%40, int(data[3])
		pix := data[4:]
		if len(pix) == 0 {
			pix = []byte{0}
		}
		fill := func(p []byte) {
			for i := range p {
				p[i] = pix[i%len(pix)]
			}
		}
		r := image.Rect(0, 0, w, h)
		var m image.Image
		switch kind % 5 {
		case 0:
			g := image.NewGray(r)
			fill(g.Pix)
			m = g
		case 1:
			c := image.NewRGBA(r)
			fill(c.Pix)
			m = c
		case 2:
			c := image.NewNRGBA(r)
			fill(c.Pix)
			m = c
		default:
			ratio := image.YCbCrSubsampleRatio(kind / 5 % 6)
			c := image.NewYCbCr(r, ratio)
			fill(c.Y)
			fill(c.Cb)
			fill(c.Cr)
			m = c
			if kind%5 == 4 && w > 3 && h > 3 {
				m = c.SubImage(image.Rect(kind/30%3, kind/90%3, w, h))
			}
		}
		var want bytes.Buffer
		if err := jpeg.Encode(&want, m, &jpeg.Options{Quality: q}); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := Encode(&got, m, q); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("%T %v quality %d: output differs from image/jpeg's", m, m.Bounds(), q)
		}
		c, err := Prepare(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.Encode(q), want.Bytes()) {
			t.Fatalf("%T %v quality %d: prepared output differs from image/jpeg's", m, m.Bounds(), q)
		}
	})
}
