package adapters

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"math/bits"
	"slices"
	"sync"

	"github.com/imashproject/imash/adapters/internal/jpegscale"
)

// Media types produced by the built-in characterizers.
const (
	MediaJPEG     = "image/jpeg"
	MediaPNG      = "image/png"
	MediaGIF      = "image/gif"
	MediaGeometry = "application/vnd.imash.geometry+xml"
)

// Capabilities describe what a registered characterizer handles.
type Capabilities struct {
	// MediaType is the type it recognises; unique within a Registry.
	MediaType string
	// Description is for humans (logs, listings).
	Description string
	// Raster reports that the content decodes to an image.Image, so the
	// image adapters (resize, recolor, reencode, convert) apply.
	Raster bool
	// Geometry reports a window-geometry document (the geometry adapter
	// applies).
	Geometry bool
}

// Characterizer recognises and describes one content type. Implementations
// must be safe for concurrent use and must not decode pixels: Characterize
// reads headers only, so it is cheap and bounded for any input.
type Characterizer interface {
	Capabilities() Capabilities
	// Sniff reports whether data is of this type, from its leading bytes.
	Sniff(data []byte) bool
	// Characterize describes data. It returns a *DecodeError for content
	// whose header does not parse and a *PixelLimitError when the declared
	// dimensions exceed maxPixels.
	Characterize(data []byte, maxPixels int64) (Attributes, error)
}

// Registry holds characterizers, tried in registration order. It is safe for
// concurrent use.
type Registry struct {
	mu    sync.RWMutex
	chars []Characterizer
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

// NewDefaultRegistry returns a registry with the JPEG, PNG, GIF and
// window-geometry characterizers.
func NewDefaultRegistry() *Registry {
	r := NewRegistry()
	for _, c := range []Characterizer{JPEGCharacterizer{}, PNGCharacterizer{}, GIFCharacterizer{}, GeometryCharacterizer{}} {
		if err := r.Register(c); err != nil {
			panic(err) // the built-ins have distinct media types
		}
	}
	return r
}

// Register adds c. A second characterizer for the same media type is an
// error wrapping ErrDuplicate.
func (r *Registry) Register(c Characterizer) error {
	caps := c.Capabilities()
	if caps.MediaType == "" {
		return fmt.Errorf("%w: characterizer without a media type", ErrInvalidConfig)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, old := range r.chars {
		if old.Capabilities().MediaType == caps.MediaType {
			return fmt.Errorf("%w: characterizer for %s", ErrDuplicate, caps.MediaType)
		}
	}
	r.chars = append(r.chars, c)
	return nil
}

// Capabilities lists the registered characterizers' capabilities in order.
func (r *Registry) Capabilities() []Capabilities {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Capabilities, len(r.chars))
	for i, c := range r.chars {
		out[i] = c.Capabilities()
	}
	return out
}

// Lookup returns the first characterizer whose Sniff accepts data, or
// ok=false for unknown content (which is passed through, not an error).
func (r *Registry) Lookup(data []byte) (c Characterizer, ok bool) {
	r.mu.RLock()
	chars := slices.Clone(r.chars)
	r.mu.RUnlock()
	for _, c := range chars {
		if c.Sniff(data) {
			return c, true
		}
	}
	return nil, false
}

// rasterAttributes reads an image header with decodeConfig and checks the
// pixel limit before anything else is decoded.
func rasterAttributes(data []byte, mt string, maxPixels int64, decodeConfig func([]byte) (image.Config, error)) (Attributes, error) {
	cfg, err := decodeConfig(data)
	if err != nil {
		return Attributes{}, &DecodeError{Format: mt, Err: err}
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return Attributes{}, &DecodeError{Format: mt, Err: fmt.Errorf("invalid dimensions %dx%d", cfg.Width, cfg.Height)}
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return Attributes{}, &PixelLimitError{Format: mt, Width: cfg.Width, Height: cfg.Height, Limit: maxPixels}
	}
	depth, gray, alpha := modelDepth(cfg.ColorModel)
	return Attributes{
		Format: mt, Width: cfg.Width, Height: cfg.Height,
		ColorDepth: depth, Grayscale: gray, Alpha: alpha, Bytes: int64(len(data)),
	}, nil
}

// modelDepth maps a colour model to bits per pixel. A palette counts as
// the bits needed to index it: 256 colours are 8 bits whatever the colours.
func modelDepth(m color.Model) (depth int, gray, alpha bool) {
	switch m {
	case color.GrayModel:
		return 8, true, false
	case color.Gray16Model:
		return 16, true, false
	case color.YCbCrModel, color.NYCbCrAModel:
		return 24, false, m == color.NYCbCrAModel
	case color.CMYKModel:
		return 32, false, false
	case color.RGBAModel, color.NRGBAModel:
		return 32, false, true
	case color.RGBA64Model, color.NRGBA64Model:
		return 64, false, true
	}
	if p, ok := m.(color.Palette); ok {
		n := max(len(p), 2)
		alpha := false
		for _, c := range p {
			if _, _, _, a := c.RGBA(); a != 0xffff {
				alpha = true
				break
			}
		}
		return bits.Len(uint(n - 1)), false, alpha
	}
	return 24, false, false
}

// JPEGCharacterizer recognises JPEG by its SOI marker.
type JPEGCharacterizer struct{}

// Capabilities implements Characterizer.
func (JPEGCharacterizer) Capabilities() Capabilities {
	return Capabilities{MediaType: MediaJPEG, Description: "JPEG (baseline and progressive), header only", Raster: true}
}

// Sniff implements Characterizer.
func (JPEGCharacterizer) Sniff(data []byte) bool {
	return bytes.HasPrefix(data, []byte{0xFF, 0xD8, 0xFF})
}

// Characterize implements Characterizer. The header is read by the same
// parser that decodes, so the dimensions checked against maxPixels are
// the ones the decoder allocates for.
func (JPEGCharacterizer) Characterize(data []byte, maxPixels int64) (Attributes, error) {
	return rasterAttributes(data, MediaJPEG, maxPixels, func(b []byte) (image.Config, error) {
		return jpegscale.DecodeConfig(bytes.NewReader(b))
	})
}

// PNGCharacterizer recognises PNG by its 8-byte signature.
type PNGCharacterizer struct{}

// Capabilities implements Characterizer.
func (PNGCharacterizer) Capabilities() Capabilities {
	return Capabilities{MediaType: MediaPNG, Description: "PNG, header only", Raster: true}
}

// Sniff implements Characterizer.
func (PNGCharacterizer) Sniff(data []byte) bool {
	return bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n"))
}

// Characterize implements Characterizer.
func (PNGCharacterizer) Characterize(data []byte, maxPixels int64) (Attributes, error) {
	return rasterAttributes(data, MediaPNG, maxPixels, func(b []byte) (image.Config, error) {
		return png.DecodeConfig(bytes.NewReader(b))
	})
}

// GIFCharacterizer recognises GIF87a and GIF89a.
type GIFCharacterizer struct{}

// Capabilities implements Characterizer.
func (GIFCharacterizer) Capabilities() Capabilities {
	return Capabilities{MediaType: MediaGIF, Description: "GIF, header only (adaptation keeps the first frame)", Raster: true}
}

// Sniff implements Characterizer.
func (GIFCharacterizer) Sniff(data []byte) bool {
	return bytes.HasPrefix(data, []byte("GIF87a")) || bytes.HasPrefix(data, []byte("GIF89a"))
}

// Characterize implements Characterizer.
func (GIFCharacterizer) Characterize(data []byte, maxPixels int64) (Attributes, error) {
	return rasterAttributes(data, MediaGIF, maxPixels, func(b []byte) (image.Config, error) {
		return gif.DecodeConfig(bytes.NewReader(b))
	})
}
