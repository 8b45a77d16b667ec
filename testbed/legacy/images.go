package legacy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on GenerateImages arguments. The lower limit is set by the fixed
// overhead of a baseline JPEG (headers and Huffman tables, about 380 bytes
// for greyscale), below which no size can be targeted.
const (
	MinImageBytes = 512
	MaxImageBytes = 32 << 20
	maxImages     = 100_000
)

// sizeTolerance is how far an encoded image may miss its target size.
const sizeTolerance = 0.15

// fitRetries is how many times an image that does not fit is retried with
// halved noise; the last retry may pad.
const fitRetries = 4

// smallSkew (> 1) skews target sizes toward the small end, as in the paper's
// workload: evenly spread with a heavier tail of small images.
const smallSkew = 1.3

// Image is one generated JPEG. Images are shared between all callers of
// GenerateImages with the same arguments and must not be modified.
type Image struct {
	// Name is the file name, e.g. "img-042.jpg"; unique within its set.
	Name string
	// Bytes is the baseline JPEG encoding.
	Bytes []byte
	// Width and Height are the pixel dimensions.
	Width, Height int
	// ETag is a strong entity tag: the quoted first 16 hex digits of the
	// SHA-256 of Bytes.
	ETag string
	// ModTime is a fixed, whole-second modification time derived from the
	// set's seed and the image's index.
	ModTime time.Time
}

// ImageSet is an immutable, seeded set of JPEG images for the minibrowser
// workload. It is safe for concurrent use.
type ImageSet struct {
	seed   uint64
	images []*Image
	byName map[string]*Image
}

// Seed returns the seed the set was generated from.
func (s *ImageSet) Seed() uint64 { return s.seed }

// Len returns the number of images.
func (s *ImageSet) Len() int { return len(s.images) }

// Images returns the images in name order. The slice is a copy; the images
// are shared and must not be modified.
func (s *ImageSet) Images() []*Image { return append([]*Image(nil), s.images...) }

// Image returns the image called name, if any.
func (s *ImageSet) Image(name string) (*Image, bool) {
	img, ok := s.byName[name]
	return img, ok
}

// Sizes returns the encoded size in bytes of each image, in name order.
func (s *ImageSet) Sizes() []int {
	sizes := make([]int, len(s.images))
	for i, img := range s.images {
		sizes[i] = len(img.Bytes)
	}
	return sizes
}

// TotalBytes returns the sum of all encoded sizes.
func (s *ImageSet) TotalBytes() int64 {
	var n int64
	for _, img := range s.images {
		n += int64(len(img.Bytes))
	}
	return n
}

// GenerateImages returns n synthetic photographs (gradients, soft
// low-frequency structure, shapes and sensor noise) encoded as baseline JPEG
// at a fixed quality, whose sizes are spread over [minBytes, maxBytes]: the
// targets run from minBytes to maxBytes, skewed toward small sizes, and each
// encoded size is within 15% of its target and always within the band.
// Sizes are assigned to names in a seeded shuffled order. Targets under
// 1 KiB are rendered in greyscale, because a colour JPEG's fixed overhead
// alone is about 600 bytes.
//
// The result depends only on the arguments, not on GOMAXPROCS or timing.
// Generation is CPU-bound (JPEG encoding) and runs in parallel over
// GOMAXPROCS: the paper's 200 images of 0.5 KB–1.25 MB (about 105 MiB) take
// about 5 s on two cores, roughly ten times that under the race detector,
// so tests should use a few small images. Results are memoised for the life
// of the process, so later calls with the same arguments return the same
// *ImageSet at once; concurrent first calls share one generation.
//
// Arguments out of range give an error wrapping ErrInvalidConfig: n must be
// 1..100000, minBytes at least MinImageBytes, maxBytes at least minBytes
// and at most MaxImageBytes. A band narrower than the steps between
// possible encoded sizes (only plausible at a few hundred bytes wide) is
// met by padding the JPEG with a comment segment; if even that fails (a
// band under 4 bytes wide) the error names the image.
func GenerateImages(seed uint64, n int, minBytes, maxBytes int) (*ImageSet, error) {
	if err := validateImageArgs(n, minBytes, maxBytes); err != nil {
		return nil, err
	}
	key := imageKey{seed, n, minBytes, maxBytes}
	imageCache.mu.Lock()
	if imageCache.m == nil {
		imageCache.m = make(map[imageKey]*imageEntry)
	}
	e, ok := imageCache.m[key]
	if !ok {
		e = &imageEntry{}
		imageCache.m[key] = e
	}
	imageCache.mu.Unlock()
	e.once.Do(func() { e.set, e.err = generateImages(seed, n, minBytes, maxBytes) })
	return e.set, e.err
}

type imageKey struct {
	seed          uint64
	n, minB, maxB int
}

type imageEntry struct {
	once sync.Once
	set  *ImageSet
	err  error
}

var imageCache struct {
	mu sync.Mutex
	m  map[imageKey]*imageEntry
}

func validateImageArgs(n, minBytes, maxBytes int) error {
	var errs []error
	if n < 1 || n > maxImages {
		errs = append(errs, fmt.Errorf("%w: image count %d not in 1..%d", ErrInvalidConfig, n, maxImages))
	}
	if minBytes < MinImageBytes {
		errs = append(errs, fmt.Errorf("%w: minBytes %d below %d", ErrInvalidConfig, minBytes, MinImageBytes))
	}
	if maxBytes < minBytes {
		errs = append(errs, fmt.Errorf("%w: maxBytes %d below minBytes %d", ErrInvalidConfig, maxBytes, minBytes))
	}
	if maxBytes > MaxImageBytes {
		errs = append(errs, fmt.Errorf("%w: maxBytes %d above %d", ErrInvalidConfig, maxBytes, MaxImageBytes))
	}
	return errors.Join(errs...)
}

// imageTargets returns the target size of each image index: evenly spaced
// quantiles skewed by smallSkew, shuffled by rng.
func imageTargets(rng *rand.Rand, n, minBytes, maxBytes int) []int {
	targets := make([]int, n)
	for i := range targets {
		u := 0.5
		if n > 1 {
			u = float64(i) / float64(n-1)
		}
		targets[i] = minBytes + int(math.Round(float64(maxBytes-minBytes)*math.Pow(u, smallSkew)))
	}
	rng.Shuffle(n, func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	return targets
}

// generateImages does the work of GenerateImages without the cache.
func generateImages(seed uint64, n, minBytes, maxBytes int) (*ImageSet, error) {
	rng := rand.New(rand.NewPCG(seed, 0x696d6173682f696d)) // "imash/im"
	targets := imageTargets(rng, n, minBytes, maxBytes)
	base := time.Date(2005, 1, 1, 0, 0, 0, 0, time.UTC).
		Add(time.Duration(seed%(5*365*24*3600)) * time.Second)
	width := max(3, len(strconv.Itoa(n-1)))

	// Hand out the largest images first so the workers finish together.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(targets[b], targets[a]) })

	images := make([]*Image, n)
	errs := make([]error, n)
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range min(n, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for !failed.Load() {
				k := int(next.Add(1)) - 1
				if k >= n {
					return
				}
				i := order[k]
				img, err := makeImage(seed, i, targets[i], minBytes, maxBytes)
				if err != nil {
					errs[i] = fmt.Errorf("legacy: image %d (target %d bytes): %w", i, targets[i], err)
					failed.Store(true)
					return
				}
				img.Name = fmt.Sprintf("img-%0*d.jpg", width, i)
				img.ModTime = base.Add(time.Duration(i) * time.Minute)
				images[i] = img
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	set := &ImageSet{seed: seed, images: images, byName: make(map[string]*Image, n)}
	for _, img := range images {
		set.byName[img.Name] = img
	}
	return set, nil
}

// makeImage renders and encodes image i of a set so that its size is within
// sizeTolerance of target and within [minBytes, maxBytes].
func makeImage(seed uint64, i, target, minBytes, maxBytes int) (*Image, error) {
	rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
	sc := newScene(rng, target < grayBelow)
	lo := max(minBytes, int(math.Ceil(float64(target)*(1-sizeTolerance))))
	hi := min(maxBytes, int(float64(target)*(1+sizeTolerance)))
	f, err := fitScene(sc, target, lo, hi, false)
	// Small images grow in steps of whole 8×8 blocks, and noisy blocks
	// are expensive, so a narrow band can fall between two steps: calm
	// the noise, which makes the steps finer, and as a last resort pad.
	for retry := 1; errors.Is(err, errCannotFit) && retry <= fitRetries; retry++ {
		sc.noiseY /= 2
		sc.noiseC /= 2
		f, err = fitScene(sc, target, lo, hi, retry == fitRetries)
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(f.data)
	return &Image{
		Bytes:  f.data,
		Width:  f.w,
		Height: f.h,
		ETag:   `"` + hex.EncodeToString(sum[:8]) + `"`,
	}, nil
}
