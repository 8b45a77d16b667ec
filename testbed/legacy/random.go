package legacy

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
)

// RandomStream returns an infinite reader of deterministic pseudo-random
// bytes for seed (ChaCha8 keyed by the seed). Reads always fill the whole
// buffer and never fail, and the byte sequence does not depend on how reads
// are sized. A StreamServer configured with Seed S and SendBytes N sends
// exactly the first N bytes of RandomStream(S), so a test can compute the
// expected data and hash itself, or generate an upload payload.
func RandomStream(seed uint64) io.Reader {
	return &randomStream{c: rand.NewChaCha8(chachaSeed(seed))}
}

// randomStream hides the generator so callers cannot interleave Uint64
// calls, which would change the byte sequence.
type randomStream struct {
	c *rand.ChaCha8
}

func (r *randomStream) Read(p []byte) (int, error) {
	return r.c.Read(p)
}

func chachaSeed(seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:8], seed)
	copy(s[8:], "imash/legacy/stream")
	return s
}
