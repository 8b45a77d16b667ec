// Package mws is imash's middleware server: it mediates all communication
// between client devices and legacy servers (through the mux), keeps a copy
// of every server object on the way, and manages application sessions.
package mws

import (
	"crypto/tls"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/imashproject/imash/adapters"
	"github.com/imashproject/imash/mws/objcache"
)

// Users verifies user passwords (users.Store implements it).
type Users interface {
	// Verify returns nil if password is the user's password.
	Verify(user, password string) error
}

// Config configures an MWS. See NewDefaultConfig for the defaults.
type Config struct {
	// Name is this MWS's name; it must equal the name in its certificate.
	Name string
	// TLS is the device-facing server config (pki.ServerTLS): devices
	// present device-role certificates of the cluster CA.
	TLS *tls.Config
	// MuxAddr and MuxTLS reach the mux (pki.ClientTLS with this MWS's
	// certificate, accepting the mux role).
	MuxAddr string
	MuxTLS  *tls.Config
	// HTTPBackends are the mux backends that speak HTTP and are served by
	// Get. Every mux backend may be used as a raw Stream.
	HTTPBackends []string
	// Users verifies logins.
	Users Users

	// Cache configures the object cache.
	Cache objcache.Config

	// CredentialTTL is how long a login credential is valid.
	CredentialTTL time.Duration
	// MaxSessions bounds the sessions this MWS holds; MaxSessionsPerUser
	// bounds one user's.
	MaxSessions        int
	MaxSessionsPerUser int
	// SessionIdleTimeout ends a session no call has touched for this long
	// (and that has no stream relayed and no handoff in progress), closing
	// its legacy streams: devices that vanish do not hold sessions forever.
	SessionIdleTimeout time.Duration
	// MaxStreamsPerSession bounds a session's open raw streams.
	MaxStreamsPerSession int
	// MaxPathBytes bounds a Get path; MaxHeaders and MaxHeaderBytes bound
	// the headers a device passes along.
	MaxPathBytes   int
	MaxHeaders     int
	MaxHeaderBytes int
	// MaxLabels and MaxLabelBytes bound a session's labels; MaxAppBytes
	// its application name.
	MaxLabels     int
	MaxLabelBytes int
	MaxAppBytes   int
	// GetChunk is the size of the body chunks Get sends.
	GetChunk int
	// HTTPIdleConns bounds idle keep-alive legacy connections per backend;
	// HTTPMaxConns bounds all of them (requests beyond it wait for a
	// connection, so a burst of sessions cannot flood a legacy server).
	HTTPIdleConns int
	HTTPMaxConns  int
	// HTTPTimeout bounds one exchange with a legacy HTTP server.
	HTTPTimeout time.Duration

	// Policy says which sessions may move to which device classes (nil:
	// every move is allowed).
	Policy *Policy
	// Adapter adapts server objects for a handoff's target. Nil: the
	// content adaptation pipeline (ContentAdapter) for devices that gave
	// profiles at login, objects unchanged for the others.
	Adapter Adapter
	// ContentAdapter is the adaptation pipeline Get and handoffs use (nil:
	// adapters with their defaults; set Config.NoAdaptation to turn it off).
	ContentAdapter *adapters.Adapter
	// NoAdaptation delivers every object unchanged.
	NoAdaptation bool
	// VariantCacheBytes bounds the cache of adapted variants.
	VariantCacheBytes int64
	// MaxProfiles bounds the profile documents a device gives at login.
	MaxProfiles int
	// ProbeInterval is how often the MWS measures each device's round-trip
	// time with a Probe on its Events channel (and once as the channel
	// opens); 0 turns probing off. Goodput is measured on large transfers
	// regardless. See NetworkOf.
	ProbeInterval time.Duration
	// ConsentTimeout bounds the wait for an online target's consent;
	// ParkExpiry how long a handoff to an offline device stays parked.
	ConsentTimeout time.Duration
	ParkExpiry     time.Duration
	// SavepointTimeout bounds the source's upload; ResumeTimeout the
	// target's Resume after the summary.
	SavepointTimeout time.Duration
	ResumeTimeout    time.Duration
	// MaxSavepointElements, MaxSavepointBytes and MaxElementBytes bound a
	// savepoint (application data; server objects count by reference).
	MaxSavepointElements int
	MaxSavepointBytes    int
	MaxElementBytes      int

	// Cluster configures membership, MASH, FASH, balancing and drain.
	Cluster ClusterConfig
}

// NewDefaultConfig returns production defaults (no name, TLS, mux or
// users).
func NewDefaultConfig() Config {
	return Config{
		Cache:                objcache.NewDefaultConfig(),
		CredentialTTL:        12 * time.Hour,
		MaxSessions:          100000,
		MaxSessionsPerUser:   64,
		SessionIdleTimeout:   24 * time.Hour,
		MaxStreamsPerSession: 16,
		MaxPathBytes:         4096,
		MaxHeaders:           32,
		MaxHeaderBytes:       8192,
		MaxLabels:            16,
		MaxLabelBytes:        64,
		MaxAppBytes:          64,
		GetChunk:             256 << 10,
		HTTPIdleConns:        8,
		HTTPMaxConns:         64,
		HTTPTimeout:          60 * time.Second,
		ConsentTimeout:       30 * time.Second,
		ParkExpiry:           5 * time.Minute,
		SavepointTimeout:     30 * time.Second,
		ResumeTimeout:        30 * time.Second,
		MaxSavepointElements: 1024,
		MaxSavepointBytes:    16 << 20,
		MaxElementBytes:      3 << 20,
		VariantCacheBytes:    128 << 20,
		MaxProfiles:          8,
		ProbeInterval:        5 * time.Second,
		Cluster:              NewDefaultClusterConfig(),
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("name %q: want 1-64 of [A-Za-z0-9._-]", c.Name))
	}
	if c.TLS == nil {
		errs = append(errs, errors.New("TLS: required"))
	}
	if c.MuxAddr == "" || c.MuxTLS == nil {
		errs = append(errs, errors.New("mux address and TLS: required"))
	}
	for _, b := range c.HTTPBackends {
		if !nameRE.MatchString(b) {
			errs = append(errs, fmt.Errorf("HTTP backend %q: not a backend name", b))
		}
	}
	if c.Users == nil {
		errs = append(errs, errors.New("users: required"))
	}
	if err := c.Cache.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("cache: %w", err))
	}
	positive := []struct {
		name string
		v    int
	}{
		{"MaxSessions", c.MaxSessions}, {"MaxSessionsPerUser", c.MaxSessionsPerUser},
		{"MaxStreamsPerSession", c.MaxStreamsPerSession}, {"MaxPathBytes", c.MaxPathBytes},
		{"MaxHeaders", c.MaxHeaders}, {"MaxHeaderBytes", c.MaxHeaderBytes}, {"MaxLabels", c.MaxLabels},
		{"MaxLabelBytes", c.MaxLabelBytes}, {"MaxAppBytes", c.MaxAppBytes}, {"GetChunk", c.GetChunk},
		{"HTTPIdleConns", c.HTTPIdleConns}, {"HTTPMaxConns", c.HTTPMaxConns}, {"MaxSavepointElements", c.MaxSavepointElements},
		{"MaxSavepointBytes", c.MaxSavepointBytes}, {"MaxElementBytes", c.MaxElementBytes}, {"MaxProfiles", c.MaxProfiles},
	}
	for _, p := range positive {
		if p.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want at least 1", p.name, p.v))
		}
	}
	if c.GetChunk > 3<<20 {
		errs = append(errs, fmt.Errorf("GetChunk %d: want at most 3 MiB (gRPC message limit)", c.GetChunk))
	}
	if c.CredentialTTL <= 0 {
		errs = append(errs, fmt.Errorf("CredentialTTL %v: want > 0", c.CredentialTTL))
	}
	if !c.NoAdaptation && c.VariantCacheBytes < 1 {
		errs = append(errs, fmt.Errorf("VariantCacheBytes %d: want at least 1", c.VariantCacheBytes))
	}
	if c.MaxElementBytes > 3<<20 {
		errs = append(errs, fmt.Errorf("MaxElementBytes %d: want at most 3 MiB (one gRPC message)", c.MaxElementBytes))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ConsentTimeout", c.ConsentTimeout}, {"ParkExpiry", c.ParkExpiry}, {"SessionIdleTimeout", c.SessionIdleTimeout}, {"SavepointTimeout", c.SavepointTimeout}, {"ResumeTimeout", c.ResumeTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: want > 0", d.name, d.v))
		}
	}
	if c.HTTPTimeout <= 0 {
		errs = append(errs, fmt.Errorf("HTTPTimeout %v: want > 0", c.HTTPTimeout))
	}
	if err := c.Cluster.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: %w", err))
	}
	if c.ProbeInterval != 0 && c.ProbeInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("ProbeInterval %v: want 0 (off) or at least 100ms", c.ProbeInterval))
	}
	return errors.Join(errs...)
}
