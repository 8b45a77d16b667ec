package adapters

import (
	"bytes"
	"fmt"
	"image"
	"math"

	"github.com/disintegration/imaging"
)

// stepFor returns the Step executing cmd.
func stepFor(cmd Command) (Step, error) {
	switch cmd.Name {
	case CmdDecode:
		return decodeStep(cmd), nil
	case CmdConvert:
		return convertStep(cmd), nil
	case CmdResize:
		return resizeStep(cmd), nil
	case CmdRecolor:
		return recolorStep(cmd), nil
	case CmdEncode:
		return encodeStep(cmd), nil
	case CmdReencode:
		return reencodeStep(cmd), nil
	case CmdGeometry:
		return geometryStep(cmd), nil
	}
	return nil, fmt.Errorf("%w: no step for command %q", ErrUnsupported, cmd.Name)
}

// decodeStep decodes Src with the codec of its characterized format. The
// characterizer has already checked the pixel limit. When cmd carries a
// resize target at most half the source size and the codec can decode
// scaled, it decodes at the largest denominator that still yields at
// least the target size (shown as "decode(1/8)"); the resize step
// finishes the job.
func decodeStep(cmd Command) Step {
	return func(pc *Context) error {
		k := pc.codecs[pc.Attrs.Format]
		if k == nil {
			return &UnsupportedError{Format: pc.Attrs.Format, Reason: "no decoder"}
		}
		denom := 1
		if k.DecodeScaled != nil {
			denom = scaleDenom(pc.Attrs.Width, pc.Attrs.Height, cmd.Width, cmd.Height)
		}
		var (
			img image.Image
			err error
		)
		if denom > 1 {
			img, err = k.DecodeScaled(bytes.NewReader(pc.Src), denom)
		} else {
			img, err = k.Decode(bytes.NewReader(pc.Src))
		}
		if err != nil {
			return &DecodeError{Format: pc.Attrs.Format, Err: err}
		}
		pc.Image, pc.Codec = img, k
		if denom > 1 {
			pc.Applied = append(pc.Applied, fmt.Sprintf("%s(1/%d)", CmdDecode, denom))
		} else {
			pc.Applied = append(pc.Applied, CmdDecode)
		}
		return nil
	}
}

// scaleDenom returns the largest of 8, 4 and 2 that reduces a w x h source
// (each side rounded up) to no less than tw x th, or 1 when the target is
// unset or more than half the source in either dimension.
func scaleDenom(w, h, tw, th int) int {
	if tw <= 0 || th <= 0 || 2*tw > w || 2*th > h {
		return 1
	}
	for _, d := range []int{8, 4, 2} {
		if (w+d-1)/d >= tw && (h+d-1)/d >= th {
			return d
		}
	}
	return 1
}

func convertStep(cmd Command) Step {
	return func(pc *Context) error {
		k := pc.codecs[cmd.Format]
		if k == nil {
			return &UnsupportedError{Format: cmd.Format, Reason: "no encoder"}
		}
		pc.Codec = k
		pc.Applied = append(pc.Applied, cmd.String())
		return nil
	}
}

// resizeFilter picks the resampling filter: for reductions of 2x or more a
// box filter (area average) is as good to the eye as Lanczos on photos and
// several times faster; for small reductions a linear filter.
func resizeFilter(srcW, dstW int) imaging.ResampleFilter {
	if srcW >= 2*dstW {
		return imaging.Box
	}
	return imaging.Linear
}

// resize resamples img to w x h for encoding with k. The planar images
// JPEG decodes to are resampled plane by plane and stay planar (with
// 4:2:0 chroma when k's encoder keeps no more; full chroma otherwise); other images become *image.NRGBA.
func resize(img image.Image, w, h int, k *Codec) image.Image {
	if b := img.Bounds(); !b.Empty() {
		switch m := img.(type) {
		case *image.YCbCr:
			return resizeYCbCr(m, w, h, k == nil || !k.Chroma420)
		case *image.Gray:
			return resizeGray(m, w, h)
		}
	}
	return imaging.Resize(img, w, h, resizeFilter(img.Bounds().Dx(), w))
}

func resizeStep(cmd Command) Step {
	return func(pc *Context) error {
		pc.Image = resize(pc.Image, cmd.Width, cmd.Height, pc.Codec)
		pc.Applied = append(pc.Applied, cmd.String())
		return nil
	}
}

func recolorStep(cmd Command) Step {
	return func(pc *Context) error {
		pc.Image = recolor(pc.Image, cmd.Bits, cmd.Gray)
		pc.Applied = append(pc.Applied, cmd.String())
		return nil
	}
}

// quantTable maps an 8-bit value to the nearest of 2^bits evenly spaced
// levels, expanded back to 0–255 (so 4 bits gives 0, 17, 34 … 255).
func quantTable(bits int) *[256]uint8 {
	var t [256]uint8
	bits = min(max(bits, 1), 8)
	levels := (1 << bits) - 1
	for v := range 256 {
		q := (v*levels + 127) / 255
		t[v] = uint8((q*255 + levels/2) / levels)
	}
	return &t
}

// recolor reduces img to bits per channel, or to grayscale with 2^bits
// levels. An opaque grayscale result is an *image.Gray, which JPEG encodes
// as one component (a third of the data).
func recolor(img image.Image, bits int, gray bool) image.Image {
	src := asNRGBA(img)
	t := quantTable(bits)
	b := src.Rect
	if gray && src.Opaque() {
		dst := image.NewGray(b)
		for y := 0; y < b.Dy(); y++ {
			s := src.Pix[y*src.Stride : y*src.Stride+4*b.Dx()]
			d := dst.Pix[y*dst.Stride : y*dst.Stride+b.Dx()]
			for x := range d {
				r, g, bl := uint32(s[4*x]), uint32(s[4*x+1]), uint32(s[4*x+2])
				d[x] = t[(19595*r+38470*g+7471*bl+1<<15)>>16]
			}
		}
		return dst
	}
	dst := image.NewNRGBA(b)
	for y := 0; y < b.Dy(); y++ {
		s := src.Pix[y*src.Stride : y*src.Stride+4*b.Dx()]
		d := dst.Pix[y*dst.Stride : y*dst.Stride+4*b.Dx()]
		for x := 0; x < len(d); x += 4 {
			r, g, bl := s[x], s[x+1], s[x+2]
			if gray {
				l := uint8((19595*uint32(r) + 38470*uint32(g) + 7471*uint32(bl) + 1<<15) >> 16)
				r, g, bl = l, l, l
			}
			d[x], d[x+1], d[x+2], d[x+3] = t[r], t[g], t[bl], s[x+3]
		}
	}
	return dst
}

// asNRGBA returns img as an NRGBA with origin (0,0), copying only when it
// is not one already.
func asNRGBA(img image.Image) *image.NRGBA {
	if n, ok := img.(*image.NRGBA); ok && n.Rect.Min == (image.Point{}) {
		return n
	}
	return imaging.Clone(img)
}

func encodeStep(cmd Command) Step {
	return func(pc *Context) error {
		data, err := encode(pc.Codec, pc.Image, cmd.Quality)
		if err != nil {
			return fmt.Errorf("adapters: encode %s: %w", pc.Codec.MediaType, err)
		}
		pc.Data, pc.Quality = data, qualityOf(pc.Codec, cmd.Quality)
		pc.BudgetMet = pc.Constraints.ByteBudget <= 0 || int64(len(data)) <= pc.Constraints.ByteBudget
		pc.Applied = append(pc.Applied, cmd.String())
		return nil
	}
}

func qualityOf(k *Codec, q int) int {
	if k.SupportsQuality {
		return q
	}
	return 0
}

// reencodeStep encodes to the byte budget. With a quality-capable codec it
// tries DefaultQuality, then searches below it for the highest quality
// that fits (see fitQuality; typically two or three more encodes). When even
// the lowest quality misses (or the codec has no quality) and "resize" is
// allowed, the image is shrunk by the square root of the size ratio and
// the search repeats, up to MaxShrinks times. Otherwise the smallest
// encoding is kept as best effort with BudgetMet false.
func reencodeStep(cmd Command) Step {
	return func(pc *Context) error {
		budget := cmd.Budget
		k := pc.Codec
		var (
			best     []byte
			bestQ    int
			prepared Prepared
		)
		encodeAt := func(q int) ([]byte, error) {
			// The first try encodes at once: it often fits, and
			// preparing costs more than one encode. The tries after it
			// share one preparation.
			if best == nil || k.Prepare == nil {
				return encode(k, pc.Image, q)
			}
			if prepared == nil {
				p, err := prepare(k, pc.Image)
				if err != nil {
					return nil, err
				}
				prepared = p
			}
			return prepared.Encode(q), nil
		}
		try := func(q int) ([]byte, error) {
			data, err := encodeAt(q)
			if err != nil {
				return nil, fmt.Errorf("adapters: encode %s: %w", k.MediaType, err)
			}
			if best == nil || len(data) < len(best) {
				best, bestQ = data, q
			}
			return data, nil
		}
		for shrink := 0; ; shrink++ {
			data, q, err := fitQuality(k, pc.Config, cmd.Quality, budget, try)
			if err != nil {
				return err
			}
			if data != nil {
				pc.Data, pc.Quality, pc.BudgetMet = data, qualityOf(k, q), true
				pc.Applied = append(pc.Applied, fmt.Sprintf("%s,q=%d", cmd.String(), q))
				return nil
			}
			b := pc.Image.Bounds()
			if shrink >= pc.Config.MaxShrinks || !pc.Constraints.Allows(CmdResize) || b.Dx() <= 1 && b.Dy() <= 1 {
				break
			}
			// Encoded size grows roughly with pixel count.
			f := min(0.9, max(0.25, 0.9*math.Sqrt(float64(budget)/float64(len(best)))))
			w, h := max(1, int(float64(b.Dx())*f)), max(1, int(float64(b.Dy())*f))
			pc.Image = resize(pc.Image, w, h, k)
			best, prepared = nil, nil
			pc.Applied = append(pc.Applied, fmt.Sprintf("shrink(%dx%d)", w, h))
		}
		pc.Data, pc.Quality, pc.BudgetMet = best, qualityOf(k, bestQ), false
		pc.Applied = append(pc.Applied, fmt.Sprintf("%s,q=%d,best-effort", cmd.String(), bestQ))
		return nil
	}
}

// fitQuality returns the highest-quality encoding within budget, or nil
// data when none fits. After start, it searches [MinQuality, start) for
// the highest quality that fits, assuming (as any search short of trying
// every quality must) that the size grows with the quality. Each guess is
// where the budget falls on a line in sizeModel's coordinates: through the
// nearest sizes known to fit and to miss, or, while none is known to fit,
// through the two lowest misses (the first guess uses a typical slope).
// When the same end of the interval moves twice in a row, the other end's
// distance to the budget is halved (the Illinois variant of regula falsi),
// so that a curved size line cannot hold the search to one side; three
// guesses in a row that fail to halve the interval are followed by a
// bisection, and after maxGuesses guesses the search bisects. The answer
// is found when a quality fits and the next one up does not: 4 encodes on
// average on the test images' outputs and at most 14 for any sizes, where
// a binary search takes 8 or 9.
func fitQuality(k *Codec, cfg Config, start int, budget int64, try func(int) ([]byte, error)) ([]byte, int, error) {
	fits := func(d []byte) bool { return int64(len(d)) <= budget }
	data, err := try(start)
	if err != nil || fits(data) || !k.SupportsQuality {
		if err == nil && !fits(data) {
			data = nil
		}
		return data, start, err
	}
	_, yb := sizeModel(start, int(min(budget, math.MaxInt32)))
	// lo fits (0: none known) and hi does not; prev is the miss before
	// hi. Their sizes are kept in sizeModel's coordinates.
	lo, hi := 0, start
	var (
		loData            []byte
		xLo, yLo          float64
		xPrev, yPrev      float64
		havePrev          bool
		lastFit, lastMiss bool
		poor              int
		bisect            bool
	)
	xHi, yHi := sizeModel(start, len(data))
	for guesses := 0; ; guesses++ {
		low := max(lo+1, cfg.MinQuality)
		if low >= hi {
			break
		}
		var q int
		switch {
		case bisect || guesses >= maxGuesses:
			q = (low + hi) / 2
		case lo != 0:
			q = qualityAt(xHi, yHi, xLo, yLo, yb)
		case havePrev:
			q = qualityAt(xHi, yHi, xPrev, yPrev, yb)
		default:
			q = qualityAt(xHi, yHi, xHi+1, yHi+typicalSizeSlope, yb)
		}
		q = min(max(q, low), hi-1)
		width := hi - low
		d, err := try(q)
		if err != nil {
			return nil, 0, err
		}
		x, y := sizeModel(q, len(d))
		if fits(d) {
			if lastFit {
				yHi = yb + (yHi-yb)/2
			}
			lo, loData, xLo, yLo = q, d, x, y
			lastFit, lastMiss = true, false
		} else {
			if lastMiss && lo != 0 {
				yLo = yb + (yLo-yb)/2
			}
			xPrev, yPrev, havePrev = xHi, yHi, true
			hi, xHi, yHi = q, x, y
			lastFit, lastMiss = false, true
		}
		switch {
		case bisect:
			bisect, poor = false, 0
		case lo != 0 && 2*(hi-max(lo+1, cfg.MinQuality)) > width:
			poor++
			bisect = poor == 3
		default:
			poor = 0
		}
	}
	if lo == 0 {
		return nil, 0, nil
	}
	return loData, lo, nil
}

// maxGuesses is how many guesses fitQuality makes before it only bisects.
const maxGuesses = 6

// jpegHeaderBytes is about the size of image/jpeg's headers and tables,
// which do not depend on the image.
const jpegHeaderBytes = 600

// sizeModel maps a JPEG quality and an encoded size to coordinates in
// which size against quality is close to a straight line for photographs:
// the logarithm of image/jpeg's quantization scale (the percentage its
// tables are scaled by) and the logarithm of the size less the headers.
func sizeModel(q, size int) (x, y float64) {
	scale := 200 - 2*float64(q)
	if q < 50 {
		scale = 5000 / float64(q)
	}
	return math.Log(max(scale, 1)), math.Log(max(float64(size)-jpegHeaderBytes, 1))
}

// typicalSizeSlope is dy/dx in sizeModel's coordinates, typical of
// photographs between qualities 85 and 50; it is used while only one size
// is known, or when two give no usable slope.
const typicalSizeSlope = -0.7

// qualityAt returns the quality (rounded down) at which the line through
// (x1, y1) and (x2, y2) in sizeModel's coordinates reaches y = yb. The
// result may lie outside 1..100; the caller clamps it.
func qualityAt(x1, y1, x2, y2, yb float64) int {
	slope := typicalSizeSlope
	if x2 != x1 && y2 != y1 {
		slope = (y2 - y1) / (x2 - x1)
	}
	if slope >= 0 {
		slope = typicalSizeSlope
	}
	scale := math.Exp(x1 + (yb-y1)/slope)
	if scale > 100 {
		return int(math.Floor(5000 / scale))
	}
	return int(math.Floor((200 - scale) / 2))
}

func geometryStep(cmd Command) Step {
	return func(pc *Context) error {
		doc, err := ParseGeometry(pc.Src, pc.Config.MaxWindows)
		if err != nil {
			return err
		}
		doc.Fit(cmd.Width, cmd.Height)
		data, err := doc.Marshal()
		if err != nil {
			return fmt.Errorf("adapters: marshal geometry: %w", err)
		}
		pc.Geometry, pc.Data, pc.BudgetMet = doc, data, true
		if b := pc.Constraints.ByteBudget; b > 0 {
			pc.BudgetMet = int64(len(data)) <= b
		}
		pc.Applied = append(pc.Applied, cmd.String())
		return nil
	}
}
