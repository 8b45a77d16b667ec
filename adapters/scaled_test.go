package adapters

import (
	"bytes"
	"image"
	"image/draw"
	"image/jpeg"
	"math"
	"slices"
	"testing"

	"github.com/imashproject/imash/profiles"
)

func TestScaleDenom(t *testing.T) {
	tests := []struct {
		name         string
		w, h, tw, th int
		want         int
	}{
		{"no target", 2000, 1500, 0, 0, 1},
		{"pda from 2000x1500", 2000, 1500, 240, 180, 8},
		{"just below 1/8", 1911, 1431, 240, 180, 4},
		{"exactly 1/8", 1920, 1440, 240, 180, 8},
		{"rounded up 1/8", 1913, 1433, 240, 180, 8},
		{"1/4", 1200, 900, 240, 180, 4},
		{"1/2", 640, 480, 240, 180, 2},
		{"exactly half", 480, 360, 240, 180, 2},
		{"more than half wide", 479, 360, 240, 180, 1},
		{"more than half high", 480, 359, 240, 180, 1},
		{"thin", 4000, 10, 400, 1, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scaleDenom(tt.w, tt.h, tt.tw, tt.th); got != tt.want {
				t.Errorf("scaleDenom(%d, %d, %d, %d) = %d, want %d", tt.w, tt.h, tt.tw, tt.th, got, tt.want)
			}
		})
	}
}

// fullDecodeCodecs are the default codecs with JPEG decoding as it was
// before scaled decoding: image/jpeg at full size, then resize.
func fullDecodeCodecs() []Codec {
	cs := DefaultCodecs()
	for i := range cs {
		if cs[i].MediaType == MediaJPEG {
			cs[i].Decode, cs[i].DecodeScaled = jpeg.Decode, nil
		}
	}
	return cs
}

// maxScaledOutputDiff bounds the mean absolute difference per RGB channel
// (8-bit levels) between adapting with scaled decoding and with a full
// decode. Both outputs are JPEG re-encodes at quality 85 of photo-like
// images, so part of the difference is the encoder's.
const maxScaledOutputDiff = 3.0

func TestScaledDecodeMatchesFullDecode(t *testing.T) {
	scaled := newTestAdapter(t, nil)
	full, err := New(NewDefaultConfig(), nil, fullDecodeCodecs())
	if err != nil {
		t.Fatal(err)
	}
	// A small display keeps the sources small (the test runs under -race).
	c := profiles.Constraints{MaxWidth: 120, MaxHeight: 160, Formats: []string{MediaJPEG}}
	tests := []struct {
		name      string
		w, h      int
		wantFirst string
	}{
		{"1/2", 320, 240, "decode(1/2)"},
		{"1/4", 600, 450, "decode(1/4)"},
		{"1/8", 1000, 750, "decode(1/8)"},
		{"odd size 1/4", 501, 377, "decode(1/4)"},
		{"not reduced", 200, 150, "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := mustJPEG(t, photo(tt.w, tt.h, uint64(tt.w)), 85)
			got, err := scaled.Adapt(t.Context(), src, c)
			if err != nil {
				t.Fatal(err)
			}
			want, err := full.Adapt(t.Context(), src, c)
			if err != nil {
				t.Fatal(err)
			}
			if got.Steps[0] != tt.wantFirst || want.Steps[0] != CmdDecode {
				t.Errorf("steps %q (full decode %q), want %s first", got.Steps, want.Steps, tt.wantFirst)
			}
			if !slices.Equal(got.Steps[1:], want.Steps[1:]) {
				t.Errorf("steps after decode differ: %q vs %q", got.Steps, want.Steps)
			}
			if got.After.Width != want.After.Width || got.After.Height != want.After.Height {
				t.Fatalf("output %dx%d, full decode %dx%d", got.After.Width, got.After.Height, want.After.Width, want.After.Height)
			}
			mad := meanAbsDiff(t, got.Data, want.Data)
			for ch, d := range mad {
				if d > maxScaledOutputDiff {
					t.Errorf("channel %d: mean |diff| %.2f > %.1f", ch, d, maxScaledOutputDiff)
				}
			}
			t.Logf("%dx%d: mean |diff| per channel %.2f", tt.w, tt.h, mad)
		})
	}
}

func meanAbsDiff(t *testing.T, a, b []byte) [3]float64 {
	t.Helper()
	var imgs [2]*image.RGBA
	for i, data := range [][]byte{a, b} {
		img, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		imgs[i] = image.NewRGBA(img.Bounds())
		draw.Draw(imgs[i], img.Bounds(), img, img.Bounds().Min, draw.Src)
	}
	var sum [3]float64
	for i := 0; i < len(imgs[0].Pix); i += 4 {
		for c := range 3 {
			sum[c] += math.Abs(float64(imgs[0].Pix[i+c]) - float64(imgs[1].Pix[i+c]))
		}
	}
	n := float64(len(imgs[0].Pix) / 4)
	return [3]float64{sum[0] / n, sum[1] / n, sum[2] / n}
}

func TestScaledDecodeIsOptional(t *testing.T) {
	a, err := New(NewDefaultConfig(), nil, fullDecodeCodecs())
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Adapt(t.Context(), mustJPEG(t, photo(1200, 900, 3), 85), pda())
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps[0] != CmdDecode || res.After.Width != 240 {
		t.Errorf("steps %q, output width %d", res.Steps, res.After.Width)
	}
}

func TestPlanCarriesResizeTarget(t *testing.T) {
	a := newTestAdapter(t, nil)
	attrs := Attributes{Format: MediaJPEG, Width: 2000, Height: 1500, ColorDepth: 24, Bytes: 1 << 20}
	plan, err := a.Plan(attrs, Capabilities{Raster: true}, pda())
	if err != nil {
		t.Fatal(err)
	}
	if d := plan[0]; d.Name != CmdDecode || d.Width != 240 || d.Height != 180 {
		t.Errorf("decode command %+v, want the 240x180 resize target", d)
	}
	c := pda()
	c.Allowed = []string{CmdRecolor}
	plan, err = a.Plan(attrs, Capabilities{Raster: true}, c)
	if err != nil {
		t.Fatal(err)
	}
	if d := plan[0]; d.Width != 0 || d.Height != 0 {
		t.Errorf("decode command %+v without a resize", d)
	}
}
