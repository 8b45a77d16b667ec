package mux

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// Backend is a named legacy server the mux may dial.
type Backend struct {
	// Name is what MWSs ask for, e.g. "shell". 1-64 of [A-Za-z0-9._-].
	Name string `json:"name"`
	// Addr is the legacy server's host:port.
	Addr string `json:"addr"`
}

// ParseBackend parses the flag form NAME=HOST:PORT.
func ParseBackend(s string) (Backend, error) {
	name, addr, ok := strings.Cut(s, "=")
	if !ok {
		return Backend{}, fmt.Errorf("backend %q: want NAME=HOST:PORT", s)
	}
	b := Backend{Name: name, Addr: addr}
	return b, b.validate()
}

var backendNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (b Backend) validate() error {
	var errs []error
	if !backendNameRE.MatchString(b.Name) {
		errs = append(errs, fmt.Errorf("backend name %q: want 1-64 of [A-Za-z0-9._-]", b.Name))
	}
	if _, _, err := net.SplitHostPort(b.Addr); err != nil {
		errs = append(errs, fmt.Errorf("backend %q address %q: %v", b.Name, b.Addr, err))
	}
	return errors.Join(errs...)
}

// Config configures a mux. Every size is a hard limit; see NewDefaultConfig
// for the defaults.
type Config struct {
	// Backends are the legacy servers MWSs may open streams to.
	Backends []Backend
	// TLS is the server's TLS configuration: it must require and verify
	// client certificates of the cluster CA (pki.ServerTLS). Callers are
	// additionally required to hold the MWS role.
	TLS *tls.Config

	// Retention is how many bytes per stream the mux keeps for the owner:
	// bytes read from the legacy server and not yet committed. When it is
	// full the mux stops reading, so TCP flow control holds the legacy
	// server back. Nothing is ever dropped.
	Retention int
	// UpQueue is how many bytes per stream the mux accepts from the owner
	// ahead of writing them to the legacy server. When it is full the
	// owner's Attach channel is not read, so gRPC flow control holds the
	// owner back. Must be at least MaxChunk.
	UpQueue int
	// MaxChunk is the largest Data message in either direction, in bytes.
	// Larger up chunks are refused with InvalidArgument.
	MaxChunk int
	// MaxStreams is how many streams the mux holds at once; Open beyond it
	// fails with ResourceExhausted.
	MaxStreams int
	// OrphanTimeout is how long a stream with no attached owner is kept (so
	// that a handed-over or parked session can be picked up later) before
	// its legacy connection is closed.
	OrphanTimeout time.Duration
	// StandbyTimeout bounds how long a standby Attach (an MWS about to be
	// handed the stream) waits for the handover.
	StandbyTimeout time.Duration
	// DialTimeout bounds connecting to a legacy server.
	DialTimeout time.Duration
	// ShutdownGrace is how long Close waits for RPCs in flight.
	ShutdownGrace time.Duration
}

// NewDefaultConfig returns a Config with production defaults and no
// backends or TLS.
func NewDefaultConfig() Config {
	return Config{
		Retention:      4 << 20,
		UpQueue:        1 << 20,
		MaxChunk:       64 << 10,
		MaxStreams:     10000,
		OrphanTimeout:  10 * time.Minute,
		StandbyTimeout: time.Minute,
		DialTimeout:    5 * time.Second,
		ShutdownGrace:  5 * time.Second,
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for _, b := range c.Backends {
		if err := b.validate(); err != nil {
			errs = append(errs, err)
		}
		if seen[b.Name] {
			errs = append(errs, fmt.Errorf("backend %q configured twice", b.Name))
		}
		seen[b.Name] = true
	}
	if c.TLS == nil {
		errs = append(errs, errors.New("TLS: required (mutual TLS with the cluster CA)"))
	}
	if c.MaxChunk < 1 || c.MaxChunk > 4<<20-1024 {
		errs = append(errs, fmt.Errorf("MaxChunk %d: want 1 to %d bytes", c.MaxChunk, 4<<20-1024))
	}
	if c.Retention < 1 {
		errs = append(errs, fmt.Errorf("Retention %d: want at least 1 byte", c.Retention))
	}
	if c.UpQueue < c.MaxChunk {
		errs = append(errs, fmt.Errorf("UpQueue %d: want at least MaxChunk (%d)", c.UpQueue, c.MaxChunk))
	}
	if c.MaxStreams < 1 {
		errs = append(errs, fmt.Errorf("MaxStreams %d: want at least 1", c.MaxStreams))
	}
	if c.OrphanTimeout <= 0 {
		errs = append(errs, fmt.Errorf("OrphanTimeout %v: want > 0", c.OrphanTimeout))
	}
	if c.StandbyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("StandbyTimeout %v: want > 0", c.StandbyTimeout))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("DialTimeout %v: want > 0", c.DialTimeout))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("ShutdownGrace %v: want >= 0", c.ShutdownGrace))
	}
	return errors.Join(errs...)
}
