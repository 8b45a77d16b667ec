package adapters

import (
	"runtime"
	"testing"
)

// fuzzCharacterizer checks that a characterizer never panics, honours the
// pixel limit, allocates little for small inputs (it reads headers only),
// and that adapting whatever it accepts (with a small pixel limit) does
// not panic either.
func fuzzCharacterizer(f *testing.F, c Characterizer, seeds ...[]byte) {
	for _, s := range seeds {
		f.Add(s)
	}
	const maxPixels = 1 << 16
	a := newTestAdapter(f, func(cfg *Config) { cfg.MaxPixels = maxPixels; cfg.MaxShrinks = 1 })
	f.Fuzz(func(t *testing.T, data []byte) {
		if !c.Sniff(data) {
			return
		}
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		attrs, err := c.Characterize(data, maxPixels)
		runtime.ReadMemStats(&ms1)
		if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20+64*uint64(len(data)) {
			t.Fatalf("characterizing %d bytes allocated %d bytes", len(data), alloc)
		}
		if err != nil {
			return
		}
		if c.Capabilities().Raster && (attrs.Width <= 0 || attrs.Height <= 0 || int64(attrs.Width)*int64(attrs.Height) > maxPixels) {
			t.Fatalf("accepted %dx%d", attrs.Width, attrs.Height)
		}
		_, _ = a.Adapt(t.Context(), data, pda())
	})
}

func FuzzCharacterizeJPEG(f *testing.F) {
	good := mustJPEG(f, photo(32, 24, 1), 80)
	fuzzCharacterizer(f, JPEGCharacterizer{}, good, good[:len(good)/2], jpegBomb(f, 60000, 60000), []byte{0xFF, 0xD8, 0xFF})
}

func FuzzCharacterizePNG(f *testing.F) {
	fuzzCharacterizer(f, PNGCharacterizer{}, mustPNG(f, photo(16, 16, 1)), alphaPNG(f, 8, 8), pngBomb(100000, 100000))
}

func FuzzCharacterizeGIF(f *testing.F) {
	fuzzCharacterizer(f, GIFCharacterizer{}, mustGIF(f, photo(16, 16, 1)), []byte("GIF89a\xff\xff\xff\xff\x00\x00\x00"))
}

func FuzzCharacterizeGeometry(f *testing.F) {
	fuzzCharacterizer(f, GeometryCharacterizer{},
		[]byte(`<window x="100" y="50" width="1600" height="1200"/>`),
		[]byte(`<windows a="b"><window x="-1" y="2" width="3" height="4">x</window></windows>`),
		[]byte(`<?xml version="1.0"?><windows/>`))
}
