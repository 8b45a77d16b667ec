// Package profiles describes devices, networks, users and applications as
// XML profiles (paper §3.3.2) and merges them into the constraints that
// content adaptation must meet.
package profiles

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Constraints are the merged requirements one device's content must meet.
// The zero value of a field means "no constraint".
type Constraints struct {
	// MaxWidth and MaxHeight bound an image's pixel dimensions (the
	// display, or the viewport).
	MaxWidth, MaxHeight int
	// ColorDepth bounds bits per pixel (e.g. 12 for a 4096-colour PDA, 8
	// for grayscale); 24 or more means full colour.
	ColorDepth int
	// Grayscale asks for grayscale output.
	Grayscale bool
	// Formats are the media types the device can render, most preferred
	// first (e.g. "image/jpeg", "image/png"). Empty means any.
	Formats []string
	// ByteBudget bounds an object's encoded size: the network's bandwidth
	// times the user's patience (bytes per object).
	ByteBudget int64
	// NoAdaptation forbids adapting at all (any profile may say so).
	NoAdaptation bool
	// Allowed lists the adaptations the application accepts by name
	// ("resize", "recolor", "reencode", "convert", "geometry", "framerate");
	// empty means all.
	Allowed []string
	// MaxFrameRate bounds frames per second of a frame-based stream.
	MaxFrameRate float64
}

// Allows reports whether the named adaptation is permitted.
func (c Constraints) Allows(adaptation string) bool {
	if c.NoAdaptation {
		return false
	}
	return len(c.Allowed) == 0 || slices.Contains(c.Allowed, adaptation)
}

// Supports reports whether the device renders media type mt.
func (c Constraints) Supports(mt string) bool {
	return len(c.Formats) == 0 || slices.Contains(c.Formats, mt)
}

// Digest identifies the constraints, for caching adapted variants by
// (object digest, constraint digest).
func (c Constraints) Digest() string {
	var b strings.Builder
	fmt.Fprintf(&b, "w=%d;h=%d;d=%d;g=%t;f=%s;b=%d;n=%t;a=%s;r=%g",
		c.MaxWidth, c.MaxHeight, c.ColorDepth, c.Grayscale, strings.Join(c.Formats, ","),
		c.ByteBudget, c.NoAdaptation, strings.Join(c.Allowed, ","), c.MaxFrameRate)
	sum := sha256.Sum256([]byte(b.String()))
	return "sha256:" + hex.EncodeToString(sum[:16])
}
