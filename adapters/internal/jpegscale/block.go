// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpegscale

import "encoding/binary"

// decodeBlock decodes one block of a sequential scan into b, which must be
// zero: the DC coefficient (the difference is added to *dc) and the AC
// coefficients, dequantized with qt (in zig-zag order) as reconstructBlock
// would dequantize them. When storeAC is false the AC coefficients are
// decoded, as they must be to find the next block, but not stored. It
// returns the zig-zag index of the last coefficient stored (0 when only
// the DC coefficient was).
//
// The result, the bits consumed and the errors are those of processSOS's
// general loop (decodeHuffman and receiveExtend for every value). The fast
// path keeps the bit accumulator in locals and decodes a value only when
// at least 32 bits, enough for any code and its extra bits, are buffered;
// the look-up tables (huffFast) and the search for longer codes
// (decodeLong) follow decodeHuffman's procedure. With fewer bits, near a
// marker or at the end of the input, a value is decoded by the general
// path, which reports a truncation as image/jpeg does.
func (d *decoder) decodeBlock(b *block, dcH, acH *huffman, qt *block, dc *int32, storeAC bool) (int32, error) {
	fdc, fac := dcH.fast, acH.fast
	if fdc == nil || fac == nil {
		// An undefined table: the general path reports it.
		return d.decodeBlockGeneral(b, dcH, acH, qt, dc, storeAC)
	}
	buf := d.bytes.buf[:d.bytes.j]
	acc, n := d.bits.a, uint32(d.bits.n)
	i, nu := d.bytes.i, d.bytes.nUnreadable

	// The DC coefficient.
	if n < 32 {
		acc, n, i, nu = refill(buf, acc, n, i, nu)
		if n < 32 && i == len(buf) {
			d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = acc, int32(n), i, nu
			d.topUp()
			buf, acc, n, i, nu = d.bytes.buf[:d.bytes.j], d.bits.a, uint32(d.bits.n), d.bytes.i, d.bytes.nUnreadable
		}
	}
	v := uint32(fdc.sym[acc>>(64-fastBits)])
	if v == 0 {
		v = dcH.decodeLong(acc)
	}
	if s := v >> 8; n >= 32 && v != 0 && s <= 16 {
		l := v & 31
		acc <<= l
		x := int32(acc >> 32 >> ((32 - s) & 63))
		acc <<= s & 31
		n -= l + s
		if x < 1<<s>>1 {
			x += -1<<s + 1
		}
		*dc += x
	} else {
		d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = acc, int32(n), i, nu
		if err := d.decodeDC(dcH, dc); err != nil {
			return 0, err
		}
		buf, acc, n, i, nu = d.bytes.buf[:d.bytes.j], d.bits.a, uint32(d.bits.n), d.bytes.i, d.bytes.nUnreadable
	}
	b[0] = *dc * qt[0]

	// The AC coefficients.
	if d.eobRun > 0 {
		d.eobRun--
		d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = acc, int32(n), i, nu
		return 0, nil
	}
	st := acState{acc: acc, n: n, i: i, zig: 1}
	for {
		i0 := st.i
		var done bool
		if storeAC {
			done = acRun(&st, buf, fac, b, qt)
		} else {
			done = acSkip(&st, buf, fac)
		}
		if st.i != i0 {
			// The fast loops read whole bytes, never stuffed ones.
			nu = 1
		}
		if done {
			break
		}
		// One value the fast loops leave to this slower path.
		if st.n < 32 {
			st.acc, st.n, st.i, nu = refill(buf, st.acc, st.n, st.i, nu)
			if st.n < 32 && st.i == len(buf) {
				d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = st.acc, int32(st.n), st.i, nu
				d.topUp()
				buf, st.acc, st.n, st.i, nu = d.bytes.buf[:d.bytes.j], d.bits.a, uint32(d.bits.n), d.bytes.i, d.bytes.nUnreadable
			}
			if st.n >= 32 {
				continue
			}
			// Too few bits buffered: the general path decodes the value.
			d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = st.acc, int32(st.n), st.i, nu
			z := int32(st.zig)
			done, stored, err := d.decodeAC(acH, b, qt, &z, storeAC)
			if err != nil {
				return 0, err
			}
			if stored {
				st.last = uint32(z)
			}
			if done {
				return int32(st.last), nil
			}
			st.zig = uint32(z) + 1
			buf, st.acc, st.n, st.i, nu = d.bytes.buf[:d.bytes.j], d.bits.a, uint32(d.bits.n), d.bytes.i, d.bytes.nUnreadable
			continue
		}
		v := uint32(fac.sym[st.acc>>(64-fastBits)])
		if v == 0 {
			if v = acH.decodeLong(st.acc); v == 0 {
				// A bad code: the general path reports it.
				d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = st.acc, int32(st.n), st.i, nu
				_, err := d.decodeHuffman(acH)
				return 0, err
			}
		}
		l, val0, val1 := v&31, v>>12, v>>8&0x0f
		st.acc <<= l
		st.n -= l
		if val1 != 0 {
			z := st.zig + val0
			if z >= blockSize {
				// As in processSOS: the block ends, the extra bits stay
				// in the stream.
				break
			}
			x := int32(st.acc >> 32 >> ((32 - val1) & 31))
			st.acc <<= val1 & 15
			st.n -= val1
			if x < 1<<val1>>1 {
				x += -1<<val1 + 1
			}
			if storeAC {
				b[unzig[z]&(blockSize-1)] = x * qt[z]
				st.last = z
			}
			st.zig = z + 1
			continue
		}
		if val0 == 0x0f {
			st.zig += 0x10
			continue
		}
		if val0 != 0 {
			// An end-of-band run (1<<val0 plus val0 bits) ending this
			// block and skipping the AC decoding of the following
			// blocks.
			r := uint32(st.acc >> 32 >> ((32 - val0) & 31))
			st.acc <<= val0 & 15
			st.n -= val0
			d.eobRun = uint16(1<<val0|r) - 1
		}
		// End of block.
		break
	}
	d.bits.a, d.bits.n, d.bytes.i, d.bytes.nUnreadable = st.acc, int32(st.n), st.i, nu
	return int32(st.last), nil
}

// acState is the bit reader and block position decodeBlock shares with
// its fast loops: the accumulator and its bit count, the position in the
// byte buffer, the zig-zag index of the next coefficient and of the last
// one stored.
type acState struct {
	acc       uint64
	n         uint32
	i         int
	zig, last uint32
}

// acRun decodes AC values into b (dequantized with qt) from st.zig on
// while every value is in the fast table f.ac (or is a run of 16 zeroes
// or the end of the block) and 32 bits can be kept buffered from buf
// without meeting a 0xff byte. It reports whether the block ended;
// otherwise the next value is left for decodeBlock's slower path. It
// calls nothing, so that its state stays in registers.
func acRun(st *acState, buf []byte, f *huffFast, b *block, qt *block) bool {
	acc, n, i, zig, last := st.acc, st.n, st.i, st.zig, st.last
	done := false
	for zig < blockSize {
		if n < 32 {
			if i < 0 || i+4 > len(buf) {
				break
			}
			x := binary.BigEndian.Uint32(buf[i:])
			if t := ^x; (t-0x01010101)&^t&0x80808080 != 0 {
				break
			}
			acc |= uint64(x) << ((32 - n) & 31)
			n += 32
			i += 4
		}
		p := acc >> (64 - fastBits)
		if e := f.ac[p]; e != 0 {
			z := zig + uint32(e>>8&0x0f)
			if z >= blockSize {
				break
			}
			l := uint32(e) & 31
			acc <<= l
			n -= l
			b[unzig[z]&(blockSize-1)] = e >> 16 * qt[z]
			last, zig = z, z+1
			continue
		}
		v := f.sym[p]
		if sym := v >> 8; v == 0 || sym != 0x00 && sym != 0xf0 {
			// Not an end of block or a run of 16 zeroes.
			break
		}
		l := uint32(v) & 31
		acc <<= l
		n -= l
		if v>>8 == 0 {
			done = true
			break
		}
		zig += 0x10
	}
	st.acc, st.n, st.i, st.zig, st.last = acc, n, i, zig, last
	return done || zig >= blockSize
}

// acSkip is acRun for a block whose AC coefficients are not needed: it
// only finds where the block ends.
func acSkip(st *acState, buf []byte, f *huffFast) bool {
	acc, n, i, zig := st.acc, st.n, st.i, st.zig
	done := false
	for zig < blockSize {
		if n < 32 {
			if i < 0 || i+4 > len(buf) {
				break
			}
			x := binary.BigEndian.Uint32(buf[i:])
			if t := ^x; (t-0x01010101)&^t&0x80808080 != 0 {
				break
			}
			acc |= uint64(x) << ((32 - n) & 31)
			n += 32
			i += 4
		}
		p := acc >> (64 - fastBits)
		if e := f.ac[p]; e != 0 {
			z := zig + uint32(e>>8&0x0f)
			if z >= blockSize {
				break
			}
			l := uint32(e) & 31
			acc <<= l
			n -= l
			zig = z + 1
			continue
		}
		v := f.sym[p]
		if sym := v >> 8; v == 0 || sym != 0x00 && sym != 0xf0 {
			break
		}
		l := uint32(v) & 31
		acc <<= l
		n -= l
		if v>>8 == 0 {
			done = true
			break
		}
		zig += 0x10
	}
	st.acc, st.n, st.i, st.zig = acc, n, i, zig
	return done || zig >= blockSize
}

// decodeLong decodes a code longer than fastBits from the next 16 bits of
// acc (the most significant ones), continuing decodeHuffman's
// code-by-length search where the fast table stops. It returns the value
// << 8 | the code length, or 0 for a bad code.
func (h *huffman) decodeLong(acc uint64) uint32 {
	for i := uint32(fastBits); i < maxCodeLength; i++ {
		code := int32(acc >> (63 - i))
		if code <= h.maxCodes[i] {
			return uint32(h.vals[h.valsIndices[i]+code-h.minCodes[i]])<<8 | (i + 1)
		}
	}
	return 0
}

// decodeBlockGeneral is decodeBlock by the general path only.
func (d *decoder) decodeBlockGeneral(b *block, dcH, acH *huffman, qt *block, dc *int32, storeAC bool) (int32, error) {
	if err := d.decodeDC(dcH, dc); err != nil {
		return 0, err
	}
	b[0] = *dc * qt[0]
	if d.eobRun > 0 {
		d.eobRun--
		return 0, nil
	}
	last := int32(0)
	for zig := int32(1); zig < blockSize; zig++ {
		done, stored, err := d.decodeAC(acH, b, qt, &zig, storeAC)
		if err != nil {
			return 0, err
		}
		if stored {
			last = zig
		}
		if done {
			break
		}
	}
	return last, nil
}

// decodeDC decodes a DC difference as specified in section F.2.2.1 and
// adds it to *dc.
func (d *decoder) decodeDC(h *huffman, dc *int32) error {
	value, err := d.decodeHuffman(h)
	if err != nil {
		return err
	}
	if value > 16 {
		return UnsupportedError("excessive DC component")
	}
	dcDelta, err := d.receiveExtend(value)
	if err != nil {
		return err
	}
	*dc += dcDelta
	return nil
}

// decodeAC decodes the next value of a sequential scan's AC coefficients,
// as specified in section F.2.2.2, for the coefficient at zig-zag index
// *zig: a coefficient (stored, dequantized, if storeAC), a run of 16 zeroes
// or the end of the block. done reports the end of the block; otherwise
// *zig is the index of the last coefficient covered.
func (d *decoder) decodeAC(h *huffman, b *block, qt *block, zig *int32, storeAC bool) (done, stored bool, err error) {
	value, err := d.decodeHuffman(h)
	if err != nil {
		return false, false, err
	}
	val0 := value >> 4
	val1 := value & 0x0f
	if val1 != 0 {
		*zig += int32(val0)
		if *zig >= blockSize {
			return true, false, nil
		}
		ac, err := d.receiveExtend(val1)
		if err != nil {
			return false, false, err
		}
		if storeAC {
			b[unzig[*zig]] = ac * qt[*zig]
		}
		return false, storeAC, nil
	}
	if val0 != 0x0f {
		d.eobRun = uint16(1 << val0)
		if val0 != 0 {
			bits, err := d.decodeBits(int32(val0))
			if err != nil {
				return false, false, err
			}
			d.eobRun |= uint16(bits)
		}
		d.eobRun--
		return true, false, nil
	}
	*zig += 0x0f
	return false, false, nil
}
