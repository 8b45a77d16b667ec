package legacy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image/jpeg"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// The paper's band: 0.5 KB to 1.25 MB.
const (
	paperMin = 512
	paperMax = 1310720
)

func TestGenerateImages(t *testing.T) {
	const n = 20
	set, err := GenerateImages(1, n, paperMin, paperMax)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != n || len(set.Sizes()) != n || len(set.Images()) != n {
		t.Fatalf("got %d images, want %d", set.Len(), n)
	}
	sizes := set.Sizes()
	var total int64
	for i, img := range set.Images() {
		if want := fmt.Sprintf("img-%03d.jpg", i); img.Name != want {
			t.Errorf("image %d is called %q, want %q", i, img.Name, want)
		}
		size := len(img.Bytes)
		total += int64(size)
		if sizes[i] != size {
			t.Errorf("%s: Sizes()[%d] = %d, want %d", img.Name, i, sizes[i], size)
		}
		if size < paperMin || size > paperMax {
			t.Errorf("%s: %d bytes, outside [%d, %d]", img.Name, size, paperMin, paperMax)
		}
		m, err := jpeg.Decode(bytes.NewReader(img.Bytes))
		if err != nil {
			t.Errorf("%s: not a valid JPEG: %v", img.Name, err)
			continue
		}
		if b := m.Bounds(); b.Dx() != img.Width || b.Dy() != img.Height {
			t.Errorf("%s: decodes to %v, Width×Height says %dx%d", img.Name, b, img.Width, img.Height)
		}
		sum := sha256.Sum256(img.Bytes)
		if want := `"` + hex.EncodeToString(sum[:8]) + `"`; img.ETag != want {
			t.Errorf("%s: ETag %s, want %s", img.Name, img.ETag, want)
		}
		if img.ModTime.IsZero() || !img.ModTime.Equal(img.ModTime.Truncate(time.Second)) {
			t.Errorf("%s: ModTime %v is not a whole second", img.Name, img.ModTime)
		}
		if got, ok := set.Image(img.Name); !ok || got != img {
			t.Errorf("Image(%q) does not find it", img.Name)
		}
	}
	if total != set.TotalBytes() {
		t.Errorf("TotalBytes = %d, want %d", set.TotalBytes(), total)
	}
	if _, ok := set.Image("img-999.jpg"); ok {
		t.Error("Image finds a name that is not in the set")
	}
	// The targets run from one end of the band to the other, and each
	// size is within 15% of its target.
	if lo, hi := slices.Min(sizes), slices.Max(sizes); float64(lo) > paperMin*1.15 || float64(hi) < paperMax*0.85 {
		t.Errorf("sizes span [%d, %d], want the whole band", lo, hi)
	}
	again, err := GenerateImages(1, n, paperMin, paperMax)
	if err != nil || again != set {
		t.Errorf("second call: %p, %v; want the memoised %p", again, err, set)
	}
}

// Generation depends only on the arguments, not on parallelism.
func TestGenerateImagesDeterministic(t *testing.T) {
	const (
		n    = 8
		maxB = 200_000
	)
	prev := runtime.GOMAXPROCS(1)
	serial, err := generateImages(9, n, paperMin, maxB)
	runtime.GOMAXPROCS(prev)
	if err != nil {
		t.Fatal(err)
	}
	parallel, err := generateImages(9, n, paperMin, maxB)
	if err != nil {
		t.Fatal(err)
	}
	other, err := generateImages(10, n, paperMin, maxB)
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range serial.Images() {
		p := parallel.Images()[i]
		if img.Name != p.Name || !bytes.Equal(img.Bytes, p.Bytes) || img.ETag != p.ETag || !img.ModTime.Equal(p.ModTime) {
			t.Errorf("%s differs between runs with the same seed", img.Name)
		}
		if bytes.Equal(img.Bytes, other.Images()[i].Bytes) {
			t.Errorf("%s is the same for seeds 9 and 10", img.Name)
		}
	}
}

// A band too narrow for any pixel size is met by padding with a comment.
func TestGenerateImagesExactSize(t *testing.T) {
	for _, size := range []int{paperMin, 600, 3000} {
		set, err := generateImages(3, 4, size, size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		for _, img := range set.Images() {
			if len(img.Bytes) != size {
				t.Errorf("%s: %d bytes, want exactly %d", img.Name, len(img.Bytes), size)
			}
			if _, err := jpeg.Decode(bytes.NewReader(img.Bytes)); err != nil {
				t.Errorf("%s (%d bytes): %v", img.Name, size, err)
			}
		}
	}
}

func TestImageTargets(t *testing.T) {
	const n = 200
	targets := imageTargets(rand.New(rand.NewPCG(1, 2)), n, paperMin, paperMax)
	if lo, hi := slices.Min(targets), slices.Max(targets); lo != paperMin || hi != paperMax {
		t.Fatalf("targets span [%d, %d], want [%d, %d]", lo, hi, paperMin, paperMax)
	}
	if slices.IsSorted(targets) {
		t.Error("targets are not shuffled")
	}
	small := 0
	for _, tg := range targets {
		if tg < (paperMin+paperMax)/2 {
			small++
		}
	}
	// Skewed toward small sizes, but still spread.
	if small <= n/2 || small > 3*n/4 {
		t.Errorf("%d of %d targets in the lower half of the band", small, n)
	}
}

func TestGenerateImagesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n          int
		minB, maxB int
		wants      []string
	}{
		{name: "no images", n: 0, minB: paperMin, maxB: paperMax, wants: []string{"count"}},
		{name: "tiny", n: 1, minB: 100, maxB: paperMax, wants: []string{"minBytes"}},
		{name: "inverted", n: 1, minB: 5000, maxB: 4000, wants: []string{"maxBytes 4000 below"}},
		{name: "everything", n: -1, minB: 1, maxB: MaxImageBytes + 1, wants: []string{"count", "minBytes", "above"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := GenerateImages(1, tc.n, tc.minB, tc.maxB)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// BenchmarkGenerateImages200 measures generating the paper's workload of
// 200 images from 0.5 KB to 1.25 MB, without the memo.
func BenchmarkGenerateImages200(b *testing.B) {
	var seed uint64
	for b.Loop() {
		seed++
		set, err := generateImages(seed, 200, paperMin, paperMax)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(set.TotalBytes())/(1<<20), "MiB/set")
	}
}
