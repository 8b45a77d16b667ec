package adapters

import (
	"errors"
	"fmt"
	"log/slog"
)

// Config configures an Adapter and its Pool.
type Config struct {
	// MaxPixels refuses images whose header declares more than this many
	// pixels (width × height), before any pixel is decoded. A decoded
	// image costs 4 bytes per pixel, so 40e6 pixels is ~160 MB. Must be > 0.
	MaxPixels int64
	// MaxWindows bounds the windows in one geometry document. Must be > 0.
	MaxWindows int
	// DefaultQuality is the JPEG quality (1–100) used when there is no byte
	// budget, and the first quality tried when there is one.
	DefaultQuality int
	// MinQuality is the lowest JPEG quality the budget search may use
	// (1..DefaultQuality). Below it, the image is shrunk instead (if
	// "resize" is allowed) or returned as best effort.
	MinQuality int
	// MaxShrinks bounds how many times an image is shrunk further when even
	// MinQuality misses the budget. 0 disables shrinking for the budget.
	MaxShrinks int
	// Workers is the number of concurrent adaptations in a Pool. Must be > 0.
	Workers int
	// QueueSize is how many submitted adaptations may wait for a worker;
	// beyond it Pool.Adapt blocks (until its context ends). 0 means
	// hand-off only: callers block until a worker is free.
	QueueSize int
	// Logger receives debug records with stable keys; nil discards.
	Logger *slog.Logger
}

// NewDefaultConfig returns a Config for a server with a few cores.
func NewDefaultConfig() Config {
	return Config{
		MaxPixels:      40_000_000,
		MaxWindows:     1024,
		DefaultQuality: 85,
		MinQuality:     10,
		MaxShrinks:     4,
		Workers:        4,
		QueueSize:      64,
	}
}

// Validate reports every problem at once, each wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	if c.MaxPixels <= 0 {
		bad("MaxPixels %d must be > 0", c.MaxPixels)
	}
	if c.MaxWindows <= 0 {
		bad("MaxWindows %d must be > 0", c.MaxWindows)
	}
	if c.DefaultQuality < 1 || c.DefaultQuality > 100 {
		bad("DefaultQuality %d must be 1..100", c.DefaultQuality)
	}
	if c.MinQuality < 1 || c.MinQuality > c.DefaultQuality {
		bad("MinQuality %d must be 1..DefaultQuality", c.MinQuality)
	}
	if c.MaxShrinks < 0 {
		bad("MaxShrinks %d must be >= 0", c.MaxShrinks)
	}
	if c.Workers <= 0 {
		bad("Workers %d must be > 0", c.Workers)
	}
	if c.QueueSize < 0 {
		bad("QueueSize %d must be >= 0", c.QueueSize)
	}
	return errors.Join(errs...)
}
