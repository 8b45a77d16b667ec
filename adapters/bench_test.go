package adapters

import (
	"bytes"
	"cmp"
	"fmt"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/disintegration/imaging"
	"github.com/imashproject/imash/adapters/internal/jpegscale"
	"github.com/imashproject/imash/profiles"
	"github.com/imashproject/imash/testbed/legacy"
)

func reportMsPerImage(b *testing.B, images int) {
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*images), "ms/image")
}

// BenchmarkAdapt times adapting a 2000x1500 photo-like JPEG to the 240x320
// PDA and its parts (decode at full and reduced scale, each filter). See
// BenchmarkAdaptVsVips for the comparison with libvips.
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
	b.Run("decode-only-2000x1500-image-jpeg", func(b *testing.B) {
		for b.Loop() {
			if _, err := jpeg.Decode(bytes.NewReader(src)); err != nil {
				b.Fatal(err)
			}
		}
		reportMsPerImage(b, 1)
	})
	for _, denom := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("decode-only-2000x1500-jpegscale-1:%d", denom), func(b *testing.B) {
			for b.Loop() {
				if _, err := jpegscale.DecodeScaled(bytes.NewReader(src), denom); err != nil {
					b.Fatal(err)
				}
			}
			reportMsPerImage(b, 1)
		})
	}
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

// vipsBatch is how many copies of an image one vipsthumbnail process
// converts when measuring its cost without process startup.
const vipsBatch = 9

// BenchmarkAdaptVsVips compares, per image, adapting to a 240x320 display
// (24-bit, JPEG quality 85) with libvips' vipsthumbnail doing the same
// (-s 240x320, Q=85), on a 2000x1500 photo-like JPEG and on the testbed's
// images from 0.5 KB to 1.25 MB. Every sub-benchmark reports the median
// time per image as p50-ms:
//
//   - go-full: the pipeline with image/jpeg decoding at full size, as
//     before scaled decoding (the "before").
//   - go-scaled: the default codecs, decoding JPEG at 1/2, 1/4 or 1/8
//     when the output allows (the "after").
//   - vips-exec: one vipsthumbnail process per image, wall time; mostly
//     process startup and library initialisation for small images.
//   - vips-work: the cost of one more image inside a running process,
//     (T(9 copies) - T(1 copy)) / 8 with both processes timed back to
//     back, so startup, initialisation and the exec cancel out. The vips
//     sub-benchmarks also time go-scaled interleaved with them and report
//     ours/vips, the ratio of the two medians.
//
// vipsthumbnail runs with VIPS_CONCURRENCY=1 (one worker thread), since
// an Adapt call uses one core and the Pool parallelizes across images;
// the copies of an image are distinct files, read from the page cache.
// The vips sub-benchmarks are skipped when vipsthumbnail is not installed
// (Debian: apt-get install libvips-tools). Suggested invocation:
//
//	go test -run '^$' -bench AdaptVsVips -benchtime 3s ./adapters/
func BenchmarkAdaptVsVips(b *testing.B) {
	scaled := newTestAdapter(b, nil)
	full, err := New(NewDefaultConfig(), nil, fullDecodeCodecs())
	if err != nil {
		b.Fatal(err)
	}
	c := profiles.Constraints{MaxWidth: 240, MaxHeight: 320, Formats: []string{MediaJPEG}}

	type sample struct {
		name string
		data []byte
	}
	samples := []sample{{"photo-2000x1500", mustJPEG(b, photo(2000, 1500, 1), 85)}}
	set, err := legacy.GenerateImages(1, 8, 512, 1_250_000)
	if err != nil {
		b.Fatal(err)
	}
	var legacySamples []sample
	for _, im := range set.Images() {
		attrs, _, _, err := scaled.Characterize(im.Bytes)
		if err != nil {
			b.Fatal(err)
		}
		legacySamples = append(legacySamples, sample{
			fmt.Sprintf("legacy-%07dB-%dx%d", len(im.Bytes), attrs.Width, attrs.Height), im.Bytes,
		})
	}
	slices.SortFunc(legacySamples, func(x, y sample) int { return cmp.Compare(len(x.data), len(y.data)) })
	samples = append(samples, legacySamples...)

	vips, vipsErr := exec.LookPath("vipsthumbnail")
	for _, s := range samples {
		adapt := func(a *Adapter) func() error {
			return func() error {
				_, err := a.Adapt(b.Context(), s.data, c)
				return err
			}
		}
		b.Run(s.name+"/go-full", func(b *testing.B) {
			reportP50(b, "p50-ms", timeLoop(b, adapt(full)))
		})
		b.Run(s.name+"/go-scaled", func(b *testing.B) {
			reportP50(b, "p50-ms", timeLoop(b, adapt(scaled)))
		})
		b.Run(s.name+"/vips-exec", func(b *testing.B) {
			if vipsErr != nil {
				b.Skip("vipsthumbnail not installed (Debian: apt-get install libvips-tools)")
			}
			in := writeCopies(b, s.data, 1)
			var ours, theirs []time.Duration
			for b.Loop() {
				ours = append(ours, timeOnce(b, adapt(scaled)))
				theirs = append(theirs, timeOnce(b, func() error { return runVips(vips, in) }))
			}
			reportRatio(b, ours, theirs)
		})
		b.Run(s.name+"/vips-work", func(b *testing.B) {
			if vipsErr != nil {
				b.Skip("vipsthumbnail not installed (Debian: apt-get install libvips-tools)")
			}
			all := writeCopies(b, s.data, vipsBatch)
			var ours, theirs []time.Duration
			for b.Loop() {
				ours = append(ours, timeOnce(b, adapt(scaled)))
				one := timeOnce(b, func() error { return runVips(vips, all[:1]) })
				many := timeOnce(b, func() error { return runVips(vips, all) })
				theirs = append(theirs, (many-one)/(vipsBatch-1))
			}
			reportRatio(b, ours, theirs)
		})
	}
}

func timeOnce(b *testing.B, f func() error) time.Duration {
	t0 := time.Now()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

func timeLoop(b *testing.B, f func() error) []time.Duration {
	var ds []time.Duration
	for b.Loop() {
		ds = append(ds, timeOnce(b, f))
	}
	return ds
}

func p50(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

func reportP50(b *testing.B, unit string, ds []time.Duration) {
	b.ReportMetric(p50(ds), unit)
}

// reportRatio reports the medians of ours and theirs and ours/theirs.
func reportRatio(b *testing.B, ours, theirs []time.Duration) {
	o, t := p50(ours), p50(theirs)
	b.ReportMetric(t, "p50-ms")
	b.ReportMetric(o, "go-scaled-p50-ms")
	if t > 0 {
		b.ReportMetric(o/t, "ours/vips")
	}
}

// writeCopies writes n copies of data to distinct files in a temporary
// directory.
func writeCopies(b *testing.B, data []byte, n int) []string {
	dir := b.TempDir()
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("in%02d.jpg", i))
		if err := os.WriteFile(paths[i], data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return paths
}

// runVips thumbnails every input to fit 240x320 at JPEG quality 85, the
// adapter's default, writing tn_<name>.jpg next to each input.
func runVips(vips string, inputs []string) error {
	args := append(slices.Clone(inputs), "-s", "240x320", "-o", "tn_%s.jpg[Q=85]")
	cmd := exec.Command(vips, args...)
	cmd.Env = append(os.Environ(), "VIPS_CONCURRENCY=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", vips, err, out)
	}
	return nil
}
