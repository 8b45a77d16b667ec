package adapters

import (
	"image"
	"math"
	"sync"

	"github.com/disintegration/imaging"
)

// Planar resampling of the images JPEG decodes to (*image.YCbCr and
// *image.Gray), without converting to RGB: each plane is filtered on its
// own, in fixed point, on the caller's goroutine. The filters and the
// placement of their taps are imaging's (see resizeFilter); only the
// arithmetic differs (14-bit integer weights instead of float64).

// weightBits is the fixed-point precision of the resampling weights.
const weightBits = 14

// kernelWeights resample one dimension from src to dst samples: output i
// is the sum over k < taps of w[i*taps+k] * in[start[i]+k], the weights
// summing to 1<<weightBits.
type kernelWeights struct {
	taps  int
	start []int
	w     []int32
}

// makeWeights computes the weights imaging.Resize uses (see its
// precomputeWeights), rounded to weightBits bits so that each output's
// weights sum to exactly 1<<weightBits, with zero weights at either end
// dropped.
func makeWeights(dst, src int, filter imaging.ResampleFilter) kernelWeights {
	du := float64(src) / float64(dst)
	scale := max(du, 1)
	ru := math.Ceil(scale * filter.Support)
	// Every output's span of non-zero weights, in one buffer: output v has
	// the weights fw[v*maxTaps:][:n[v]] starting at source begin[v].
	maxTaps := int(2*ru) + 1
	fw := make([]float64, dst*maxTaps)
	begins := make([]int, dst)
	ns := make([]int, dst)
	taps := 1
	for v := range dst {
		fu := (float64(v)+0.5)*du - 0.5
		begin := max(0, int(math.Ceil(fu-ru)))
		end := min(src-1, int(math.Floor(fu+ru)), begin+maxTaps-1)
		ws := fw[v*maxTaps : v*maxTaps : (v+1)*maxTaps]
		for u := begin; u <= end; u++ {
			w := filter.Kernel((float64(u) - fu) / scale)
			if w == 0 && len(ws) == 0 {
				begin++
				continue
			}
			ws = append(ws, w)
		}
		for len(ws) > 0 && ws[len(ws)-1] == 0 {
			ws = ws[:len(ws)-1]
		}
		if len(ws) == 0 {
			// No weight at all: the nearest source sample.
			ws, begin = append(ws, 1), min(max(int(math.Round(fu)), 0), src-1)
		}
		begins[v], ns[v] = begin, len(ws)
		taps = max(taps, len(ws))
	}
	kw := kernelWeights{taps: taps, start: make([]int, dst), w: make([]int32, dst*taps)}
	for v := range dst {
		ws := fw[v*maxTaps : v*maxTaps+ns[v]]
		sum := 0.0
		for _, w := range ws {
			sum += w
		}
		// A span shorter than taps is moved left (its weights padded with
		// zeros on the right) as far as needed to stay inside the source.
		begin := max(0, min(begins[v], src-taps))
		off := begins[v] - begin
		out := kw.w[v*taps : (v+1)*taps]
		total, big := int32(0), off
		for k, w := range ws {
			q := int32(math.Round(w / sum * (1 << weightBits)))
			out[off+k] = q
			total += q
			if q > out[big] {
				big = off + k
			}
		}
		out[big] += 1<<weightBits - total
		kw.start[v] = begin
	}
	return kw
}

// scratch holds a resampler's intermediate buffers between uses.
type scratch struct {
	rows []uint8 // the horizontally resampled rows of one plane
	acc  []int32 // one output row's sums
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// planeWeights are the weights resampling a sw x sh plane to dw x dh.
type planeWeights struct {
	sw, sh, dw, dh int
	x, y           kernelWeights
}

// newPlaneWeights returns the weights resampling a sw x sh plane to
// dw x dh with the filter resizeFilter picks from the widths, in both
// directions, as resize does with imaging.
func newPlaneWeights(sw, sh, dw, dh int) *planeWeights {
	f := resizeFilter(sw, dw)
	return &planeWeights{
		sw: sw, sh: sh, dw: dw, dh: dh,
		x: makeWeights(dw, sw, f),
		y: makeWeights(dh, sh, f),
	}
}

// resizePlane resamples the pw.sw x pw.sh plane src (rows stride bytes
// apart) to the pw.dw x pw.dh plane dst (rows dstStride apart): rows
// first, then columns.
func resizePlane(dst []uint8, dstStride int, src []uint8, stride int, pw *planeWeights, s *scratch) {
	sw, sh, dw, dh := pw.sw, pw.sh, pw.dw, pw.dh
	wx, wy := &pw.x, &pw.y

	// Rows: sh rows of dw samples.
	rows := growBytes(&s.rows, dw*sh)
	for y := range sh {
		in := src[y*stride : y*stride+sw]
		out := rows[y*dw : (y+1)*dw]
		if sw == dw {
			copy(out, in)
			continue
		}
		resampleRow(out, in, wx)
	}

	// Columns.
	acc := growInt32(&s.acc, dw)
	for y := range dh {
		out := dst[y*dstStride : y*dstStride+dw]
		if sh == dh {
			copy(out, rows[y*dw:(y+1)*dw])
			continue
		}
		clear(acc)
		start := wy.start[y]
		for k, w := range wy.w[y*wy.taps : (y+1)*wy.taps] {
			if w == 0 {
				continue
			}
			in := rows[(start+k)*dw : (start+k+1)*dw]
			a := acc[:len(in)]
			for x, v := range in {
				a[x] += w * int32(v)
			}
		}
		for x, a := range acc[:len(out)] {
			out[x] = clampWeighted(a)
		}
	}
}

// resampleRow computes one row of outputs with the weights wx.
func resampleRow(out, in []uint8, wx *kernelWeights) {
	taps := wx.taps
	switch taps {
	case 2:
		for x := range out {
			s := in[wx.start[x]:][:2]
			w := wx.w[2*x:][:2]
			out[x] = clampWeighted(w[0]*int32(s[0]) + w[1]*int32(s[1]))
		}
	case 3:
		for x := range out {
			s := in[wx.start[x]:][:3]
			w := wx.w[3*x:][:3]
			out[x] = clampWeighted(w[0]*int32(s[0]) + w[1]*int32(s[1]) + w[2]*int32(s[2]))
		}
	case 4:
		for x := range out {
			s := in[wx.start[x]:][:4]
			w := wx.w[4*x:][:4]
			out[x] = clampWeighted(w[0]*int32(s[0]) + w[1]*int32(s[1]) + w[2]*int32(s[2]) + w[3]*int32(s[3]))
		}
	case 5:
		for x := range out {
			s := in[wx.start[x]:][:5]
			w := wx.w[5*x:][:5]
			out[x] = clampWeighted(w[0]*int32(s[0]) + w[1]*int32(s[1]) + w[2]*int32(s[2]) + w[3]*int32(s[3]) + w[4]*int32(s[4]))
		}
	default:
		for x := range out {
			s := in[wx.start[x]:][:taps]
			w := wx.w[taps*x:][:taps]
			var a int32
			for k, v := range s {
				a += w[k] * int32(v)
			}
			out[x] = clampWeighted(a)
		}
	}
}

// clampWeighted rounds a weighted sum to 8 bits. The filters have no
// negative lobes, so only rounding can leave [0, 255], and not by much.
func clampWeighted(a int32) uint8 {
	a = (a + 1<<(weightBits-1)) >> weightBits
	if a < 0 {
		return 0
	}
	if a > 255 {
		return 255
	}
	return uint8(a)
}

func growBytes(b *[]uint8, n int) []uint8 {
	if cap(*b) < n {
		*b = make([]uint8, n)
	}
	return (*b)[:n]
}

func growInt32(b *[]int32, n int) []int32 {
	if cap(*b) < n {
		*b = make([]int32, n)
	}
	return (*b)[:n]
}

// resizeYCbCr resamples src to w x h, plane by plane. The result has full
// chroma (4:4:4) when fullChroma is set, and 4:2:0 chroma otherwise, which
// is what image/jpeg's encoder keeps of any image.
func resizeYCbCr(src *image.YCbCr, w, h int, fullChroma bool) *image.YCbCr {
	ratio := image.YCbCrSubsampleRatio420
	if fullChroma {
		ratio = image.YCbCrSubsampleRatio444
	}
	dst := image.NewYCbCr(image.Rect(0, 0, w, h), ratio)
	b := src.Rect
	sw, sh := b.Dx(), b.Dy()
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	resizePlane(dst.Y, dst.YStride, src.Y[src.YOffset(b.Min.X, b.Min.Y):], src.YStride, newPlaneWeights(sw, sh, w, h), s)

	// The chroma planes cover the same area at their own resolution.
	hs, vs := chromaFactors(src.SubsampleRatio)
	c0 := src.COffset(b.Min.X, b.Min.Y)
	cw := (b.Max.X+hs-1)/hs - b.Min.X/hs
	ch := (b.Max.Y+vs-1)/vs - b.Min.Y/vs
	dw, dh := w, h
	if ratio == image.YCbCrSubsampleRatio420 {
		dw, dh = (w+1)/2, (h+1)/2
	}
	pw := newPlaneWeights(cw, ch, dw, dh)
	resizePlane(dst.Cb, dst.CStride, src.Cb[c0:], src.CStride, pw, s)
	resizePlane(dst.Cr, dst.CStride, src.Cr[c0:], src.CStride, pw, s)
	return dst
}

// chromaFactors returns how many luma samples one chroma sample spans
// horizontally and vertically.
func chromaFactors(r image.YCbCrSubsampleRatio) (int, int) {
	switch r {
	case image.YCbCrSubsampleRatio422:
		return 2, 1
	case image.YCbCrSubsampleRatio420:
		return 2, 2
	case image.YCbCrSubsampleRatio440:
		return 1, 2
	case image.YCbCrSubsampleRatio411:
		return 4, 1
	case image.YCbCrSubsampleRatio410:
		return 4, 2
	}
	return 1, 1
}

// resizeGray resamples src to w x h.
func resizeGray(src *image.Gray, w, h int) *image.Gray {
	dst := image.NewGray(image.Rect(0, 0, w, h))
	b := src.Rect
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	resizePlane(dst.Pix, dst.Stride, src.Pix[src.PixOffset(b.Min.X, b.Min.Y):], src.Stride, newPlaneWeights(b.Dx(), b.Dy(), w, h), s)
	return dst
}
