// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegscale

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/jpeg"
	"runtime"
	"testing"
)

var denoms = []int{1, 2, 4, 8}

// bomb rewrites the SOF dimensions of a small valid JPEG to w x h.
func bomb(t testing.TB, w, h uint16) []byte {
	t.Helper()
	data := encode(t, photo(16, 16, 1), 80)
	i := bytes.Index(data, []byte{0xFF, 0xC0})
	if i < 0 {
		t.Fatal("no SOF0 marker")
	}
	binary.BigEndian.PutUint16(data[i+5:], h)
	binary.BigEndian.PutUint16(data[i+7:], w)
	return data
}

func TestTruncatedInputFails(t *testing.T) {
	for name, data := range samples(t) {
		t.Run(name, func(t *testing.T) {
			// Every proper prefix lacks at least the EOI marker. Step
			// through the file so large samples stay quick.
			step := max(1, len(data)/25)
			for n := 0; n < len(data)-1; n += step {
				for _, denom := range denoms {
					if _, err := DecodeScaled(bytes.NewReader(data[:n]), denom); err == nil {
						t.Fatalf("1/%d: %d of %d bytes decoded without error", denom, n, len(data))
					}
				}
			}
		})
	}
}

func TestCorruptInputDoesNotPanic(t *testing.T) {
	for name, data := range samples(t) {
		t.Run(name, func(t *testing.T) {
			buf := bytes.Clone(data)
			step := max(1, len(data)/25)
			for i := 0; i < len(data); i += step {
				buf[i] = [...]byte{0x00, 0xFF, data[i] ^ 0x5A}[i%3]
				for _, denom := range denoms {
					img, err := DecodeOptions(bytes.NewReader(buf), Options{Denom: denom, MaxPixels: 1 << 16})
					if err == nil && img == nil {
						t.Fatalf("nil image without error")
					}
				}
				buf[i] = data[i]
			}
		})
	}
}

func TestPixelLimit(t *testing.T) {
	data := bomb(t, 60000, 60000)
	for _, denom := range denoms {
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		_, err := DecodeOptions(bytes.NewReader(data), Options{Denom: denom, MaxPixels: 40_000_000})
		runtime.ReadMemStats(&ms1)
		if !errors.Is(err, ErrTooManyPixels) {
			t.Errorf("1/%d: err = %v, want ErrTooManyPixels", denom, err)
		}
		if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20 {
			t.Errorf("1/%d: refusing the header allocated %d bytes", denom, alloc)
		}
	}
	// The limit is on the declared size, not the decoded one.
	ok := encode(t, photo(64, 64, 1), 80)
	if _, err := DecodeOptions(bytes.NewReader(ok), Options{Denom: 8, MaxPixels: 64 * 63}); !errors.Is(err, ErrTooManyPixels) {
		t.Errorf("64x64 at 1/8 with a limit of 64x63: err = %v", err)
	}
	if _, err := DecodeOptions(bytes.NewReader(ok), Options{Denom: 8, MaxPixels: 64 * 64}); err != nil {
		t.Errorf("64x64 within its limit: %v", err)
	}
}

func TestBadDenom(t *testing.T) {
	ok := encode(t, photo(8, 8, 1), 80)
	for _, denom := range []int{-1, 3, 16} {
		if _, err := DecodeScaled(bytes.NewReader(ok), denom); err == nil {
			t.Errorf("denom %d accepted", denom)
		}
	}
}

// FuzzDecodeScaled checks that no input panics at any scale, that a
// decoded image has the size ScaledSize promises, and that at full size
// the decoder agrees with image/jpeg.
func FuzzDecodeScaled(f *testing.F) {
	for _, data := range samples(f) {
		f.Add(data)
	}
	f.Add(bomb(f, 60000, 60000))
	f.Add([]byte{0xFF, 0xD8, 0xFF})
	const maxPixels = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, cfgErr := DecodeConfig(bytes.NewReader(data))
		for _, denom := range denoms {
			img, err := DecodeOptions(bytes.NewReader(data), Options{Denom: denom, MaxPixels: maxPixels})
			if err != nil {
				// Failing is right only where image/jpeg fails too (within
				// the pixel limit, which image/jpeg does not have).
				if denom == 1 && cfgErr == nil && cfg.Width*cfg.Height <= maxPixels {
					if _, jerr := jpeg.Decode(bytes.NewReader(data)); jerr == nil {
						t.Fatalf("image/jpeg decodes it, but 1/1 failed: %v", err)
					}
				}
				continue
			}
			if cfgErr != nil {
				t.Fatalf("1/%d decoded but DecodeConfig failed: %v", denom, cfgErr)
			}
			w, h := ScaledSize(cfg.Width, cfg.Height, denom)
			if img.Bounds() != image.Rect(0, 0, w, h) {
				t.Fatalf("1/%d: bounds %v, want %dx%d", denom, img.Bounds(), w, h)
			}
			if denom != 1 {
				continue
			}
			want, err := jpeg.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("decoded at full size, image/jpeg: %v", err)
			}
			if !bytes.Equal(toRGBA(img).Pix, toRGBA(want).Pix) {
				t.Fatal("full-size pixels differ from image/jpeg")
			}
		}
	})
}
