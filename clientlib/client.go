// Package clientlib is what an application links to use imash: it dials a
// middleware server (MWS) with the device's certificate, logs a user in,
// opens application sessions, fetches objects from legacy HTTP servers
// through the MWS's cache, and opens byte streams (net.Conn) to legacy
// servers that survive the session's moves.
package clientlib

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/imashproject/imash/internal/pki"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// Config is what a device needs to reach an MWS.
type Config struct {
	// Certificate is the device's certificate (role device) and key.
	Certificate tls.Certificate
	// Roots holds the cluster CA; the MWS must present an MWS certificate
	// issued by it.
	Roots *x509.CertPool
	// MaxObjectBytes bounds the body of one Get (0: 256 MiB).
	MaxObjectBytes int64
	// Profiles are XML profile documents (device, network, user,
	// application; see package profiles) given to the MWS at login: it
	// adapts every object for this device accordingly, on Get and when a
	// session is handed to it. None: objects arrive unchanged.
	Profiles [][]byte
	// Dialer, when set, opens every network connection the Client makes
	// to an MWS: the one to the address given to Dial and those it opens
	// to follow a session that moved to another MWS. addr is the MWS's
	// host:port (with a host name resolved to an IP address); TLS runs
	// over the connection Dialer returns, and ctx bounds the dial. Use it
	// to reach the MWSs through a proxy, a tunnel or an emulated link. Nil
	// dials plain TCP.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// Log receives the library's logs (nil discards).
	Log *slog.Logger
}

// ErrNotLoggedIn is returned by calls that need a logged-in user.
var ErrNotLoggedIn = errors.New("clientlib: not logged in")

// Client is a device's connection to an MWS. It is safe for concurrent use.
// When the cluster moves one of its sessions to another MWS (MASH), the
// Client follows by itself: it connects there (resuming TLS with the
// cluster's shared session tickets), presents the move token, and the
// session's calls and streams go on there.
type Client struct {
	cfg  Config
	tls  *tls.Config // shared by every route: one TLS session cache
	log  *slog.Logger
	seed string // the address Dial was given: asked for the MWS list last

	mu       sync.RWMutex
	home     *route // the MWS logged in to, or the one sessions moved to
	routes   map[string]*route
	user     string
	device   string
	peers    []*mwsv1.MWSAddr
	sessions map[string]*Session
	stats    MoveStats
}

// Dial connects to the MWS at addr. The TLS handshake happens on first use.
func Dial(ctx context.Context, addr string, cfg Config) (*Client, error) {
	if cfg.Roots == nil || len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("clientlib: Config needs the device certificate and the cluster CA")
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = 256 << 20
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := pki.ClientTLS(cfg.Certificate, cfg.Roots, pki.RoleMWS)
	// One server name for every MWS, so that a session ticket from one
	// resumes on another (MWSs share ticket keys).
	t.ServerName = "mws.imash"
	t.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	c := &Client{cfg: cfg, tls: t, log: log, seed: addr, routes: map[string]*route{}, sessions: map[string]*Session{}}
	r, err := c.dialRoute(addr)
	if err != nil {
		return nil, err
	}
	c.home = r
	return c, nil
}

// Close closes the connections. Sessions stay at the MWSs.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for a, r := range c.routes {
		errs = append(errs, r.cc.Close())
		delete(c.routes, a)
	}
	return errors.Join(errs...)
}

// Login authenticates user with password on this device.
func (c *Client) Login(ctx context.Context, user, password string) error {
	home := c.homeRoute()
	r, err := home.api.Login(ctx, &mwsv1.LoginRequest{User: user, Password: password, Profiles: c.cfg.Profiles})
	if err != nil {
		return err
	}
	home.setCred(r.Credential)
	c.mu.Lock()
	home.setName(r.Mws)
	c.user, c.device, c.peers = user, r.Device, r.Peers
	c.mu.Unlock()
	c.log.Info("logged in", "user", user, "mws", r.Mws, "device", r.Device)
	return nil
}

// Logout revokes the credential.
func (c *Client) Logout(ctx context.Context) error {
	home := c.homeRoute()
	_, err := home.api.Logout(ctx, &mwsv1.LogoutRequest{})
	home.setCred("")
	return err
}

// MWS is the name of the MWS this client is logged in to.
func (c *Client) MWS() string {
	return c.homeRoute().name()
}

// Device is this device's name as the MWS saw it.
func (c *Client) Device() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.device
}

func (c *Client) loggedIn() error {
	if c.homeRoute().credential() == "" {
		return ErrNotLoggedIn
	}
	return nil
}

// Backend is a legacy backend reachable through the MWS.
type Backend struct {
	Name string
	// HTTP reports that Get works on it; every backend can be Dialed.
	HTTP bool
}

// Backends lists the legacy backends.
func (c *Client) Backends(ctx context.Context) ([]Backend, error) {
	if err := c.loggedIn(); err != nil {
		return nil, err
	}
	r, err := c.homeRoute().api.ListBackends(ctx, &mwsv1.ListBackendsRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]Backend, 0, len(r.Backends))
	for _, b := range r.Backends {
		be := Backend{Name: b.Name}
		for _, k := range b.Kinds {
			be.HTTP = be.HTTP || k == "http"
		}
		out = append(out, be)
	}
	return out, nil
}

// OpenSession starts an application session. labels are matched by the
// MWS's handoff policies (e.g. "patient-records").
func (c *Client) OpenSession(ctx context.Context, app string, labels ...string) (*Session, error) {
	if err := c.loggedIn(); err != nil {
		return nil, err
	}
	home := c.homeRoute()
	r, err := home.api.OpenSession(ctx, &mwsv1.OpenSessionRequest{App: app, Labels: labels})
	if err != nil {
		return nil, err
	}
	s := &Session{c: c, id: r.SessionId, app: app, key: r.SessionKey, r: home}
	c.track(s)
	if r.Moved != nil {
		// Admission placed the session on a less loaded MWS.
		if err := s.follow(ctx, r.Moved, home); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// SessionInfo describes a session at the MWS.
type SessionInfo struct {
	ID      string
	App     string
	Labels  []string
	Device  string
	Created time.Time
	Streams int
	Objects int
}

// Sessions lists the user's sessions at this MWS.
func (c *Client) Sessions(ctx context.Context) ([]SessionInfo, error) {
	if err := c.loggedIn(); err != nil {
		return nil, err
	}
	r, err := c.homeRoute().api.ListSessions(ctx, &mwsv1.ListSessionsRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]SessionInfo, 0, len(r.Sessions))
	for _, s := range r.Sessions {
		out = append(out, SessionInfo{ID: s.SessionId, App: s.App, Labels: s.Labels, Device: s.Device,
			Created: time.Unix(0, s.CreatedUnixNano), Streams: int(s.Streams), Objects: int(s.Objects)})
	}
	return out, nil
}

// Event is a server-push event for this device.
type Event struct {
	Time time.Time
	// Exactly one of these is set.
	Connected *mwsv1.Connected
	Notice    *mwsv1.Notice
}

// Events opens the device's event channel and calls f for each event until
// ctx ends or the channel fails. The first event is Connected.
func (c *Client) Events(ctx context.Context, f func(Event)) error {
	if err := c.loggedIn(); err != nil {
		return err
	}
	return c.eventLoop(ctx, func(ev *mwsv1.Event) error {
		if ev.GetConnected() != nil || ev.GetNotice() != nil {
			f(Event{Time: time.Unix(0, ev.UnixNano), Connected: ev.GetConnected(), Notice: ev.GetNotice()})
		}
		return nil
	})
}

// Session is an application session.
type Session struct {
	c   *Client
	id  string
	app string

	followMu sync.Mutex // one follow at a time

	mu        sync.RWMutex
	r         *route // the MWS holding the session
	key       string // rotates at every handoff and move
	prevKey   string // the key before the last move's rotation (see follow)
	conns     map[*Conn]struct{}
	provider  SavepointFunc
	handedOff bool
}

func (s *Session) track(c *Conn) {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *Session) untrack(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// ctx returns ctx carrying the session key.
func (s *Session) ctx(ctx context.Context) context.Context {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return metadata.AppendToOutgoingContext(ctx, "imash-session-key", s.key)
}

// route returns the MWS holding the session.
func (s *Session) route() *route {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.r
}

// MWS is the name of the MWS holding the session now.
func (s *Session) MWS() string { return s.route().name() }

// ID is the session's id at the MWS.
func (s *Session) ID() string { return s.id }

// Close ends the session at the MWS and closes its legacy streams.
func (s *Session) Close(ctx context.Context) error {
	err := s.retry(ctx, func(r *route) error {
		_, err := r.api.CloseSession(s.ctx(ctx), &mwsv1.CloseSessionRequest{SessionId: s.id})
		return err
	})
	if err == nil {
		s.c.untrackSession(s)
	}
	return err
}
