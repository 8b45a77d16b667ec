package adapters

import (
	"errors"
	"fmt"
)

// Sentinel errors; the typed errors below wrap them so callers can use
// errors.Is for the class and errors.As for the details.
var (
	// ErrCorrupt: the bytes claim a known format but do not decode
	// (corrupt or truncated).
	ErrCorrupt = errors.New("adapters: corrupt or truncated content")
	// ErrTooManyPixels: the declared dimensions exceed Config.MaxPixels;
	// nothing was decoded (decompression-bomb protection).
	ErrTooManyPixels = errors.New("adapters: image has too many pixels")
	// ErrUnsupported: the content's format is not rendered by the device and
	// no permitted conversion produces one it renders.
	ErrUnsupported = errors.New("adapters: unsupported format")
	// ErrInvalidConfig: a Config failed Validate.
	ErrInvalidConfig = errors.New("adapters: invalid config")
	// ErrDuplicate: a characterizer for the same media type is already
	// registered.
	ErrDuplicate = errors.New("adapters: duplicate registration")
	// ErrPoolClosed: Pool.Adapt was called after Close.
	ErrPoolClosed = errors.New("adapters: pool closed")
)

// Budget not met is deliberately not an error: Result.BudgetMet reports it
// and Result.Data holds the best effort.

// DecodeError reports content of a known format that failed to decode.
type DecodeError struct {
	Format string // media type claimed by the magic number
	Err    error  // the decoder's error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("adapters: decode %s: %v", e.Format, e.Err)
}

// Unwrap returns both ErrCorrupt and the decoder's error.
func (e *DecodeError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// PixelLimitError reports an image whose header declares more pixels than
// the configured limit.
type PixelLimitError struct {
	Format        string
	Width, Height int
	Limit         int64
}

func (e *PixelLimitError) Error() string {
	return fmt.Sprintf("adapters: %s of %dx%d exceeds the %d-pixel limit", e.Format, e.Width, e.Height, e.Limit)
}

// Unwrap returns ErrTooManyPixels.
func (e *PixelLimitError) Unwrap() error { return ErrTooManyPixels }

// UnsupportedError reports that no permitted adaptation yields a format the
// device supports.
type UnsupportedError struct {
	Format    string   // the content's media type
	Supported []string // the device's formats
	Reason    string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("adapters: %s not supported by device (formats %v): %s", e.Format, e.Supported, e.Reason)
}

// Unwrap returns ErrUnsupported.
func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }
