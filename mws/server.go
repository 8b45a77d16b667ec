package mws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/imashproject/imash/adapters"
	"github.com/imashproject/imash/internal/grpcbuf"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws/muxlink"
	"github.com/imashproject/imash/mws/objcache"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// Server is a middleware server. Create it with New, run it with Serve,
// stop it with Close.
type Server struct {
	cfg       Config
	log       *slog.Logger
	grpc      *grpc.Server
	mux       *muxlink.Client
	transport *http.Transport
	cache     *objcache.Cache
	creds     *credStore
	sessions  *sessionTable
	events    *eventHub
	registry  *registry
	handoffs  *handoffTable
	profiles  deviceProfiles
	variants  *variantCache // nil with NoAdaptation
	http      map[string]bool
	netmeter  *netMeter

	peers    *peerPool
	moves    *moveTable
	replicas *replicaTable
	// replacing is set while placeReplicas works.
	replacing atomic.Bool
	// bg counts background work (replication) that Close waits for;
	// bgCtx ends when Close begins, as do handoffs waiting for a target.
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
	draining atomic.Bool
	// drainMu guards drains (in progress) and drained (one finished, or an
	// unfinished one of a stopping MWS): draining is set while either is.
	drainMu sync.Mutex
	drains  int
	drained bool
	docs    profileDocs
	paths   pathMoves

	closeOnce sync.Once
	closeErr  error

	stopJanitor  chan struct{}
	janitorDone  chan struct{}
	balancerDone chan struct{}
}

// New validates cfg and builds an MWS. log may be nil.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mws: invalid configuration:\n%w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("mws", cfg.Name)
	mc, err := muxlink.Dial(cfg.MuxAddr, cfg.MuxTLS, log)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: log, mux: mc,
		creds:    newCredentials(cfg.CredentialTTL),
		sessions: newSessionTable(cfg.MaxSessions, cfg.MaxSessionsPerUser),
		events:   newEventHub(),
		registry: newRegistry(),
		handoffs: newHandoffTable(cfg.ConsentTimeout),
		http:     map[string]bool{},
		peers:    newPeerPool(cfg.Cluster.PeerTLS, log),
		moves:    newMoveTable(),
		replicas: newReplicaTable(cfg.MaxSessions),
	}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	if !cfg.NoAdaptation {
		a := cfg.ContentAdapter
		if a == nil {
			if a, err = adapters.New(adapters.NewDefaultConfig(), nil, nil); err != nil {
				mc.Close()
				return nil, err
			}
		}
		if s.variants, err = newVariantCache(a, cfg.VariantCacheBytes); err != nil {
			mc.Close()
			return nil, err
		}
	}
	if s.cfg.Adapter == nil {
		s.cfg.Adapter = contentAdapter{s}
	}
	s.registry.onOnline = s.deviceOnline
	s.netmeter = newNetMeter(cfg.ProbeInterval, s.events.publish, log)
	for _, b := range cfg.HTTPBackends {
		s.http[b] = true
	}
	s.transport = &http.Transport{
		DialContext:           s.dialBackend,
		MaxIdleConnsPerHost:   cfg.HTTPIdleConns,
		MaxConnsPerHost:       cfg.HTTPMaxConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.HTTPTimeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	s.cache, err = objcache.New(cfg.Cache, s.transport, log)
	if err != nil {
		mc.Close()
		return nil, err
	}
	opts := append(pki.RequireRolesBy(rolesFor), s.authInterceptors()...)
	opts = append(opts, grpcbuf.ServerOptions()...)
	serverTLS := cfg.TLS.Clone()
	if len(cfg.Cluster.TicketSecret) > 0 {
		(&ticketKeys{secret: cfg.Cluster.TicketSecret, period: cfg.Cluster.TicketRotation, now: time.Now}).install(serverTLS)
	}
	opts = append(opts,
		grpc.Creds(credentials.NewTLS(serverTLS)),
		grpc.MaxRecvMsgSize(4<<20), // savepoint uploads; raw stream chunks are checked separately
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	s.grpc = grpc.NewServer(opts...)
	mwsv1.RegisterDeviceServer(s.grpc, &deviceService{s: s})
	mwsv1.RegisterPeerServer(s.grpc, &peerService{s: s})
	mwsv1.RegisterOperatorServer(s.grpc, &operatorService{s: s})
	s.stopJanitor, s.janitorDone, s.balancerDone = make(chan struct{}), make(chan struct{}), make(chan struct{})
	go s.janitor()
	go s.balancer()
	s.publishLoad()
	return s, nil
}

// inService reports whether the full method name belongs to service sd.
func inService(method string, sd grpc.ServiceDesc) bool {
	return strings.HasPrefix(method, "/"+sd.ServiceName+"/")
}

// checkAppLabels checks a session's application name and labels against
// the limits: for a session opened here or one that moves here.
func (c Config) checkAppLabels(app string, labels []string) []error {
	var errs []error
	if app == "" || len(app) > c.MaxAppBytes {
		errs = append(errs, fmt.Errorf("app name must be 1-%d bytes", c.MaxAppBytes))
	}
	if len(labels) > c.MaxLabels {
		errs = append(errs, fmt.Errorf("%d labels exceed the limit of %d", len(labels), c.MaxLabels))
	}
	for _, l := range labels {
		if !nameRE.MatchString(l) || len(l) > c.MaxLabelBytes {
			errs = append(errs, fmt.Errorf("label %q: want 1-%d of [A-Za-z0-9._-]", l, c.MaxLabelBytes))
		}
	}
	return errs
}

// rolesFor says who may call a method: devices the Device API, MWSs the
// Peer API, operators the Operator API.
func rolesFor(method string) []pki.Role {
	switch {
	case inService(method, mwsv1.Device_ServiceDesc):
		return []pki.Role{pki.RoleDevice}
	case inService(method, mwsv1.Peer_ServiceDesc):
		return []pki.Role{pki.RoleMWS}
	case inService(method, mwsv1.Operator_ServiceDesc):
		return []pki.Role{pki.RoleOperator}
	}
	return nil
}

// dialBackend opens a legacy connection through the mux for the HTTP
// transport; the address's host is the backend name.
func (s *Server) dialBackend(ctx context.Context, _, addr string) (net.Conn, error) {
	backend, _, err := net.SplitHostPort(addr)
	if err != nil {
		backend = addr
	}
	st, err := s.mux.Open(ctx, backend, s.cfg.Name+"/http")
	if err != nil {
		return nil, err
	}
	return muxlink.NewConn(st), nil
}

// Serve answers devices on lis until Close.
func (s *Server) Serve(lis net.Listener) error {
	s.log.Info("mws serving", "addr", lis.Addr().String(), "mux", s.cfg.MuxAddr)
	lis = s.netmeter.listener(lis) // the network meter finds a call's connection
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Close stops serving. Legacy streams of open sessions stay open at the mux
// (for another MWS to pick up) until their orphan timeout. Later calls
// return the first call's result.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Server) close(ctx context.Context) error {
	close(s.stopJanitor)
	<-s.janitorDone
	<-s.balancerDone
	s.events.closeAll()
	s.bgCancel()
	defer s.peers.close()
	defer s.bg.Wait()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	s.transport.CloseIdleConnections()
	s.cache.Close()
	if s.variants != nil {
		s.variants.close()
	}
	return s.mux.Close()
}

// janitor ends idle sessions.
func (s *Server) janitor() {
	defer close(s.janitorDone)
	every := min(s.cfg.SessionIdleTimeout/4, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.expireIdle(time.Now().Add(-s.cfg.SessionIdleTimeout))
		case <-s.stopJanitor:
			return
		}
	}
}

// expireIdle ends the sessions idle since before cutoff and closes their
// legacy streams at the mux.
func (s *Server) expireIdle(cutoff time.Time) {
	for _, ss := range s.sessions.idle(cutoff) {
		n := s.closeStreams(context.Background(), ss)
		s.dropReplicas(ss)
		s.log.Info("idle session ended", "session", ss.id, "user", ss.user, "streams", n)
	}
}

// closeStreams closes a removed session's legacy streams at the mux and
// returns how many it had.
func (s *Server) closeStreams(ctx context.Context, ss *session) int {
	streams := ss.streamsSnapshot()
	for _, r := range streams {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.mux.API().Close(cctx, &muxv1.CloseRequest{StreamId: r.id, Epoch: r.epoch})
		cancel()
		if err != nil && rpcerr.Code(err) != codes.NotFound {
			s.log.Warn("closing a session's stream", "session", ss.id, "stream", r.id, "error", err)
		}
	}
	return len(streams)
}

// Stats are an MWS's counters.
type Stats struct {
	Sessions int
	// Replicas is how many of its peers' sessions this MWS keeps a
	// replica of.
	Replicas int
	Cache    objcache.Stats
}

// Stats returns current counters.
func (s *Server) Stats() Stats {
	s.replicas.mu.Lock()
	replicas := len(s.replicas.byID)
	s.replicas.mu.Unlock()
	return Stats{Sessions: s.sessions.len(), Replicas: replicas, Cache: s.cache.Stats()}
}

// Name is the MWS's name.
func (s *Server) Name() string { return s.cfg.Name }

type deviceService struct {
	mwsv1.UnimplementedDeviceServer
	s *Server
}

func (d *deviceService) Login(ctx context.Context, req *mwsv1.LoginRequest) (*mwsv1.LoginResponse, error) {
	id, _ := pki.IdentityFrom(ctx)
	if len(req.GetUser()) > 64 || len(req.GetPassword()) > 1024 {
		return nil, rpcerr.New(codes.InvalidArgument, "FIELD_TOO_LONG", "user or password too long")
	}
	if err := d.s.cfg.Users.Verify(req.GetUser(), req.GetPassword()); err != nil {
		d.s.log.Warn("login refused", "user", req.GetUser(), "device", id.Name)
		return nil, rpcerr.New(codes.Unauthenticated, "BAD_CREDENTIALS", "wrong user name or password")
	}
	if len(req.GetProfiles()) > 0 {
		c, err := mergeLoginProfiles(req.GetProfiles(), d.s.cfg.MaxProfiles)
		if err != nil {
			return nil, err
		}
		d.s.profiles.set(id.Name, c)
		d.s.docs.set(id.Name, req.GetProfiles())
		d.s.log.Info("device profile", "device", id.Name, "max_width", c.MaxWidth, "max_height", c.MaxHeight,
			"color_depth", c.ColorDepth, "byte_budget", c.ByteBudget, "formats", c.Formats)
	}
	tok, exp := d.s.creds.issue(req.GetUser(), id.Name)
	d.s.registry.seen(req.GetUser(), id.Name)
	d.s.log.Info("login", "user", req.GetUser(), "device", id.Name)
	return &mwsv1.LoginResponse{Credential: tok, ExpiresUnixNano: exp.UnixNano(), Mws: d.s.cfg.Name, Device: id.Name, Peers: d.s.peerAddrs()}, nil
}

func (d *deviceService) Logout(ctx context.Context, _ *mwsv1.LogoutRequest) (*mwsv1.LogoutResponse, error) {
	d.s.creds.revoke(principalFrom(ctx).token)
	return &mwsv1.LogoutResponse{}, nil
}

func (d *deviceService) OpenSession(ctx context.Context, req *mwsv1.OpenSessionRequest) (*mwsv1.OpenSessionResponse, error) {
	p := principalFrom(ctx)
	if err := errors.Join(d.s.cfg.checkAppLabels(req.GetApp(), req.GetLabels())...); err != nil {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_SESSION_REQUEST", "%v", err)
	}
	ss, key, err := d.s.sessions.open(p.user, p.device, req.GetApp(), slices.Clone(req.GetLabels()))
	if err != nil {
		return nil, err
	}
	d.s.log.Info("session opened", "session", ss.id, "user", p.user, "device", p.device, "app", ss.app)
	d.s.replicateLater(ss)
	return &mwsv1.OpenSessionResponse{SessionId: ss.id, SessionKey: key, Moved: d.s.admit(ctx, ss)}, nil
}

func (d *deviceService) CloseSession(ctx context.Context, req *mwsv1.CloseSessionRequest) (*mwsv1.CloseSessionResponse, error) {
	p := principalFrom(ctx)
	if _, err := d.s.session(ctx, req.GetSessionId()); err != nil {
		return nil, err
	}
	ss := d.s.sessions.remove(req.GetSessionId())
	if ss == nil {
		return &mwsv1.CloseSessionResponse{}, nil
	}
	d.s.closeStreams(ctx, ss)
	d.s.dropReplicas(ss)
	d.s.log.Info("session closed", "session", ss.id, "user", p.user)
	return &mwsv1.CloseSessionResponse{}, nil
}

func (d *deviceService) ListSessions(ctx context.Context, _ *mwsv1.ListSessionsRequest) (*mwsv1.ListSessionsResponse, error) {
	out := &mwsv1.ListSessionsResponse{}
	for _, ss := range d.s.sessions.list(principalFrom(ctx).user) {
		out.Sessions = append(out.Sessions, ss.info())
	}
	return out, nil
}

func (d *deviceService) ListBackends(ctx context.Context, _ *mwsv1.ListBackendsRequest) (*mwsv1.ListBackendsResponse, error) {
	r, err := d.s.mux.API().ListBackends(ctx, &muxv1.ListBackendsRequest{})
	if err != nil {
		return nil, rpcerr.New(codes.Unavailable, "MUX_UNAVAILABLE", "listing backends at the mux: %v", err)
	}
	out := &mwsv1.ListBackendsResponse{}
	for _, b := range r.Backends {
		kinds := []string{"stream"}
		if d.s.http[b.Name] {
			kinds = []string{"http", "stream"}
		}
		out.Backends = append(out.Backends, &mwsv1.BackendInfo{Name: b.Name, Kinds: kinds})
	}
	return out, nil
}
