package adapters

import (
	"bytes"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/disintegration/imaging"
	"github.com/imashproject/imash/testbed/legacy"
)

func reportMsPerImage(b *testing.B, images int) {
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*images), "ms/image")
}

// BenchmarkAdapt times adapting a 2000x1500 photo-like JPEG to the 240x320
// PDA, its parts (decode, each filter), vipsthumbnail on the same file, and
// the testbed's 0.5 KB–1.25 MB image range.
func BenchmarkAdapt(b *testing.B) {
	a := newTestAdapter(b, nil)
	src := mustJPEG(b, photo(2000, 1500, 1), 85)
	c := pda()
	c.ColorDepth = 24 // measure fit + encode, not the 12-bit reduction
	b.Run("photo-2000x1500-to-240x320", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		for b.Loop() {
			if _, err := a.Adapt(b.Context(), src, c); err != nil {
				b.Fatal(err)
			}
		}
		reportMsPerImage(b, 1)
	})
	b.Run("photo-2000x1500-to-pda-12bit", func(b *testing.B) {
		for b.Loop() {
			if _, err := a.Adapt(b.Context(), src, pda()); err != nil {
				b.Fatal(err)
			}
		}
		reportMsPerImage(b, 1)
	})
	b.Run("decode-only-2000x1500", func(b *testing.B) {
		for b.Loop() {
			if _, err := jpeg.Decode(bytes.NewReader(src)); err != nil {
				b.Fatal(err)
			}
		}
		reportMsPerImage(b, 1)
	})
	img, err := jpeg.Decode(bytes.NewReader(src))
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range []struct {
		name   string
		filter imaging.ResampleFilter
	}{{"box", imaging.Box}, {"linear", imaging.Linear}, {"catmullrom", imaging.CatmullRom}, {"lanczos", imaging.Lanczos}} {
		b.Run("resize-only-"+f.name, func(b *testing.B) {
			for b.Loop() {
				imaging.Resize(img, 240, 180, f.filter)
			}
			reportMsPerImage(b, 1)
		})
	}
	b.Run("vipsthumbnail-2000x1500-to-240x320", func(b *testing.B) {
		vips, err := exec.LookPath("vipsthumbnail")
		if err != nil {
			b.Skip("vipsthumbnail not installed (apt-get install libvips-tools)")
		}
		dir := b.TempDir()
		in := filepath.Join(dir, "in.jpg")
		if err := os.WriteFile(in, src, 0o600); err != nil {
			b.Fatal(err)
		}
		out := filepath.Join(dir, "out.jpg")
		for b.Loop() {
			if o, err := exec.Command(vips, in, "-s", "240x320", "-o", out).CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, o)
			}
		}
		reportMsPerImage(b, 1)
	})
	b.Run("legacy-range-0.5KB-1.25MB", func(b *testing.B) {
		set, err := legacy.GenerateImages(1, 20, 512, 1_250_000)
		if err != nil {
			b.Fatal(err)
		}
		imgs := set.Images()
		b.SetBytes(set.TotalBytes() / int64(len(imgs)))
		b.ResetTimer()
		for b.Loop() {
			for _, im := range imgs {
				if _, err := a.Adapt(b.Context(), im.Bytes, c); err != nil {
					b.Fatal(err)
				}
			}
		}
		reportMsPerImage(b, len(imgs))
	})
}
