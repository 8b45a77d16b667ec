package legacy

import (
	"bytes"
	"errors"
	"fmt"
	"image/jpeg"
	"math"
)

// imageQuality is the fixed JPEG quality; sizes are reached by choosing the
// pixel dimensions, which keeps every image's look comparable.
const imageQuality = 95

// grayBelow is the target size under which images are greyscale: a colour
// baseline JPEG carries about 600 bytes of tables, too many for 0.5 KB.
const grayBelow = 1024

// maxFitSteps bounds the encodes spent searching for one image's size.
const maxFitSteps = 24

var errCannotFit = errors.New("no pixel size gives an encoding in the size band")

type encoded struct {
	data []byte
	w, h int
}

// fitScene finds pixel dimensions at which sc encodes to between lo and hi
// bytes (inclusive), aiming at target.
//
// Size is modelled as overhead + k·pixels: the overhead is measured on a
// 1×1 rendering and k is re-estimated from every encode. For large targets
// a probe at 1/16 of the predicted area estimates k cheaply first, so most
// images need a single full-size encode. The pixel counts known to be too
// small and too large bracket the search, which bisects whenever the model
// predicts outside the bracket; that also settles small images, whose size
// moves in steps of whole 8×8 blocks.
//
// If no dimensions fit and pad is set, the largest encoding found below lo
// is padded up to lo with a JPEG comment segment (see padJPEG).
func fitScene(sc *scene, target, lo, hi int, pad bool) (encoded, error) {
	encode := func(pixels float64) (encoded, error) {
		w, h := sc.dims(pixels)
		var buf bytes.Buffer
		buf.Grow(hi + 4096)
		if err := jpeg.Encode(&buf, sc.render(w, h), &jpeg.Options{Quality: imageQuality}); err != nil {
			return encoded{}, fmt.Errorf("encoding %dx%d: %w", w, h, err)
		}
		return encoded{buf.Bytes(), w, h}, nil
	}
	tiny, err := encode(1)
	if err != nil {
		return encoded{}, err
	}
	overhead := float64(len(tiny.data))
	if len(tiny.data) > hi {
		return encoded{}, fmt.Errorf("%w: a 1x1 image takes %d bytes, more than %d", errCannotFit, len(tiny.data), hi)
	}
	if len(tiny.data) >= lo {
		return tiny, nil
	}
	under := tiny // the largest encoding padJPEG can bring into the band
	k := 1.0      // bytes per pixel; refined by every encode
	need := float64(target) - overhead
	if p := need / k; p > 1<<16 {
		probe, err := encode(p / 16)
		if err != nil {
			return encoded{}, err
		}
		k = (float64(len(probe.data)) - overhead) / float64(probe.w*probe.h)
	}
	small, large := 1.0, math.Inf(1) // pixel counts known to be too small / too large
	for range maxFitSteps {
		p := need / k
		if !(p > small && p < large) {
			if math.IsInf(large, 1) {
				p = small * 2
			} else {
				p = (small + large) / 2
			}
		}
		e, err := encode(p)
		if err != nil {
			return encoded{}, err
		}
		size, pixels := len(e.data), float64(e.w*e.h)
		switch {
		case size < lo:
			small = max(small, pixels)
			if size > len(under.data) && size+max(lo-size, 4) <= hi {
				under = e
			}
		case size > hi:
			large = min(large, pixels)
		default:
			return e, nil
		}
		if float64(size) > overhead {
			k = (float64(size) - overhead) / pixels
		}
		if large-small < 1 {
			break
		}
	}
	if pad {
		if padded, ok := padJPEG(under.data, lo, hi); ok {
			return encoded{padded, under.w, under.h}, nil
		}
	}
	return encoded{}, fmt.Errorf("%w [%d, %d] after %d encodes", errCannotFit, lo, hi, maxFitSteps)
}

// padJPEG returns data grown to lo bytes (or by the 4-byte minimum, if that
// stays within hi) by a comment (COM) segment right after the SOI marker,
// which decoders skip. It reports false if no padding fits in [lo, hi] or
// one segment cannot hold it.
func padJPEG(data []byte, lo, hi int) ([]byte, bool) {
	n := max(lo-len(data), 4) // marker (2) + length field (2) + comment
	if len(data)+n > hi || n-2 > 0xffff || len(data) < 2 {
		return nil, false
	}
	out := make([]byte, 0, len(data)+n)
	out = append(out, data[:2]...)
	out = append(out, 0xff, 0xfe, byte((n-2)>>8), byte(n-2))
	out = append(out, bytes.Repeat([]byte{' '}, n-4)...)
	return append(out, data[2:]...), true
}
