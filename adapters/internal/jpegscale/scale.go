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
var boxIDCT = func() (m [4][8][8]int64) {
	for shift := range 4 {
		k := 1 << shift
		for x := range 8 >> shift {
			for u := range 8 {
				cu := 1.0
				if u == 0 {
					cu = 1 / math.Sqrt2
				}
				sum := 0.0
				for j := range k {
					sum += cu / 2 * math.Cos(float64(2*(k*x+j)+1)*float64(u)*math.Pi/16)
				}
				m[shift][x][u] = int64(math.Round(sum / float64(k) * (1 << boxFracBits)))
			}
		}
	}
	return m
}()

// reconstructScaled dequantizes b (in natural order) with qt (in zig-zag
// order) and writes the (8>>sx) x (8>>sy) reduced block, level-shifted and
// clipped, to dst. sx and sy are 0 to 3, not both 0.
func reconstructScaled(b *block, qt *block, sx, sy uint, dst []byte, stride int) {
	if sx == 3 && sy == 3 {
		// The DC coefficient is 8 times the block mean.
		dst[0] = clampLevel64((int64(b[0])*int64(qt[0]) + 4) >> 3)
		return
	}
	nx, ny := 8>>sx, 8>>sy
	mx, my := &boxIDCT[sx], &boxIDCT[sy]
	var f [blockSize]int64
	for zig := range blockSize {
		f[unzig[zig]] = int64(b[unzig[zig]]) * int64(qt[zig])
	}
	// Rows first (horizontal frequencies u), keeping 8 fractional bits;
	// all-zero rows, the common case for high vertical frequencies, are
	// skipped in both passes.
	var (
		t    [8][8]int64
		rows [8]int
		nr   int
	)
	for v := range 8 {
		row := f[8*v : 8*v+8 : 8*v+8]
		if row[0]|row[1]|row[2]|row[3]|row[4]|row[5]|row[6]|row[7] == 0 {
			continue
		}
		for x := range nx {
			w := &mx[x]
			acc := w[0]*row[0] + w[1]*row[1] + w[2]*row[2] + w[3]*row[3] +
				w[4]*row[4] + w[5]*row[5] + w[6]*row[6] + w[7]*row[7]
			t[v][x] = (acc + 1<<(boxFracBits-9)) >> (boxFracBits - 8)
		}
		rows[nr] = v
		nr++
	}
	for y := range ny {
		w := &my[y]
		d := dst[y*stride : y*stride+nx]
		for x := range nx {
			var acc int64
			for _, v := range rows[:nr] {
				acc += w[v] * t[v][x]
			}
			d[x] = clampLevel64((acc + 1<<(boxFracBits+7)) >> (boxFracBits + 8))
		}
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
