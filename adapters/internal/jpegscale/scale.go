// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegscale

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"math"
)

// ErrTooManyPixels is wrapped by the error returned when the frame header
// declares more pixels than Options.MaxPixels.
var ErrTooManyPixels = errors.New("jpegscale: image has too many pixels")

// Options configure DecodeOptions.
type Options struct {
	// Denom is the scale denominator: 1 (full size), 2, 4 or 8. The
	// decoded image is ceil(width/Denom) x ceil(height/Denom). Zero means 1.
	Denom int
	// MaxPixels, when > 0, refuses images whose frame header declares more
	// than this many pixels (full-size width x height). The check runs as
	// soon as the header is read, before any pixel or coefficient buffer
	// is allocated.
	MaxPixels int64
}

// Decode reads a JPEG image from r at full size. The result is the same
// as image/jpeg's.
func Decode(r io.Reader) (image.Image, error) {
	return DecodeOptions(r, Options{})
}

// DecodeScaled reads a JPEG image from r at 1/denom of its size in each
// dimension (rounded up); denom is 1, 2, 4 or 8. Each pixel of the result
// approximates the mean of the denom x denom source pixels it covers: at
// 1/8 it is the block's DC coefficient; at 1/2 and 1/4 a reduced inverse
// DCT computes the box average of the full IDCT directly from the
// coefficients. Chroma is scaled by the same factor, so subsampling is
// preserved, and colour conversion happens (if at all) at the reduced size.
func DecodeScaled(r io.Reader, denom int) (image.Image, error) {
	return DecodeOptions(r, Options{Denom: denom})
}

// DecodeOptions reads a JPEG image from r as o describes.
func DecodeOptions(r io.Reader, o Options) (image.Image, error) {
	shift, err := denomShift(o.Denom)
	if err != nil {
		return nil, err
	}
	d := decoder{shift: shift, maxPixels: o.MaxPixels}
	return d.decode(r, false)
}

// ScaledSize returns the size DecodeScaled(r, denom) produces for a
// w x h image.
func ScaledSize(w, h, denom int) (int, int) {
	shift, err := denomShift(denom)
	if err != nil {
		return w, h
	}
	return scaledLen(w, shift), scaledLen(h, shift)
}

func denomShift(denom int) (uint, error) {
	switch denom {
	case 0, 1:
		return 0, nil
	case 2:
		return 1, nil
	case 4:
		return 2, nil
	case 8:
		return 3, nil
	}
	return 0, fmt.Errorf("jpegscale: scale denominator %d is not 1, 2, 4 or 8", denom)
}

// scaledLen is n >> shift rounded up.
func scaledLen(n int, shift uint) int {
	return (n + 1<<shift - 1) >> shift
}

func (d *decoder) checkPixels() error {
	if d.maxPixels > 0 && int64(d.width)*int64(d.height) > d.maxPixels {
		return fmt.Errorf("%w: %dx%d exceeds %d", ErrTooManyPixels, d.width, d.height, d.maxPixels)
	}
	return nil
}

// DecodeConfig returns the color model and dimensions of a JPEG image without
// decoding the entire image.
func DecodeConfig(r io.Reader) (image.Config, error) {
	var d decoder
	if _, err := d.decode(r, true); err != nil {
		return image.Config{}, err
	}
	switch d.nComp {
	case 1:
		return image.Config{
			ColorModel: color.GrayModel,
			Width:      d.width,
			Height:     d.height,
		}, nil
	case 3:
		cm := color.YCbCrModel
		if d.isRGB() {
			cm = color.RGBAModel
		}
		return image.Config{
			ColorModel: cm,
			Width:      d.width,
			Height:     d.height,
		}, nil
	case 4:
		return image.Config{
			ColorModel: color.CMYKModel,
			Width:      d.width,
			Height:     d.height,
		}, nil
	}
	return image.Config{}, FormatError("missing SOF marker")
}

// blockShifts sets every component's block shifts: a block of component
// i is reconstructed as (8>>compShift[i][0]) x (8>>compShift[i][1])
// pixels. Luma uses d.shift. A component subsampled by 2 or 4 covers 2 or 4
// times as many pixels per block, so it is reconstructed that much larger
// (up to the full 8 samples), as libjpeg does: the chroma planes then need
// less upsampling, or none, and keep the detail the output size can show.
func (d *decoder) blockShifts() {
	h0, v0 := d.comp[0].h, d.comp[0].v
	for i := range d.nComp {
		d.compShift[i] = [2]uint{
			reducedShift(d.shift, h0/d.comp[i].h),
			reducedShift(d.shift, v0/d.comp[i].v),
		}
	}
}

// reducedShift is shift less log2(ratio), at least 0.
func reducedShift(shift uint, ratio int) uint {
	r := uint(0)
	for ; ratio > 1; ratio >>= 1 {
		r++
	}
	if r >= shift {
		return 0
	}
	return shift - r
}

// boxFracBits is the fixed-point precision of boxIDCT.
const boxFracBits = 13

// boxIDCT[shift] is the 1-D inverse DCT to 8>>shift outputs:
// boxIDCT[shift][x][u] is the weight of coefficient u in output x, the
// mean of the 8-point IDCT basis function u over the 1<<shift samples
// output x covers. Applied to rows and columns, it gives exactly the box
// average of the full-size IDCT (before rounding and clipping), without
// computing the full-size block.
//
// Each basis function is symmetric (even u) or antisymmetric (odd u) about
// the block's centre, and so is its box average: the weights are computed
// for the first half of the outputs and mirrored, so that
// boxIDCT[shift][n-1-x][u] == ±boxIDCT[shift][x][u] holds exactly, which
// idct1D relies on.
var boxIDCT = func() (m [4][8][8]int64) {
	for shift := range 4 {
		k := 1 << shift
		n := 8 >> shift
		for x := range (n + 1) / 2 {
			for u := range 8 {
				cu := 1.0
				if u == 0 {
					cu = 1 / math.Sqrt2
				}
				sum := 0.0
				for j := range k {
					sum += cu / 2 * math.Cos(float64(2*(k*x+j)+1)*float64(u)*math.Pi/16)
				}
				w := int64(math.Round(sum / float64(k) * (1 << boxFracBits)))
				m[shift][x][u] = w
				if u%2 == 1 {
					w = -w
				}
				m[shift][n-1-x][u] = w
			}
		}
	}
	return m
}()

// idct1D applies boxIDCT[shift] to the 8 coefficients in and writes the
// 8>>shift outputs to out. It uses the symmetry of the weights: output x
// and output n-1-x share the even and the odd coefficients' sums, with
// opposite signs for the odd ones. Weights that are zero for every output
// (coefficient 4 at n = 4; 2, 4 and 6 at n = 2; all but 0 at n = 1) are
// skipped.
func idct1D(in *[8]int64, out []int64, shift uint) {
	m := &boxIDCT[shift&3]
	switch shift {
	case 0:
		for x := range 4 {
			w := &m[x]
			e := w[0]*in[0] + w[2]*in[2] + w[4]*in[4] + w[6]*in[6]
			o := w[1]*in[1] + w[3]*in[3] + w[5]*in[5] + w[7]*in[7]
			out[x], out[7-x] = e+o, e-o
		}
	case 1:
		dc := m[0][0] * in[0]
		for x := range 2 {
			w := &m[x]
			e := dc + w[2]*in[2] + w[6]*in[6]
			o := w[1]*in[1] + w[3]*in[3] + w[5]*in[5] + w[7]*in[7]
			out[x], out[3-x] = e+o, e-o
		}
	case 2:
		w := &m[0]
		e := w[0] * in[0]
		o := w[1]*in[1] + w[3]*in[3] + w[5]*in[5] + w[7]*in[7]
		out[0], out[1] = e+o, e-o
	default:
		out[0] = m[0][0] * in[0]
	}
}

// The weights of boxIDCT[1] (wNu: coefficient u's weight in output N) and
// boxIDCT[2] (qNu) as constants, for the square reductions' unrolled code
// (TestBoxIDCTConstants checks them against the table). Coefficient 0's
// weight is the same for every output and shift; the other outputs' weights
// follow by symmetry (see boxIDCT).
const (
	w00                = 2896
	w01, w03, w05, w07 = 3711, 1303, -871, -738
	w11, w13, w15, w17 = 1537, -3146, 2102, -306
	w02, w06           = 2676, -1108
	q01, q03, q05, q07 = 2624, -922, 616, -522
)

// Rounding of the two passes of reconstructScaled: the rows keep 8
// fractional bits, the columns none.
const (
	rowRound, rowShift = 1 << (boxFracBits - 9), boxFracBits - 8
	colRound, colShift = 1 << (boxFracBits + 7), boxFracBits + 8
)

// reconstructScaled takes the dequantized coefficients b (in natural
// order) and writes the (8>>sx) x (8>>sy) reduced block, level-shifted and
// clipped, to dst. sx and sy are 0 to 3, not both 0.
func reconstructScaled(b *block, sx, sy uint, dst []byte, stride int) {
	switch {
	case sx == 1 && sy == 1:
		reconstructHalf(b, dst, stride)
		return
	case sx == 2 && sy == 2:
		reconstructQuarter(b, dst, stride)
		return
	}
	nx, ny := 8>>sx, 8>>sy
	// Rows first (horizontal frequencies u), keeping 8 fractional bits;
	// all-zero rows, the common case for high vertical frequencies, are
	// skipped. t is transposed: t[x] holds column x's 8 values.
	var (
		t   [8][8]int64
		in  [8]int64
		out [8]int64
	)
	for v := range 8 {
		row := b[8*v : 8*v+8 : 8*v+8]
		if row[0]|row[1]|row[2]|row[3]|row[4]|row[5]|row[6]|row[7] == 0 {
			continue
		}
		for u := range 8 {
			in[u] = int64(row[u])
		}
		idct1D(&in, out[:nx], sx)
		for x := range nx {
			t[x][v] = (out[x] + rowRound) >> rowShift
		}
	}
	for x := range nx {
		idct1D(&t[x], out[:ny], sy)
		for y := range ny {
			dst[y*stride+x] = clampLevel64((out[y] + colRound) >> colShift)
		}
	}
}

// reconstructHalf is reconstructScaled for sx == sy == 1 (4x4 outputs),
// unrolled: the same sums as idct1D's, with constant weights.
func reconstructHalf(b *block, dst []byte, stride int) {
	var t [4][8]int64 // t[x][v]: row v's output x.
	for v := range 8 {
		r := b[8*v : 8*v+8 : 8*v+8]
		if r[0]|r[1]|r[2]|r[3]|r[4]|r[5]|r[6]|r[7] == 0 {
			continue
		}
		dc := w00 * int64(r[0])
		q := w02*int64(r[2]) + w06*int64(r[6])
		r1, r3, r5, r7 := int64(r[1]), int64(r[3]), int64(r[5]), int64(r[7])
		o0 := w01*r1 + w03*r3 + w05*r5 + w07*r7
		o1 := w11*r1 + w13*r3 + w15*r5 + w17*r7
		e0, e1 := dc+q, dc-q
		t[0][v] = (e0 + o0 + rowRound) >> rowShift
		t[3][v] = (e0 - o0 + rowRound) >> rowShift
		t[1][v] = (e1 + o1 + rowRound) >> rowShift
		t[2][v] = (e1 - o1 + rowRound) >> rowShift
	}
	d0 := dst[0:4:4]
	d1 := dst[stride : stride+4 : stride+4]
	d2 := dst[2*stride : 2*stride+4 : 2*stride+4]
	d3 := dst[3*stride : 3*stride+4 : 3*stride+4]
	for x := range 4 {
		c := &t[x]
		dc := w00*c[0] + colRound
		q := w02*c[2] + w06*c[6]
		o0 := w01*c[1] + w03*c[3] + w05*c[5] + w07*c[7]
		o1 := w11*c[1] + w13*c[3] + w15*c[5] + w17*c[7]
		e0, e1 := dc+q, dc-q
		d0[x] = clampLevel64((e0 + o0) >> colShift)
		d3[x] = clampLevel64((e0 - o0) >> colShift)
		d1[x] = clampLevel64((e1 + o1) >> colShift)
		d2[x] = clampLevel64((e1 - o1) >> colShift)
	}
}

// reconstructQuarter is reconstructScaled for sx == sy == 2 (2x2 outputs),
// unrolled like reconstructHalf.
func reconstructQuarter(b *block, dst []byte, stride int) {
	var t [2][8]int64 // t[x][v]: row v's output x.
	for v := range 8 {
		r := b[8*v : 8*v+8 : 8*v+8]
		if r[0]|r[1]|r[3]|r[5]|r[7] == 0 {
			continue
		}
		e := w00 * int64(r[0])
		o := q01*int64(r[1]) + q03*int64(r[3]) + q05*int64(r[5]) + q07*int64(r[7])
		t[0][v] = (e + o + rowRound) >> rowShift
		t[1][v] = (e - o + rowRound) >> rowShift
	}
	d0 := dst[0:2:2]
	d1 := dst[stride : stride+2 : stride+2]
	for x := range 2 {
		c := &t[x]
		e := w00*c[0] + colRound
		o := q01*c[1] + q03*c[3] + q05*c[5] + q07*c[7]
		d0[x] = clampLevel64((e + o) >> colShift)
		d1[x] = clampLevel64((e - o) >> colShift)
	}
}

// clampLevel64 is clampLevel for wide intermediates.
func clampLevel64(c int64) uint8 {
	if c < -128 {
		return 0
	} else if c > 127 {
		return 255
	}
	return uint8(c + 128)
}

// drawYCbCr converts src into dst, which has the same bounds.
func drawYCbCr(dst *image.RGBA, src *image.YCbCr) {
	b := src.Rect
	for y := b.Min.Y; y < b.Max.Y; y++ {
		p := dst.Pix[dst.PixOffset(b.Min.X, y):]
		for x := b.Min.X; x < b.Max.X; x++ {
			yi, ci := src.YOffset(x, y), src.COffset(x, y)
			r, g, bl := color.YCbCrToRGB(src.Y[yi], src.Cb[ci], src.Cr[ci])
			i := 4 * (x - b.Min.X)
			p[i], p[i+1], p[i+2], p[i+3] = r, g, bl, 255
		}
	}
}
