package adapters

import (
	"bytes"
	"image"
	"image/draw"
	"image/gif"
	"image/png"
	"io"

	"github.com/imashproject/imash/adapters/internal/jpegenc"
	"github.com/imashproject/imash/adapters/internal/jpegscale"
)

// Codec decodes and encodes one raster format. Planning chooses output
// formats by the capability flags, never by name.
type Codec struct {
	MediaType string
	// SupportsQuality: Encode honours quality (1–100), so a byte budget can
	// be met by lowering it.
	SupportsQuality bool
	// SupportsAlpha: transparency survives encoding; otherwise transparent
	// pixels are flattened onto white first.
	SupportsAlpha bool
	// Decode decodes the first (or only) frame.
	Decode func(r io.Reader) (image.Image, error)
	// DecodeScaled, if not nil, decodes at 1/denom of the full size in
	// each dimension, rounded up, for denom 2, 4 or 8: far cheaper than
	// Decode followed by a resize when the output is much smaller than
	// the source. The decode step uses it when a resize follows; the
	// result must be at least as good as Decode plus a box downscale.
	DecodeScaled func(r io.Reader, denom int) (image.Image, error)
	// Encode writes img; quality is ignored unless SupportsQuality.
	Encode func(w io.Writer, img image.Image, quality int) error
	// Chroma420: Encode keeps no more than 4:2:0 chroma, so an image
	// resampled for it need carry no more.
	Chroma420 bool
	// Prepare, if not nil, does once the part of Encode that does not
	// depend on the quality (for JPEG the colour conversion and the
	// forward DCT): meeting a byte budget encodes one image at several
	// qualities. The result's Encode(q) returns the bytes Encode writes
	// at quality q: a Codec that replaces Encode replaces or clears
	// Prepare (and Chroma420) with it.
	Prepare func(img image.Image) (Prepared, error)
}

// Prepared is an image made ready by Codec.Prepare.
type Prepared interface {
	Encode(quality int) []byte
}

// DefaultCodecs returns the built-in JPEG, PNG and GIF codecs. JPEG
// decodes with a fork of image/jpeg that can also decode at 1/2, 1/4 and
// 1/8 scale, and encodes with a fork of image/jpeg's encoder that writes
// the same bytes faster.
func DefaultCodecs() []Codec {
	return []Codec{
		{
			MediaType: MediaJPEG, SupportsQuality: true, Chroma420: true,
			Decode:       jpegscale.Decode,
			DecodeScaled: jpegscale.DecodeScaled,
			Encode:       encodeJPEG,
			Prepare:      prepareJPEG,
		},
		{
			MediaType: MediaPNG, SupportsAlpha: true,
			Decode: png.Decode,
			Encode: func(w io.Writer, img image.Image, _ int) error {
				enc := png.Encoder{CompressionLevel: png.DefaultCompression}
				return enc.Encode(w, ycbcrToRGBA(img))
			},
		},
		{
			MediaType: MediaGIF, SupportsAlpha: true,
			Decode: gif.Decode,
			Encode: func(w io.Writer, img image.Image, _ int) error {
				return gif.Encode(w, ycbcrToRGBA(img), &gif.Options{NumColors: 256})
			},
		},
	}
}

// encodeJPEG is the default JPEG codec's Encode: the bytes image/jpeg's
// Encode writes at quality q.
func encodeJPEG(w io.Writer, img image.Image, q int) error {
	return jpegenc.Encode(w, fastJPEGInput(img), q)
}

// prepareJPEG is the default JPEG codec's Prepare (see jpegenc.Prepare).
func prepareJPEG(img image.Image) (Prepared, error) {
	c, err := jpegenc.Prepare(fastJPEGInput(img))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// fastJPEGInput gives the JPEG encoder a type it encodes without a
// per-pixel interface call: an opaque NRGBA has the same bytes as an RGBA.
func fastJPEGInput(img image.Image) image.Image {
	if n, ok := img.(*image.NRGBA); ok && n.Opaque() {
		return &image.RGBA{Pix: n.Pix, Stride: n.Stride, Rect: n.Rect}
	}
	return img
}

// ycbcrToRGBA converts a planar YCbCr image (which the PNG and GIF
// encoders read pixel by pixel through its At method) to RGBA; other
// images are returned as they are.
func ycbcrToRGBA(img image.Image) image.Image {
	m, ok := img.(*image.YCbCr)
	if !ok {
		return img
	}
	dst := image.NewRGBA(m.Rect)
	draw.Draw(dst, m.Rect, m, m.Rect.Min, draw.Src)
	return dst
}

// flatten composites img onto white when it has transparency.
// prepare is encode's counterpart for c.Prepare, which must not be nil.
func prepare(c *Codec, img image.Image) (Prepared, error) {
	return c.Prepare(encodable(c, img))
}

// encodable is img as c encodes it: flattened onto white unless c keeps
// transparency.
func encodable(c *Codec, img image.Image) image.Image {
	if c.SupportsAlpha {
		return img
	}
	return flatten(img)
}

func flatten(img image.Image) image.Image {
	if o, ok := img.(interface{ Opaque() bool }); ok && o.Opaque() {
		return img
	}
	b := img.Bounds()
	dst := image.NewRGBA(b)
	draw.Draw(dst, b, image.White, image.Point{}, draw.Src)
	draw.Draw(dst, b, img, b.Min, draw.Over)
	return dst
}

func encode(c *Codec, img image.Image, quality int) ([]byte, error) {
	var buf bytes.Buffer
	if err := c.Encode(&buf, encodable(c, img), quality); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
