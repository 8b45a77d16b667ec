package mux

import "sort"

// retainBuf holds the down bytes [base, base+size) of a stream as a list of
// immutable chunks in offset order. Chunks are never modified once appended,
// so a slice handed to a sender stays valid after the buffer is trimmed.
type retainBuf struct {
	chunks []retainChunk
	size   int
}

type retainChunk struct {
	off uint64
	b   []byte
}

// append adds b, which starts at off (the current end).
func (r *retainBuf) append(off uint64, b []byte) {
	r.chunks = append(r.chunks, retainChunk{off: off, b: b})
	r.size += len(b)
}

// trim forgets every byte before to.
func (r *retainBuf) trim(to uint64) {
	i := 0
	for i < len(r.chunks) {
		c := r.chunks[i]
		end := c.off + uint64(len(c.b))
		if end > to {
			if c.off < to {
				cut := to - c.off
				r.chunks[i] = retainChunk{off: to, b: c.b[cut:]}
				r.size -= int(cut)
			}
			break
		}
		r.size -= len(c.b)
		r.chunks[i] = retainChunk{}
		i++
	}
	if i > 0 {
		// Shift down so the backing array does not grow without bound.
		n := copy(r.chunks, r.chunks[i:])
		clear(r.chunks[n:])
		r.chunks = r.chunks[:n]
	}
}

// slice returns up to max retained bytes starting at from, from one chunk.
// It returns nil if from is not retained.
func (r *retainBuf) slice(from uint64, max int) []byte {
	i := sort.Search(len(r.chunks), func(i int) bool {
		c := r.chunks[i]
		return c.off+uint64(len(c.b)) > from
	})
	if i == len(r.chunks) || r.chunks[i].off > from {
		return nil
	}
	c := r.chunks[i]
	b := c.b[from-c.off:]
	if len(b) > max {
		b = b[:max]
	}
	return b
}
