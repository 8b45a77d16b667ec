package objcache

import (
	"errors"
	"fmt"
	"time"
)

// Config sizes a Cache. Start from NewDefaultConfig; the zero Config is not
// valid.
type Config struct {
	// MaxBytes is the cost budget of the object store, in bytes. An object
	// costs its body length plus the bytes of its header names and values.
	// When the budget is full, ristretto evicts or refuses objects by how
	// often they are used, so a rarely used new object may not be admitted.
	// Must be at least MaxObjectBytes.
	MaxBytes int64
	// MaxObjectBytes is the largest body, in bytes, that Fetch buffers,
	// digests and may store. A larger body — announced by Content-Length, or
	// found while reading a body of unknown length — is handed to the caller
	// as a stream, holding at most MaxObjectBytes+1 bytes in memory, and is
	// never cached. Must be > 0.
	MaxObjectBytes int64
	// MaxEntries bounds the index: at most this many request keys, and at
	// most this many Vary records (one per URL and user), are remembered; the
	// least recently used are forgotten first. Must be > 0.
	MaxEntries int
	// Now is the clock used for freshness (max-age, Expires, Age of an
	// entry). Nil means time.Now; tests inject a fake clock.
	Now func() time.Time
}

// NewDefaultConfig returns a Config for an MWS: 256 MiB of objects, objects up
// to 2 MiB (the testbed workload's largest image is 1.25 MB), 64 Ki index
// entries, and the wall clock.
func NewDefaultConfig() Config {
	return Config{
		MaxBytes:       256 << 20,
		MaxObjectBytes: 2 << 20,
		MaxEntries:     64 << 10,
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxObjectBytes < 1 {
		errs = append(errs, fmt.Errorf("MaxObjectBytes %d: want at least 1 byte", c.MaxObjectBytes))
	}
	if c.MaxBytes < 1 || c.MaxBytes < c.MaxObjectBytes {
		errs = append(errs, fmt.Errorf("MaxBytes %d: want at least 1 byte and at least MaxObjectBytes (%d)", c.MaxBytes, c.MaxObjectBytes))
	}
	if c.MaxEntries < 1 {
		errs = append(errs, fmt.Errorf("MaxEntries %d: want at least 1", c.MaxEntries))
	}
	return errors.Join(errs...)
}

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
