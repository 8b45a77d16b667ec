// Package cluster starts a whole imash cluster in one process — a cluster
// CA, a mux in front of named legacy servers, and one or more MWSs — on
// loopback, for tests, benchmarks and the testbed demo.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/mux"
	"github.com/imashproject/imash/mws"
)

// Options describes a cluster. Zero values give one MWS and default limits.
type Options struct {
	// Backends are the legacy servers by name (host:port).
	Backends map[string]string
	// HTTPBackends names the backends that speak HTTP.
	HTTPBackends []string
	// Users are user name → password.
	Users map[string]string
	// MWSs is how many middleware servers to start (default 1).
	MWSs int
	// TuneMux and TuneMWS adjust the default configurations.
	TuneMux func(*mux.Config)
	TuneMWS func(*mws.Config)
	// Log receives every component's logs (nil discards).
	Log *slog.Logger
}

// Cluster is a running in-process cluster.
type Cluster struct {
	CA       *pki.CA
	Mux      *mux.Server
	MuxAddr  string
	MWS      []*mws.Server
	MWSAddrs []string
	// Peers is the MWSs' shared static membership (used when there are
	// several MWSs and no TuneMWS replaces it).
	Peers *mws.StaticPeers

	mu      sync.Mutex
	served  []chan error
	closers []func(context.Context) error
}

// Start starts a cluster. On error everything started is stopped.
func Start(opts Options) (c *Cluster, err error) {
	if opts.MWSs == 0 {
		opts.MWSs = 1
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ca, err := pki.NewCA("imash.test", 0)
	if err != nil {
		return nil, err
	}
	c = &Cluster{CA: ca}
	defer func() {
		if err != nil {
			_ = c.Close(context.Background())
		}
	}()

	muxCert, err := ca.Issue(pki.IssueRequest{Role: pki.RoleMux, Name: "mux-1"})
	if err != nil {
		return nil, err
	}
	mcfg := mux.NewDefaultConfig()
	mcfg.TLS = pki.ServerTLS(muxCert.TLS, ca.Pool())
	for name, addr := range opts.Backends {
		mcfg.Backends = append(mcfg.Backends, mux.Backend{Name: name, Addr: addr})
	}
	if opts.TuneMux != nil {
		opts.TuneMux(&mcfg)
	}
	c.Mux, err = mux.New(mcfg, log.With("component", "mux"))
	if err != nil {
		return nil, err
	}
	c.MuxAddr, err = c.serve(c.Mux.Serve, c.Mux.Close)
	if err != nil {
		return nil, err
	}

	users := staticUsers(opts.Users)
	var secret [32]byte
	_, _ = rand.Read(secret[:])
	c.Peers = mws.NewStaticPeers()
	lis := make([]net.Listener, opts.MWSs)
	for i := range opts.MWSs {
		if lis[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			for _, l := range lis[:i] {
				l.Close()
			}
			return nil, err
		}
		c.Peers.Add(fmt.Sprintf("mws-%d", i+1), lis[i].Addr().String())
	}
	for i := range opts.MWSs {
		name := fmt.Sprintf("mws-%d", i+1)
		cert, err := ca.Issue(pki.IssueRequest{Role: pki.RoleMWS, Name: name, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			closeAll(lis[i:])
			return nil, err
		}
		cfg := mws.NewDefaultConfig()
		cfg.Name = name
		cfg.TLS = pki.ServerTLS(cert.TLS, ca.Pool())
		cfg.MuxAddr = c.MuxAddr
		cfg.MuxTLS = pki.ClientTLS(cert.TLS, ca.Pool(), pki.RoleMux)
		cfg.HTTPBackends = opts.HTTPBackends
		cfg.Users = users
		cfg.Cluster.Addr = lis[i].Addr().String()
		cfg.Cluster.PeerTLS = pki.ClientTLS(cert.TLS, ca.Pool(), pki.RoleMWS)
		cfg.Cluster.TicketSecret = secret[:]
		if opts.MWSs > 1 {
			cfg.Cluster.Membership = c.Peers.For(name)
		}
		if opts.TuneMWS != nil {
			opts.TuneMWS(&cfg)
		}
		srv, err := mws.New(cfg, log.With("component", "mws"))
		if err != nil {
			closeAll(lis[i:])
			return nil, err
		}
		c.serveOn(lis[i], srv.Serve, srv.Close)
		c.MWS = append(c.MWS, srv)
		c.MWSAddrs = append(c.MWSAddrs, cfg.Cluster.Addr)
	}
	return c, nil
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// serveOn serves on lis until Close.
func (c *Cluster) serveOn(lis net.Listener, serve func(net.Listener) error, closer func(context.Context) error) {
	done := make(chan error, 1)
	go func() { done <- serve(lis) }()
	c.mu.Lock()
	c.served = append(c.served, done)
	c.closers = append(c.closers, closer)
	c.mu.Unlock()
}

// OperatorCert issues an operator certificate (for the Operator API).
func (c *Cluster) OperatorCert(name string) (tls.Certificate, error) {
	iss, err := c.CA.Issue(pki.IssueRequest{Role: pki.RoleOperator, Name: name})
	if err != nil {
		return tls.Certificate{}, err
	}
	return iss.TLS, nil
}

func (c *Cluster) serve(serve func(net.Listener) error, closer func(context.Context) error) (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = closer(context.Background())
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- serve(lis) }()
	c.mu.Lock()
	c.served = append(c.served, done)
	c.closers = append(c.closers, closer)
	c.mu.Unlock()
	return lis.Addr().String(), nil
}

// DeviceCert issues a device certificate named name and returns it with the
// cluster's CA pool: what clientlib.Config needs.
func (c *Cluster) DeviceCert(name string) (tls.Certificate, *x509.CertPool, error) {
	iss, err := c.CA.Issue(pki.IssueRequest{Role: pki.RoleDevice, Name: name})
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return iss.TLS, c.CA.Pool(), nil
}

// Close stops every component, MWSs first, and waits for them.
func (c *Cluster) Close(ctx context.Context) error {
	c.mu.Lock()
	closers, served := c.closers, c.served
	c.closers, c.served = nil, nil
	c.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
		if err := <-served[i]; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// staticUsers is an in-memory user table for in-process clusters.
type staticUsers map[string]string

func (u staticUsers) Verify(user, password string) error {
	if p, ok := u[user]; ok && subtle.ConstantTimeCompare([]byte(p), []byte(password)) == 1 {
		return nil
	}
	return errors.New("bad credentials")
}
