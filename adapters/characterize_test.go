package adapters

import (
	"errors"
	"image"
	"image/color/palette"
	"runtime"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	if err := NewDefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	err := Config{MinQuality: 0, DefaultQuality: 200, Workers: 0, QueueSize: -1}.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err = %v, want ErrInvalidConfig", err)
	}
	for _, field := range []string{"MaxPixels", "MaxWindows", "DefaultQuality", "MinQuality", "Workers", "QueueSize"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not report %s", err, field)
		}
	}
}

func TestRegistryDuplicate(t *testing.T) {
	r := NewDefaultRegistry()
	if err := r.Register(JPEGCharacterizer{}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate JPEG registration: err = %v, want ErrDuplicate", err)
	}
	caps := r.Capabilities()
	if len(caps) != 4 {
		t.Fatalf("got %d characterizers, want 4", len(caps))
	}
	for _, c := range caps {
		if c.MediaType == "" || c.Description == "" || c.Raster == c.Geometry {
			t.Errorf("capabilities not described: %+v", c)
		}
	}
}

func TestSniff(t *testing.T) {
	r := NewDefaultRegistry()
	gray := image.NewGray(image.Rect(0, 0, 8, 8))
	tests := []struct {
		name string
		data []byte
		want string // "" = unknown
	}{
		{"jpeg", mustJPEG(t, photo(8, 8, 1), 80), MediaJPEG},
		{"png", mustPNG(t, gray), MediaPNG},
		{"gif", mustGIF(t, gray), MediaGIF},
		{"geometry-window", []byte(`<window x="1" y="2" width="3" height="4"/>`), MediaGeometry},
		{"geometry-decl", []byte("<?xml version=\"1.0\"?>\n<windows><window x=\"0\" y=\"0\" width=\"1\" height=\"1\"/></windows>"), MediaGeometry},
		{"other-xml", []byte(`<html><body/></html>`), ""},
		{"text", []byte("hello, world"), ""},
		{"empty", nil, ""},
		{"jpeg-prefix-only", []byte{0xFF, 0xD8}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := r.Lookup(tt.data)
			got := ""
			if ok {
				got = c.Capabilities().MediaType
			}
			if got != tt.want {
				t.Errorf("Lookup = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCharacterize(t *testing.T) {
	a := newTestAdapter(t, nil)
	pal := image.NewPaletted(image.Rect(0, 0, 30, 20), palette.Plan9)
	tests := []struct {
		name string
		data []byte
		want Attributes
	}{
		{"jpeg-colour", mustJPEG(t, photo(64, 48, 1), 80), Attributes{Format: MediaJPEG, Width: 64, Height: 48, ColorDepth: 24}},
		{"jpeg-gray", mustJPEG(t, image.NewGray(image.Rect(0, 0, 10, 20)), 80), Attributes{Format: MediaJPEG, Width: 10, Height: 20, ColorDepth: 8, Grayscale: true}},
		{"png-nrgba", alphaPNG(t, 7, 9), Attributes{Format: MediaPNG, Width: 7, Height: 9, ColorDepth: 32, Alpha: true}},
		{"png-gray", mustPNG(t, image.NewGray(image.Rect(0, 0, 5, 5))), Attributes{Format: MediaPNG, Width: 5, Height: 5, ColorDepth: 8, Grayscale: true}},
		{"gif-256", mustGIF(t, pal), Attributes{Format: MediaGIF, Width: 30, Height: 20, ColorDepth: 8}},
		{"geometry", []byte(`<windows><window x="-5" y="10" width="100" height="50"/><window x="20" y="30" width="400" height="300"/></windows>`),
			Attributes{Format: MediaGeometry, X: -5, Y: 10, Width: 420, Height: 330, Windows: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, ok, err := a.Characterize(tt.data)
			if err != nil || !ok {
				t.Fatalf("Characterize: ok=%t err=%v", ok, err)
			}
			tt.want.Bytes = int64(len(tt.data))
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestAttributesXML(t *testing.T) {
	x, err := Attributes{Format: MediaJPEG, Width: 240, Height: 180, ColorDepth: 24, Bytes: 1234}.XML()
	if err != nil {
		t.Fatal(err)
	}
	want := `<attributes format="image/jpeg" width="240" height="180" colorDepth="24" bytes="1234"></attributes>`
	if string(x) != want {
		t.Errorf("XML = %s\nwant  %s", x, want)
	}
}

func TestCorruptAndTruncated(t *testing.T) {
	a := newTestAdapter(t, nil)
	good := mustJPEG(t, photo(200, 150, 3), 85)
	fit := pda()
	tests := []struct {
		name string
		data []byte
	}{
		{"header-garbage", append([]byte{0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x02}, make([]byte, 40)...)},
		{"truncated-in-header", good[:30]},
		{"truncated-in-scan", good[:len(good)/2]},
		{"scan-zeroed", append(append([]byte{}, good[:len(good)/2]...), make([]byte, len(good)/2)...)},
		{"png-bad-crc", func() []byte { b := pngBomb(10, 10); b[len(b)-1] ^= 1; return b }()},
		{"png-no-data", pngBomb(500, 500)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Adapt(t.Context(), tt.data, fit)
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v (%T), want *DecodeError wrapping ErrCorrupt", err, err)
			}
		})
	}
}

func TestDecompressionBombRefused(t *testing.T) {
	a := newTestAdapter(t, nil)
	tests := []struct {
		name string
		data []byte
	}{
		{"png-100000x100000", pngBomb(100000, 100000)},
		{"jpeg-60000x60000", jpegBomb(t, 60000, 60000)},
		{"png-just-over", pngBomb(8000, 5001)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			_, err := a.Adapt(t.Context(), tt.data, pda())
			runtime.ReadMemStats(&ms1)
			var pe *PixelLimitError
			if !errors.As(err, &pe) || !errors.Is(err, ErrTooManyPixels) {
				t.Fatalf("err = %v, want *PixelLimitError", err)
			}
			if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20 {
				t.Errorf("allocated %d bytes refusing a %d-byte bomb; decoding must not start", alloc, len(tt.data))
			}
		})
	}
}
