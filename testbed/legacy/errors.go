package legacy

import "errors"

// ErrInvalidConfig is wrapped by every error reporting a bad configuration
// or argument; the message names each problem.
var ErrInvalidConfig = errors.New("legacy: invalid configuration")
