package adapters

import (
	"errors"
	"slices"
	"testing"

	"github.com/imashproject/imash/profiles"
)

// pda is the paper's 240x320 12-bit PDA that renders only JPEG.
func pda() profiles.Constraints {
	return profiles.Constraints{MaxWidth: 240, MaxHeight: 320, ColorDepth: 12, Formats: []string{MediaJPEG}}
}

func TestPlan(t *testing.T) {
	a := newTestAdapter(t, nil)
	raster := Capabilities{MediaType: MediaJPEG, Raster: true}
	photo := Attributes{Format: MediaJPEG, Width: 2000, Height: 1500, ColorDepth: 24, Bytes: 900_000}
	small := Attributes{Format: MediaJPEG, Width: 200, Height: 150, ColorDepth: 24, Bytes: 9_000}
	pngA := Attributes{Format: MediaPNG, Width: 100, Height: 100, ColorDepth: 32, Alpha: true, Bytes: 5_000}
	tests := []struct {
		name    string
		attrs   Attributes
		caps    Capabilities
		c       profiles.Constraints
		want    []string // command strings
		wantErr error
	}{
		{name: "fits-passthrough", attrs: small, caps: raster, c: profiles.Constraints{MaxWidth: 240, MaxHeight: 320, ColorDepth: 24, Formats: []string{MediaJPEG}}},
		{name: "no-adaptation", attrs: photo, caps: raster, c: profiles.Constraints{MaxWidth: 10, NoAdaptation: true}},
		{name: "pda-photo", attrs: photo, caps: raster, c: pda(),
			want: []string{"decode", "resize(240x180)", "recolor(4bit/channel)", "encode(image/jpeg,q=85)"}},
		{name: "pda-with-budget", attrs: photo, caps: raster, c: func() profiles.Constraints { c := pda(); c.ByteBudget = 20_000; return c }(),
			want: []string{"decode", "resize(240x180)", "recolor(4bit/channel)", "reencode(image/jpeg,budget=20000)"}},
		{name: "portrait-limit-height", attrs: Attributes{Format: MediaJPEG, Width: 1000, Height: 4000, ColorDepth: 24}, caps: raster,
			c: profiles.Constraints{MaxWidth: 1000, MaxHeight: 1000}, want: []string{"decode", "resize(250x1000)", "encode(image/jpeg,q=85)"}},
		{name: "budget-only", attrs: photo, caps: raster, c: profiles.Constraints{ByteBudget: 100_000},
			want: []string{"decode", "reencode(image/jpeg,budget=100000)"}},
		{name: "budget-already-met", attrs: small, caps: raster, c: profiles.Constraints{ByteBudget: 100_000}},
		{name: "gray", attrs: small, caps: raster, c: profiles.Constraints{Grayscale: true},
			want: []string{"decode", "recolor(gray,8bit)", "encode(image/jpeg,q=85)"}},
		{name: "gray-4bit", attrs: small, caps: raster, c: profiles.Constraints{Grayscale: true, ColorDepth: 4},
			want: []string{"decode", "recolor(gray,4bit)", "encode(image/jpeg,q=85)"}},
		{name: "gray-source-8bit-fits", attrs: Attributes{Format: MediaJPEG, Width: 10, Height: 10, ColorDepth: 8, Grayscale: true}, caps: raster,
			c: profiles.Constraints{ColorDepth: 12}},
		{name: "png-to-jpeg", attrs: pngA, caps: Capabilities{MediaType: MediaPNG, Raster: true}, c: profiles.Constraints{Formats: []string{MediaJPEG}},
			want: []string{"decode", "convert(image/jpeg)", "encode(image/jpeg,q=85)"}},
		{name: "alpha-prefers-alpha-format", attrs: pngA, caps: Capabilities{MediaType: MediaPNG, Raster: true},
			c:    profiles.Constraints{Formats: []string{"image/webp", MediaJPEG, MediaGIF}},
			want: []string{"decode", "convert(image/gif)", "encode(image/gif,q=85)"}},
		{name: "resize-not-allowed", attrs: photo, caps: raster, c: profiles.Constraints{MaxWidth: 240, MaxHeight: 320, Allowed: []string{"reencode"}}},
		{name: "convert-not-allowed", attrs: pngA, caps: Capabilities{MediaType: MediaPNG, Raster: true},
			c: profiles.Constraints{Formats: []string{MediaJPEG}, Allowed: []string{"resize"}}, wantErr: ErrUnsupported},
		{name: "no-codec", attrs: pngA, caps: Capabilities{MediaType: MediaPNG, Raster: true},
			c: profiles.Constraints{Formats: []string{"image/webp"}}, wantErr: ErrUnsupported},
		{name: "geometry-outside", attrs: Attributes{Format: MediaGeometry, Width: 1700, Height: 1250}, caps: Capabilities{Geometry: true},
			c: pda(), want: []string{"geometry(240x320)"}},
		{name: "geometry-negative", attrs: Attributes{Format: MediaGeometry, X: -3, Width: 100, Height: 100}, caps: Capabilities{Geometry: true},
			c: pda(), want: []string{"geometry(240x320)"}},
		{name: "geometry-inside", attrs: Attributes{Format: MediaGeometry, Width: 200, Height: 300}, caps: Capabilities{Geometry: true}, c: pda()},
		{name: "geometry-not-allowed", attrs: Attributes{Format: MediaGeometry, Width: 1700, Height: 1250}, caps: Capabilities{Geometry: true},
			c: profiles.Constraints{MaxWidth: 240, Allowed: []string{"resize"}}},
		{name: "unknown-kind", attrs: Attributes{Format: "text/plain"}, caps: Capabilities{MediaType: "text/plain"}, c: pda()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Plan(tt.attrs, tt.caps, tt.c)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var got []string
			for _, c := range p {
				got = append(got, c.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("plan = %q\nwant   %q", got, tt.want)
			}
		})
	}
}

func TestFitSize(t *testing.T) {
	tests := []struct {
		name             string
		w, h, maxW, maxH int
		wantW, wantH     int
	}{
		{"landscape-into-portrait", 2000, 1500, 240, 320, 240, 180},
		{"portrait", 1500, 2000, 240, 320, 240, 320},
		{"never-upscale", 100, 50, 240, 320, 100, 50},
		{"width-only", 1000, 10, 100, 0, 100, 1},
		{"unbounded", 5000, 5000, 0, 0, 5000, 5000},
		{"thin-line-keeps-a-pixel", 10000, 1, 100, 100, 100, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, h := fitSize(tt.w, tt.h, tt.maxW, tt.maxH)
			if w != tt.wantW || h != tt.wantH {
				t.Errorf("fitSize = %dx%d, want %dx%d", w, h, tt.wantW, tt.wantH)
			}
		})
	}
}
