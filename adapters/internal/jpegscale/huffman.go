// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegscale

import (
	"io"
)

// maxCodeLength is the maximum (inclusive) number of bits in a Huffman code.
const maxCodeLength = 16

// maxNCodes is the maximum (inclusive) number of codes in a Huffman tree.
const maxNCodes = 256

// lutSize is the log-2 size of the Huffman decoder's look-up table.
const lutSize = 8

// huffman is a Huffman decoder, specified in section C.
type huffman struct {
	// length is the number of codes in the tree.
	nCodes int32
	// lut is the look-up table for the next lutSize bits in the bit-stream.
	// The high 8 bits of the uint16 are the encoded value. The low 8 bits
	// are 1 plus the code length, or 0 if the value is too large to fit in
	// lutSize bits.
	lut [1 << lutSize]uint16
	// vals are the decoded values, sorted by their encoding.
	vals [maxNCodes]uint8
	// minCodes[i] is the minimum code of length i, or -1 if there are no
	// codes of that length.
	minCodes [maxCodeLength]int32
	// maxCodes[i] is the maximum code of length i, or -1 if there are no
	// codes of that length.
	maxCodes [maxCodeLength]int32
	// valsIndices[i] is the index into vals of minCodes[i].
	valsIndices [maxCodeLength]int32
	// fast holds the wider look-up tables of the block decoder (see
	// buildFast); nil until the table is defined.
	fast *huffFast
}

// fastBits is the log-2 size of the block decoder's look-up tables.
const fastBits = 10

// huffFast are look-up tables indexed by the next fastBits bits of the
// bit-stream. They decode exactly what decodeHuffman decodes from the same
// bits when at least 8 bits are buffered, for any table, including
// malformed ones (see buildFast).
type huffFast struct {
	// sym is the decoded value << 8 | the code length, or 0 when the code
	// is longer than fastBits.
	sym [1 << fastBits]uint16
	// ac, for a value with a non-zero size (the low nibble), whose code and
	// extra bits together fit in fastBits, is the whole coefficient:
	// coefficient << 16 | run (the high nibble) << 8 | code length plus
	// size. It is 0 for every other entry.
	ac [1 << fastBits]int32
}

// buildFast derives h.fast from h.lut, h.vals and the code ranges. Every
// entry is found by running decodeHuffman's own procedure on the entry's
// bits: the 8-bit look-up table first, then, if it has no entry, the
// code-by-length search from the first bit. So the fast path and
// decodeHuffman agree even when the table's codes overflow their lengths.
func (h *huffman) buildFast() {
	if h.fast == nil {
		h.fast = new(huffFast)
	}
	f := h.fast
	for p := range uint32(1 << fastBits) {
		f.sym[p], f.ac[p] = 0, 0
		var (
			val    uint8
			length uint32
		)
		if v := h.lut[p>>(fastBits-lutSize)]; v != 0 {
			val, length = uint8(v>>8), uint32(v&0xff)-1
		} else {
			code := int32(0)
			for i := range uint32(fastBits) {
				code = code<<1 | int32(p>>(fastBits-1-i)&1)
				if code <= h.maxCodes[i] {
					val, length = h.vals[h.valsIndices[i]+code-h.minCodes[i]], i+1
					break
				}
			}
			if length == 0 {
				continue
			}
		}
		f.sym[p] = uint16(val)<<8 | uint16(length)
		size := uint32(val & 0x0f)
		if size == 0 || length+size > fastBits {
			continue
		}
		x := int32(p>>(fastBits-length-size)) & (1<<size - 1)
		if x < 1<<(size-1) {
			x += -1<<size + 1
		}
		f.ac[p] = x<<16 | int32(val>>4)<<8 | int32(length+size)
	}
}

// errShortHuffmanData means that an unexpected EOF occurred while decoding
// Huffman data.
var errShortHuffmanData = FormatError("short Huffman data")

// ensureNBits reads bytes from the byte buffer to ensure that d.bits.n is at
// least n. For best performance (avoiding function calls inside hot loops),
// the caller is the one responsible for first checking that d.bits.n < n.
// n is at most 32 (d.bits.n then stays at most 39).
func (d *decoder) ensureNBits(n int32) error {
	for {
		c, err := d.readByteStuffedByte()
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				return errShortHuffmanData
			}
			return err
		}
		d.bits.a |= uint64(c) << (56 - d.bits.n)
		d.bits.n += 8
		if d.bits.n >= n {
			break
		}
	}
	return nil
}

// take removes the next t (0 to 32) bits from the accumulator, which holds
// at least t bits, and returns them.
func (d *decoder) take(t uint32) uint32 {
	x := uint32(d.bits.a >> 32 >> (32 - t))
	d.bits.a <<= t
	d.bits.n -= int32(t)
	return x
}

// receiveExtend is the composition of RECEIVE and EXTEND, specified in section
// F.2.2.1.
func (d *decoder) receiveExtend(t uint8) (int32, error) {
	if d.bits.n < int32(t) {
		if err := d.ensureNBits(int32(t)); err != nil {
			return 0, err
		}
	}
	s := int32(1) << t
	x := int32(d.take(uint32(t)))
	if x < s>>1 {
		x += ((-1) << t) + 1
	}
	return x, nil
}

// refill tops up a bit accumulator holding n bits (the most significant
// ones, the rest zero) from buf[i:], the buffered bytes, to more than 56
// bits where the data allows. It stops before a marker (0xff not followed
// by 0x00), so a marker is never consumed, and at the end of buf. It
// returns the new accumulator, bit count, position and the number of bytes
// the last byte took (for unreadByteStuffedByte), or nu unchanged if it
// read nothing.
func refill(buf []byte, acc uint64, n uint32, i, nu int) (uint64, uint32, int, int) {
	if i+8 <= len(buf) && n <= 56 {
		x := uint64(buf[i])<<56 | uint64(buf[i+1])<<48 | uint64(buf[i+2])<<40 | uint64(buf[i+3])<<32 |
			uint64(buf[i+4])<<24 | uint64(buf[i+5])<<16 | uint64(buf[i+6])<<8 | uint64(buf[i+7])
		// Take the whole bytes that fit when none of the eight is 0xff.
		if t := ^x; (t-0x0101010101010101)&^t&0x8080808080808080 == 0 {
			k := (64 - n) >> 3
			acc |= x >> n &^ (^uint64(0) >> (n + 8*k))
			return acc, n + 8*k, i + int(k), 1
		}
	}
	for n <= 56 && i < len(buf) {
		c := buf[i]
		if c != 0xff {
			i, nu = i+1, 1
		} else if i+1 < len(buf) && buf[i+1] == 0x00 {
			i, nu = i+2, 2
		} else {
			break
		}
		acc |= uint64(c) << (56 - n)
		n += 8
	}
	return acc, n, i, nu
}

// topUp refills d.bits from the byte buffer as refill does, reading more
// input when the buffer is exhausted. Read errors are left for the exact
// path (ensureNBits) to report when it needs the bits.
func (d *decoder) topUp() {
	for {
		acc, n, i, nu := refill(d.bytes.buf[:d.bytes.j], d.bits.a, uint32(d.bits.n), d.bytes.i, d.bytes.nUnreadable)
		d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = acc, int32(n), i, nu
		if n > 56 || i != d.bytes.j || d.fill() != nil {
			return
		}
	}
}

// decodeACFast decodes one non-zero AC coefficient of a progressive scan,
// returning its value and the run of zeroes before it, when that can be
// done cheaply: the accumulator holds at least 32 bits (after topping it
// up), the code and its extra bits fit in the fast look-up table and the
// run is at most maxRun. Otherwise it consumes no bits and returns ok ==
// false, and the caller takes the general path (decodeHuffman and
// receiveExtend), which handles EOB and ZRL codes, long codes, stuffed
// bytes and the end of the data.
//
// The top-up reads ahead only up to the next marker, so a marker is never
// consumed; bits read ahead at the end of a scan are given back or
// skipped by the same overshoot handling (readFull, findRST, the marker
// loop) that the look-up table's 8-bit lookahead already needs.
func (d *decoder) decodeACFast(h *huffman, maxRun int32) (ac, run int32, ok bool) {
	if h.fast == nil {
		return 0, 0, false
	}
	if d.bits.n < 32 {
		d.topUp()
		if d.bits.n < 32 {
			return 0, 0, false
		}
	}
	e := h.fast.ac[d.bits.a>>(64-fastBits)]
	run = e >> 8 & 0x0f
	if e == 0 || run > maxRun {
		return 0, 0, false
	}
	n := uint32(e & 0xff)
	d.bits.a <<= n
	d.bits.n -= int32(n)
	return e >> 16, run, true
}

// processDHT processes a Define Huffman Table marker, and initializes a huffman
// struct from its contents. Specified in section B.2.4.2.
func (d *decoder) processDHT(n int) error {
	for n > 0 {
		if n < 17 {
			return FormatError("DHT has wrong length")
		}
		if err := d.readFull(d.tmp[:17]); err != nil {
			return err
		}
		tc := d.tmp[0] >> 4
		if tc > maxTc {
			return FormatError("bad Tc value")
		}
		th := d.tmp[0] & 0x0f
		// The baseline th <= 1 restriction is specified in table B.5.
		if th > maxTh || (d.baseline && th > 1) {
			return FormatError("bad Th value")
		}
		h := &d.huff[tc][th]

		// Read nCodes and h.vals (and derive h.nCodes).
		// nCodes[i] is the number of codes with code length i.
		// h.nCodes is the total number of codes.
		h.nCodes = 0
		var nCodes [maxCodeLength]int32
		for i := range nCodes {
			nCodes[i] = int32(d.tmp[i+1])
			h.nCodes += nCodes[i]
		}
		if h.nCodes == 0 {
			return FormatError("Huffman table has zero length")
		}
		if h.nCodes > maxNCodes {
			return FormatError("Huffman table has excessive length")
		}
		n -= int(h.nCodes) + 17
		if n < 0 {
			return FormatError("DHT has wrong length")
		}
		if err := d.readFull(h.vals[:h.nCodes]); err != nil {
			return err
		}

		// Derive the look-up table.
		clear(h.lut[:])
		var x, code uint32
		for i := uint32(0); i < lutSize; i++ {
			code <<= 1
			for j := int32(0); j < nCodes[i]; j++ {
				// The codeLength is 1+i, so shift code by 8-(1+i) to
				// calculate the high bits for every 8-bit sequence
				// whose codeLength's high bits matches code.
				// The high 8 bits of lutValue are the encoded value.
				// The low 8 bits are 1 plus the codeLength.
				base := uint8(code << (7 - i))
				lutValue := uint16(h.vals[x])<<8 | uint16(2+i)
				for k := uint8(0); k < 1<<(7-i); k++ {
					h.lut[base|k] = lutValue
				}
				code++
				x++
			}
		}

		// Derive minCodes, maxCodes, and valsIndices.
		var c, index int32
		for i, n := range nCodes {
			if n == 0 {
				h.minCodes[i] = -1
				h.maxCodes[i] = -1
				h.valsIndices[i] = -1
			} else {
				h.minCodes[i] = c
				h.maxCodes[i] = c + n - 1
				h.valsIndices[i] = index
				c += n
				index += n
			}
			c <<= 1
		}
		h.buildFast()
	}
	return nil
}

// decodeHuffman returns the next Huffman-coded value from the bit-stream,
// decoded according to h.
func (d *decoder) decodeHuffman(h *huffman) (uint8, error) {
	if h.nCodes == 0 {
		return 0, FormatError("uninitialized Huffman table")
	}

	if d.bits.n < 8 {
		if err := d.ensureNBits(8); err != nil {
			if err != errMissingFF00 && err != errShortHuffmanData {
				return 0, err
			}
			// There are no more bytes of data in this segment, but we may still
			// be able to read the next symbol out of the previously read bits.
			// First, undo the readByte that the ensureNBits call made.
			if d.bytes.nUnreadable != 0 {
				d.unreadByteStuffedByte()
			}
			goto slowPath
		}
	}
	if v := h.lut[d.bits.a>>(64-lutSize)]; v != 0 {
		d.take(uint32(v&0xff) - 1)
		return uint8(v >> 8), nil
	}

slowPath:
	for i, code := 0, int32(0); i < maxCodeLength; i++ {
		if d.bits.n == 0 {
			if err := d.ensureNBits(1); err != nil {
				return 0, err
			}
		}
		code |= int32(d.take(1))
		if code <= h.maxCodes[i] {
			return h.vals[h.valsIndices[i]+code-h.minCodes[i]], nil
		}
		code <<= 1
	}
	return 0, FormatError("bad Huffman code")
}

func (d *decoder) decodeBit() (bool, error) {
	if d.bits.n == 0 {
		if err := d.ensureNBits(1); err != nil {
			return false, err
		}
	}
	return d.take(1) != 0, nil
}

func (d *decoder) decodeBits(n int32) (uint32, error) {
	if d.bits.n < n {
		if err := d.ensureNBits(n); err != nil {
			return 0, err
		}
	}
	return d.take(uint32(n)), nil
}
