package objcache

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by Fetch after Close.
var ErrClosed = errors.New("objcache: cache closed")

// ErrInvalidRequest is returned by Fetch for a nil request or one without a
// URL. Nothing is sent upstream.
var ErrInvalidRequest = errors.New("objcache: invalid request")

// UpstreamError reports a failed exchange with a legacy server: the request
// could not be sent, the response was malformed (a garbage status line, bad
// headers), or the body ended early (shorter than its Content-Length, or the
// connection closed mid-chunk). When Fetch returns one, nothing of that
// response was cached. A streamed Result.Body returns one from Read for the
// same failures.
type UpstreamError struct {
	// Backend is the legacy server's name as given to Fetch.
	Backend string
	// Op is what failed: "round trip" (sending the request or reading the
	// status line and headers) or "read body".
	Op string
	// Err is the underlying error, e.g. io.ErrUnexpectedEOF.
	Err error
}

func (e *UpstreamError) Error() string {
	return fmt.Sprintf("objcache: backend %q: %s: %v", e.Backend, e.Op, e.Err)
}

// Unwrap returns the underlying error, so errors.Is(err, io.ErrUnexpectedEOF)
// and errors.Is(err, context.Canceled) work through an UpstreamError.
func (e *UpstreamError) Unwrap() error { return e.Err }
