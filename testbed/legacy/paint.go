package legacy

import (
	"image"
	"math"
	"math/rand/v2"
)

// scene describes one synthetic photograph independently of its pixel
// dimensions: everything is in unit coordinates, so the same scene can be
// rendered at any size, and — because per-pixel sensor noise dominates the
// encoded size — the JPEG size grows almost linearly with the pixel count.
type scene struct {
	aspect float64 // width / height
	gray   bool

	// Background: a linear gradient plus a coarse "cloud" grid that is
	// bilinearly interpolated, giving low-frequency structure.
	y0, gx, gy         float64
	cb0, cbx, cr0, cry float64
	cloud              [cloudN + 1][cloudN + 1]float64

	shapes []shape

	noiseY, noiseC int // peak-to-peak sensor noise amplitude, 0..255
	noiseSeed      uint64
}

const cloudN = 6

type shape struct {
	ellipse        bool
	cx, cy, rx, ry float64 // unit coordinates
	dy, dcb, dcr   int
}

func newScene(rng *rand.Rand, gray bool) *scene {
	s := &scene{
		aspect:    []float64{4.0 / 3, 3.0 / 2, 16.0 / 9, 1, 3.0 / 4, 2.0 / 3}[rng.IntN(6)],
		gray:      gray,
		y0:        40 + 170*rng.Float64(),
		gx:        -60 + 120*rng.Float64(),
		gy:        -60 + 120*rng.Float64(),
		cb0:       90 + 76*rng.Float64(),
		cbx:       -30 + 60*rng.Float64(),
		cr0:       90 + 76*rng.Float64(),
		cry:       -30 + 60*rng.Float64(),
		noiseY:    100 + rng.IntN(100),
		noiseC:    40 + rng.IntN(60),
		noiseSeed: rng.Uint64(),
	}
	for i := range s.cloud {
		for j := range s.cloud[i] {
			s.cloud[i][j] = -35 + 70*rng.Float64()
		}
	}
	for range 3 + rng.IntN(6) {
		s.shapes = append(s.shapes, shape{
			ellipse: rng.IntN(2) == 0,
			cx:      rng.Float64(),
			cy:      rng.Float64(),
			rx:      0.04 + 0.3*rng.Float64(),
			ry:      0.04 + 0.3*rng.Float64(),
			dy:      -70 + rng.IntN(141),
			dcb:     -40 + rng.IntN(81),
			dcr:     -40 + rng.IntN(81),
		})
	}
	return s
}

// dims returns the width and height closest to pixels pixels at the scene's
// aspect ratio, at least 1×1.
func (s *scene) dims(pixels float64) (w, h int) {
	w = max(1, int(math.Round(math.Sqrt(pixels*s.aspect))))
	h = max(1, int(math.Round(pixels/float64(w))))
	return w, h
}

// render draws the scene at w×h: an *image.Gray for gray scenes, else a
// 4:2:0 *image.YCbCr, which image/jpeg encodes without colour conversion.
func (s *scene) render(w, h int) image.Image {
	r := image.Rect(0, 0, w, h)
	noise := newNoise(s.noiseSeed ^ uint64(w)<<32 ^ uint64(h))
	if s.gray {
		m := image.NewGray(r)
		s.paintLuma(m.Pix, m.Stride, w, h, noise)
		return m
	}
	m := image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
	s.paintLuma(m.Y, m.YStride, w, h, noise)
	cw, ch := (w+1)/2, (h+1)/2
	s.paintChroma(m.Cb, m.CStride, cw, ch, s.cb0, s.cbx, 0, func(sh *shape) int { return sh.dcb }, noise)
	s.paintChroma(m.Cr, m.CStride, cw, ch, s.cr0, 0, s.cry, func(sh *shape) int { return sh.dcr }, noise)
	return m
}

func (s *scene) paintLuma(pix []uint8, stride, w, h int, noise *noise) {
	// Bilinear cloud interpolation, with the per-column cell index and
	// fraction computed once.
	col := make([]int, w)
	frac := make([]float64, w)
	for x := range w {
		f := float64(x) / float64(w) * cloudN
		col[x] = min(int(f), cloudN-1)
		frac[x] = f - float64(col[x])
	}
	var row [cloudN + 1]float64
	for y := range h {
		v := float64(y) / float64(h)
		fy := v * cloudN
		r0 := min(int(fy), cloudN-1)
		ty := fy - float64(r0)
		for j := range row {
			row[j] = s.cloud[r0][j]*(1-ty) + s.cloud[r0+1][j]*ty
		}
		base := s.y0 + s.gy*v
		line := pix[y*stride : y*stride+w]
		for x := range line {
			c := row[col[x]]*(1-frac[x]) + row[col[x]+1]*frac[x]
			line[x] = clamp8(int(base + s.gx*float64(x)/float64(w) + c))
		}
	}
	s.paintShapes(pix, stride, w, h, func(sh *shape) int { return sh.dy })
	noise.add(pix, stride, w, h, s.noiseY)
}

func (s *scene) paintChroma(pix []uint8, stride, w, h int, c0, cx, cy float64, delta func(*shape) int, noise *noise) {
	for y := range h {
		line := pix[y*stride : y*stride+w]
		base := c0 + cy*float64(y)/float64(h)
		for x := range line {
			line[x] = clamp8(int(base + cx*float64(x)/float64(w)))
		}
	}
	s.paintShapes(pix, stride, w, h, delta)
	noise.add(pix, stride, w, h, s.noiseC)
}

// paintShapes adds each shape's offset inside its bounding box only, so the
// cost is proportional to the shapes' area rather than pixels × shapes.
func (s *scene) paintShapes(pix []uint8, stride, w, h int, delta func(*shape) int) {
	fw, fh := float64(w), float64(h)
	for i := range s.shapes {
		sh := &s.shapes[i]
		d := delta(sh)
		x0, x1 := max(0, int((sh.cx-sh.rx)*fw)), min(w, int((sh.cx+sh.rx)*fw)+1)
		y0, y1 := max(0, int((sh.cy-sh.ry)*fh)), min(h, int((sh.cy+sh.ry)*fh)+1)
		for y := y0; y < y1; y++ {
			dy := ((float64(y)+0.5)/fh - sh.cy) / sh.ry
			line := pix[y*stride : y*stride+w]
			for x := x0; x < x1; x++ {
				if sh.ellipse {
					dx := ((float64(x)+0.5)/fw - sh.cx) / sh.rx
					if dx*dx+dy*dy > 1 {
						continue
					}
				}
				line[x] = clamp8(int(line[x]) + d)
			}
		}
	}
}

func clamp8(v int) uint8 {
	return uint8(min(255, max(0, v)))
}

// noise is a xorshift64* generator handing out eight noise samples per
// 64-bit draw; it is much cheaper per pixel than math/rand.
type noise struct{ s uint64 }

func newNoise(seed uint64) *noise {
	return &noise{s: seed | 1}
}

func (n *noise) next() uint64 {
	n.s ^= n.s >> 12
	n.s ^= n.s << 25
	n.s ^= n.s >> 27
	return n.s * 0x2545F4914F6CDD1D
}

// add adds uniform noise of peak-to-peak amplitude amp to every pixel.
func (n *noise) add(pix []uint8, stride, w, h, amp int) {
	if amp <= 0 {
		return
	}
	half := amp / 2
	for y := range h {
		line := pix[y*stride : y*stride+w]
		var r uint64
		for x := range line {
			if x&7 == 0 {
				r = n.next()
			}
			d := int(r&0xff)*amp>>8 - half
			r >>= 8
			line[x] = clamp8(int(line[x]) + d)
		}
	}
}
