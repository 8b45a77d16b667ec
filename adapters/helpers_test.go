package adapters

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"testing"
)

// photo renders a photo-like image: gradients, low-frequency waves, a disc
// and per-pixel noise, so JPEG sizes resemble real photographs.
func photo(w, h int, seed uint64) *image.RGBA {
	rng := rand.New(rand.NewPCG(seed, 7))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fx, fy := 2+4*rng.Float64(), 2+4*rng.Float64()
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

func clamp(v float64) uint8 { return uint8(min(255, max(0, v))) }

func mustJPEG(t testing.TB, img image.Image, q int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mustPNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mustGIF(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := gif.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// alphaPNG is an NRGBA image with a transparent half.
func alphaPNG(t testing.TB, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			a := uint8(255)
			if x < w/2 {
				a = 0
			}
			img.SetNRGBA(x, y, color.NRGBA{uint8(x), uint8(y), 200, a})
		}
	}
	return mustPNG(t, img)
}

// pngBomb is a PNG signature and IHDR (valid CRC) declaring w x h RGBA and
// nothing else: a few dozen bytes claiming gigabytes of pixels.
func pngBomb(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk := append([]byte("IHDR"), ihdr...)
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

// jpegBomb takes a real small JPEG and rewrites its SOF0 dimensions (JPEG
// caps them at 65535).
func jpegBomb(t testing.TB, w, h uint16) []byte {
	data := mustJPEG(t, photo(16, 16, 1), 80)
	out := bytes.Clone(data)
	i := bytes.Index(out, []byte{0xFF, 0xC0})
	if i < 0 {
		t.Fatal("no SOF0 marker")
	}
	binary.BigEndian.PutUint16(out[i+5:], h)
	binary.BigEndian.PutUint16(out[i+7:], w)
	return out
}

func newTestAdapter(t testing.TB, mod func(*Config)) *Adapter {
	t.Helper()
	cfg := NewDefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
