// Copyright 2011 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

// Package jpegenc is a JPEG encoder whose output is byte for byte that of
// image/jpeg's Encode (baseline, 4:2:0, the standard Huffman tables), made
// cheaper: quantization multiplies by exact reciprocals instead of
// dividing, the bit-stream is written to a byte slice 32 bits at a time,
// and the chroma of a 4:2:0 *image.YCbCr is read directly. Prepare
// separates the work that does not depend on the quality (colour
// conversion and forward DCT) from the rest, so that encoding one image at
// several qualities, as a search for a byte budget does, pays for it once.
//
// It is a fork of the standard library's image/jpeg encoder (the LICENSE
// file in this directory applies): dct.go and tables.go are copied
// unchanged.
package jpegenc

import (
	"encoding/binary"
	"errors"
	"image"
	"io"
	"math/bits"
	"slices"
)

// errTooLarge is image/jpeg's error for images it cannot encode.
var errTooLarge = errors.New("jpeg: image is too large to encode")

// Encode writes m to w as image/jpeg's Encode does with the given quality
// (clipped to 1–100), producing the same bytes.
func Encode(w io.Writer, m image.Image, quality int) error {
	b := m.Bounds()
	if b.Dx() >= 1<<16 || b.Dy() >= 1<<16 {
		return errTooLarge
	}
	e := newEncoder(quality, b.Size(), isGray(m), b.Dx()*b.Dy()/4)
	forEachBlock(m, func(blk *block, q quantIndex) {
		fdct(blk)
		e.writeBlock(blk, q)
	})
	_, err := w.Write(e.finish())
	return err
}

// Coefficients are an image's forward DCT, block by block in encoding
// order, ready to be quantized and encoded at any quality.
type Coefficients struct {
	size image.Point
	gray bool
	// coef holds 64 coefficients per block, in zig-zag order; q the
	// quantization table of each block.
	coef []int16
	q    []quantIndex
}

// Prepare converts m's colours and computes its forward DCT.
func Prepare(m image.Image) (*Coefficients, error) {
	b := m.Bounds()
	if b.Dx() >= 1<<16 || b.Dy() >= 1<<16 {
		return nil, errTooLarge
	}
	c := &Coefficients{size: b.Size(), gray: isGray(m)}
	n := ((b.Dx() + 7) / 8) * ((b.Dy() + 7) / 8)
	if !c.gray {
		n = ((b.Dx() + 15) / 16) * ((b.Dy() + 15) / 16) * 6
	}
	c.coef = make([]int16, n*blockSize)
	c.q = make([]quantIndex, n)
	i := 0
	forEachBlock(m, func(blk *block, q quantIndex) {
		fdct(blk)
		// The forward DCT's outputs are Q13.0: they fit in 16 bits.
		coef := c.coef[i*blockSize : (i+1)*blockSize : (i+1)*blockSize]
		for zig := range coef {
			coef[zig] = int16(blk[unzig[zig]])
		}
		c.q[i] = q
		i++
	})
	return c, nil
}

// Encode returns the image encoded at the given quality (clipped to
// 1–100): the bytes image/jpeg's Encode writes.
func (c *Coefficients) Encode(quality int) []byte {
	e := newEncoder(quality, c.size, c.gray, len(c.q)*16)
	var zz [blockSize]int32
	for i, q := range c.q {
		coef := c.coef[i*blockSize : (i+1)*blockSize : (i+1)*blockSize]
		for zig, v := range coef {
			zz[zig] = int32(v)
		}
		e.writeZigZag(&zz, q)
	}
	return e.finish()
}

func isGray(m image.Image) bool {
	_, ok := m.(*image.Gray)
	return ok
}

// encoder accumulates one JPEG file in buf.
type encoder struct {
	buf []byte
	// acc holds n pending bits of the bit-stream, most significant first.
	acc uint64
	n   uint
	// quant is the scaled quantization tables, in zig-zag order; div
	// holds their entries times 8, the divisors of the forward DCT's
	// outputs, and recip the divisors' reciprocals (see quantize).
	quant [nQuantIndex][blockSize]byte
	div   [nQuantIndex][blockSize]uint32
	recip [nQuantIndex][blockSize]uint32
	// prevDC is each table's previous DC value (the Cb and Cr components
	// share the chrominance table but are delta-encoded separately).
	prevDC [3]int32
	// gray: one component. Otherwise four Y blocks, then one Cb and one Cr
	// block make an MCU, and count (blocks written) gives the component
	// of the next one.
	gray  bool
	count int
}

// newEncoder writes the headers for an image of the given size; sizeHint
// is a guess at the size of the entropy-coded data.
func newEncoder(quality int, size image.Point, gray bool, sizeHint int) *encoder {
	e := &encoder{gray: gray, buf: make([]byte, 0, 1024+sizeHint)}
	quality = min(max(quality, 1), 100)
	// Convert from a quality rating to a scaling factor.
	var scale int
	if quality < 50 {
		scale = 5000 / quality
	} else {
		scale = 200 - quality*2
	}
	// Initialize the quantization tables.
	for i := range e.quant {
		for j := range e.quant[i] {
			x := int(unscaledQuant[i][j])
			x = (x*scale + 50) / 100
			x = min(max(x, 1), 255)
			e.quant[i][j] = uint8(x)
			e.div[i][j] = 8 * uint32(x)
			e.recip[i][j] = reciprocal(8 * uint32(x))
		}
	}
	nComponent := 3
	if gray {
		nComponent = 1
	}
	// Start Of Image.
	e.buf = append(e.buf, 0xff, 0xd8)
	// Define Quantization Table.
	e.marker(dqtMarker, 2+int(nQuantIndex)*(1+blockSize))
	for i := range e.quant {
		e.buf = append(e.buf, uint8(i))
		e.buf = append(e.buf, e.quant[i][:]...)
	}
	// Start Of Frame (Baseline Sequential).
	e.marker(sof0Marker, 8+3*nComponent)
	e.buf = append(e.buf, 8, uint8(size.Y>>8), uint8(size.Y), uint8(size.X>>8), uint8(size.X), uint8(nComponent))
	if nComponent == 1 {
		// No subsampling for grayscale image.
		e.buf = append(e.buf, 1, 0x11, 0x00)
	} else {
		for i := range nComponent {
			// 4:2:0 chroma subsampling.
			e.buf = append(e.buf, uint8(i+1), "\x22\x11\x11"[i], "\x00\x01\x01"[i])
		}
	}
	// Define Huffman Table.
	specs := theHuffmanSpec[:]
	if nComponent == 1 {
		// Drop the Chrominance tables.
		specs = specs[:2]
	}
	markerlen := 2
	for _, s := range specs {
		markerlen += 1 + 16 + len(s.value)
	}
	e.marker(dhtMarker, markerlen)
	for i, s := range specs {
		e.buf = append(e.buf, "\x00\x10\x01\x11"[i])
		e.buf = append(e.buf, s.count[:]...)
		e.buf = append(e.buf, s.value...)
	}
	// Start Of Scan.
	if gray {
		e.buf = append(e.buf, sosHeaderY...)
	} else {
		e.buf = append(e.buf, sosHeaderYCbCr...)
	}
	return e
}

const (
	sof0Marker = 0xc0
	dhtMarker  = 0xc4
	dqtMarker  = 0xdb
)

func (e *encoder) marker(marker uint8, markerlen int) {
	e.buf = append(e.buf, 0xff, marker, uint8(markerlen>>8), uint8(markerlen))
}

// finish pads the bit-stream with 1s to a whole byte, as image/jpeg does,
// writes the End Of Image marker and returns the file.
func (e *encoder) finish() []byte {
	e.buf = slices.Grow(e.buf, 16)
	e.acc, e.n, e.buf = put(e.acc, e.n, e.buf, 0x7f, 7)
	for e.n >= 8 {
		e.buf = appendStuffed(e.buf, uint8(e.acc>>56))
		e.acc <<= 8
		e.n -= 8
	}
	return append(e.buf, 0xff, 0xd9)
}

// put appends the nBits (at most 32) least significant bits of bits to
// the bit-stream held in acc (n bits, n < 32, most significant first) and
// buf: whenever 32 bits are pending, they are written out. buf must have
// room for 8 more bytes.
func put(acc uint64, n uint, buf []byte, bits uint32, nBits uint) (uint64, uint, []byte) {
	acc |= uint64(bits) << ((64 - n - nBits) & 63)
	n += nBits
	if n >= 32 {
		w := uint32(acc >> 32)
		if t := ^w; (t-0x01010101)&^t&0x80808080 == 0 {
			// No 0xff byte: nothing to stuff.
			buf = binary.BigEndian.AppendUint32(buf, w)
		} else {
			buf = appendStuffed4(buf, w)
		}
		acc <<= 32
		n -= 32
	}
	return acc, n, buf
}

// appendStuffed4 appends the 4 bytes of w, each 0xff followed by 0x00.
func appendStuffed4(buf []byte, w uint32) []byte {
	for shift := 24; shift >= 0; shift -= 8 {
		buf = appendStuffed(buf, uint8(w>>shift))
	}
	return buf
}

// appendStuffed appends one byte of entropy-coded data, stuffing a 0x00
// after 0xff.
func appendStuffed(buf []byte, b uint8) []byte {
	if b == 0xff {
		return append(buf, 0xff, 0x00)
	}
	return append(buf, b)
}

// reciprocal returns m such that quantize's (x*m)>>32 is x/d, rounded down,
// for every x it is used with: m is 2^32/d rounded up, and the error,
// x*(m*d-2^32)/(d*2^32) < x/2^32, stays below 1/d for x < 2^32/d, far
// beyond the forward DCT's range (TestReciprocal checks it).
func reciprocal(d uint32) uint32 {
	return uint32((1<<32 + uint64(d) - 1) / uint64(d))
}

// quantize is image/jpeg's div(a, d): a/d rounded to the nearest integer,
// halves away from zero, with m = reciprocal(d). It has no branches: the
// signs of noisy coefficients are unpredictable.
func quantize(a int32, d, m uint32) int32 {
	sign := a >> 31 // -1 or 0
	abs := uint32((a ^ sign) - sign)
	q := int32(uint64(abs+d>>1) * uint64(m) >> 32)
	return (q ^ sign) - sign
}

// maxBlockBytes bounds the bytes one block adds to the bit-stream: 64
// codes of at most 27 bits, every byte possibly stuffed.
const maxBlockBytes = 2 * (64*27/8 + 8)

// writeBlock quantizes and writes a block whose forward DCT is b (in
// natural order), with table q, as image/jpeg's writeBlock does.
func (e *encoder) writeBlock(b *block, q quantIndex) {
	var zz [blockSize]int32
	for zig := range zz {
		zz[zig] = b[unzig[zig]]
	}
	e.writeZigZag(&zz, q)
}

// writeZigZag is writeBlock for a forward DCT in zig-zag order.
func (e *encoder) writeZigZag(b *[blockSize]int32, q quantIndex) {
	comp := 0
	if !e.gray {
		// Four Y blocks, then Cb, then Cr.
		comp = max(0, e.count%6-3)
		e.count++
	}
	div, recip := &e.div[q], &e.recip[q]
	// Quantize in zig-zag order, noting the non-zero AC coefficients.
	var (
		z  [blockSize]int32
		nz uint64
	)
	for zig := 1; zig < blockSize; zig++ {
		v := quantize(b[zig], div[zig], recip[zig])
		z[zig] = v
		// Bit 31 of v|-v is set when v is not zero.
		nz |= uint64(uint32(v|-v)>>31) << zig
	}
	dc := quantize(b[0], div[0], recip[0])

	if cap(e.buf)-len(e.buf) < maxBlockBytes {
		e.buf = slices.Grow(e.buf, max(maxBlockBytes, cap(e.buf)))
	}
	acc, n, buf := e.acc, e.n, e.buf
	// The DC delta.
	code, nBits := rle(theHuffmanLUT[2*q], 0, dc-e.prevDC[comp])
	acc, n, buf = put(acc, n, buf, code, nBits)
	e.prevDC[comp] = dc
	// The AC components: each run of zeroes (16 at a time) and the value
	// that ends it, then the end of block if zeroes remain.
	h := theHuffmanLUT[2*q+1]
	zrl, eob := h[0xf0], h[0x00]
	prev := 0
	for nz != 0 {
		zig := bits.TrailingZeros64(nz)
		nz &= nz - 1
		run := int32(zig - prev - 1)
		for ; run > 15; run -= 16 {
			acc, n, buf = put(acc, n, buf, zrl&(1<<24-1), uint(zrl>>24))
		}
		code, nBits := rle(h, run, z[zig&(blockSize-1)])
		acc, n, buf = put(acc, n, buf, code, nBits)
		prev = zig
	}
	if prev < blockSize-1 {
		acc, n, buf = put(acc, n, buf, eob&(1<<24-1), uint(eob>>24))
	}
	e.acc, e.n, e.buf = acc, n, buf
}

// rle returns the Huffman code for a run of runLength zeroes followed by
// value, followed by value's bits, and its length, as image/jpeg's
// emitHuffRLE emits them: a code of at most 16 bits and at most 11 value
// bits.
// Like quantize, it has no branches.
func rle(h huffmanLUT, runLength, value int32) (uint32, uint) {
	sign := value >> 31
	a := uint32((value ^ sign) - sign)
	b := uint32(value + sign) // value-1 for a negative value
	nBits := uint32(bits.Len32(a))
	x := h[runLength<<4|int32(nBits)]
	return (x&(1<<24-1))<<nBits | b&(1<<nBits-1), uint(x>>24 + nBits)
}

// forEachBlock converts m to YCbCr (or Y for *image.Gray) 8x8 blocks in
// image/jpeg's encoding order and calls f with each block, in natural
// order, and its quantization table: for colour images, each 16x16 MCU's
// four Y blocks, then its Cb and Cr blocks averaged down to 8x8.
func forEachBlock(m image.Image, f func(b *block, q quantIndex)) {
	var (
		b      block
		cb, cr [4]block
	)
	bounds := m.Bounds()
	switch m := m.(type) {
	case *image.Gray:
		for y := bounds.Min.Y; y < bounds.Max.Y; y += 8 {
			for x := bounds.Min.X; x < bounds.Max.X; x += 8 {
				grayToY(m, image.Pt(x, y), &b)
				f(&b, quantIndexLuminance)
			}
		}
		return
	case *image.YCbCr:
		if m.SubsampleRatio == image.YCbCrSubsampleRatio420 && bounds.Min.X%2 == 0 && bounds.Min.Y%2 == 0 {
			forEachBlock420(m, f)
			return
		}
	}
	rgba, _ := m.(*image.RGBA)
	ycbcr, _ := m.(*image.YCbCr)
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 16 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 16 {
			for i := range 4 {
				xOff := (i & 1) * 8
				yOff := (i & 2) * 4
				p := image.Pt(x+xOff, y+yOff)
				switch {
				case rgba != nil:
					rgbaToYCbCr(rgba, p, &b, &cb[i], &cr[i])
				case ycbcr != nil:
					yCbCrToYCbCr(ycbcr, p, &b, &cb[i], &cr[i])
				default:
					toYCbCr(m, p, &b, &cb[i], &cr[i])
				}
				f(&b, quantIndexLuminance)
			}
			scale(&b, &cb)
			f(&b, quantIndexChrominance)
			scale(&b, &cr)
			f(&b, quantIndexChrominance)
		}
	}
}

// forEachBlock420 is forEachBlock for a 4:2:0 image whose chroma samples
// are aligned with the MCUs (an even origin). image/jpeg reads every
// pixel's chroma (clamping coordinates to the image) and averages each
// 2x2 group, which all lie on one chroma sample here, so the averages are
// the samples themselves: they are read directly, with the clamping
// applied to chroma coordinates.
func forEachBlock420(m *image.YCbCr, f func(b *block, q quantIndex)) {
	var b block
	bounds := m.Bounds()
	xmax, ymax := bounds.Max.X-1, bounds.Max.Y-1
	cxmax, cymax := xmax/2-bounds.Min.X/2, ymax/2-bounds.Min.Y/2
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 16 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 16 {
			for i := range 4 {
				px, py := x+(i&1)*8, y+(i&2)*4
				for j := range 8 {
					row := m.Y[m.YOffset(bounds.Min.X, min(py+j, ymax)):]
					row = row[:bounds.Dx()]
					if px+8 <= bounds.Max.X {
						r := row[px-bounds.Min.X:][:8]
						d := b[8*j : 8*j+8 : 8*j+8]
						for k, v := range r {
							d[k] = int32(v)
						}
						continue
					}
					for k := range 8 {
						b[8*j+k] = int32(row[min(px+k, xmax)-bounds.Min.X])
					}
				}
				f(&b, quantIndexLuminance)
			}
			cx0, cy0 := (x-bounds.Min.X)/2, (y-bounds.Min.Y)/2
			for _, plane := range [2][]uint8{m.Cb, m.Cr} {
				for j := range 8 {
					row := plane[min(cy0+j, cymax)*m.CStride:]
					row = row[:cxmax+1]
					if cx0+8 <= cxmax+1 {
						r := row[cx0:][:8]
						d := b[8*j : 8*j+8 : 8*j+8]
						for k, v := range r {
							d[k] = int32(v)
						}
						continue
					}
					for k := range 8 {
						b[8*j+k] = int32(row[min(cx0+k, cxmax)])
					}
				}
				f(&b, quantIndexChrominance)
			}
		}
	}
}
