// Package mux is imash's mux: the only component that touches legacy
// servers. It holds one TCP connection per legacy stream, opened when an MWS
// asks and never moved, and relays its bytes to whichever middleware server
// owns the stream now. Ownership moves between MWSs under a growing epoch;
// byte offsets in both directions make every byte arrive at the legacy
// server exactly once and let a new owner resume from the last byte its
// predecessor committed.
package mux

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/imashproject/imash/internal/grpcbuf"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

// Server is a mux. Create it with New, run it with Serve, stop it with
// Close.
type Server struct {
	cfg      Config
	log      *slog.Logger
	backends map[string]Backend
	grpc     *grpc.Server

	mu      sync.Mutex
	streams map[string]*stream
	closing bool
}

// New validates cfg and creates a mux. log may be nil (logs are dropped).
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mux: invalid configuration:\n%w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, backends: map[string]Backend{}, streams: map[string]*stream{}}
	for _, b := range cfg.Backends {
		s.backends[b.Name] = b
	}
	opts := append(pki.RequireRoles(pki.RoleMWS), grpcbuf.ServerOptions()...)
	opts = append(opts,
		grpc.Creds(credentials.NewTLS(cfg.TLS)),
		grpc.MaxRecvMsgSize(2*cfg.MaxChunk+4096),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	s.grpc = grpc.NewServer(opts...)
	muxv1.RegisterMuxServer(s.grpc, service{srv: s})
	return s, nil
}

// Serve answers MWSs on lis until Close. It returns nil after Close.
func (s *Server) Serve(lis net.Listener) error {
	s.log.Info("mux serving", "addr", lis.Addr().String(), "backends", len(s.backends))
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Close stops accepting calls, waits up to ShutdownGrace (or ctx) for calls
// in flight, and closes every legacy connection.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	// Closing streams first ends every Attach channel, so a graceful stop
	// does not wait for them.
	for _, st := range streams {
		st.close(muxv1.CloseReason_CLOSE_REASON_SHUTDOWN, "mux shutting down")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownGrace)
	defer cancel()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	return nil
}

// service implements the gRPC API of a Server.
type service struct {
	muxv1.UnimplementedMuxServer
	srv *Server
}

func caller(ctx context.Context) (string, error) {
	id, ok := pki.IdentityFrom(ctx)
	if !ok {
		return "", rpcerr.New(codes.Unauthenticated, "NO_IDENTITY", "caller identity unknown")
	}
	return id.Name, nil
}

func (s *Server) stream(id string) (*stream, error) {
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	if st == nil {
		return nil, rpcerr.New(codes.NotFound, "UNKNOWN_STREAM", "no stream %q", id)
	}
	return st, nil
}

func (s *Server) removeStream(st *stream) {
	s.mu.Lock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
	s.mu.Unlock()
}

// Open dials a backend and creates a stream owned by the caller.
func (v service) Open(ctx context.Context, req *muxv1.OpenRequest) (*muxv1.OpenResponse, error) {
	s := v.srv
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetLabel()) > 256 {
		return nil, rpcerr.New(codes.InvalidArgument, "LABEL_TOO_LONG", "label of %d bytes exceeds 256", len(req.GetLabel()))
	}
	b, ok := s.backends[req.GetBackend()]
	if !ok {
		return nil, rpcerr.New(codes.NotFound, "UNKNOWN_BACKEND", "no backend named %q", req.GetBackend())
	}
	s.mu.Lock()
	full := len(s.streams) >= s.cfg.MaxStreams
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil, rpcerr.New(codes.Unavailable, "SHUTTING_DOWN", "mux is shutting down")
	}
	if full {
		return nil, rpcerr.New(codes.ResourceExhausted, "TOO_MANY_STREAMS", "mux holds its limit of %d streams", s.cfg.MaxStreams)
	}
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", b.Addr)
	if err != nil {
		return nil, rpcerr.New(codes.Unavailable, "BACKEND_UNAVAILABLE", "backend %q at %s: %v", b.Name, b.Addr, err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, rpcerr.New(codes.Internal, "NOT_TCP", "backend %q: connection is not TCP", b.Name)
	}
	id := newStreamID()
	st := newStream(id, b, req.GetLabel(), tc, who, &s.cfg, s.log, s.removeStream)
	s.mu.Lock()
	if s.closing || len(s.streams) >= s.cfg.MaxStreams {
		s.mu.Unlock()
		st.close(muxv1.CloseReason_CLOSE_REASON_SHUTDOWN, "refused at open")
		return nil, rpcerr.New(codes.ResourceExhausted, "TOO_MANY_STREAMS", "mux holds its limit of %d streams", s.cfg.MaxStreams)
	}
	s.streams[id] = st
	s.mu.Unlock()
	st.log.Info("stream opened", "mws", who, "epoch", 1, "local_addr", tc.LocalAddr().String(), "backend_addr", b.Addr, "label", req.GetLabel())
	return &muxv1.OpenResponse{StreamId: id, Epoch: 1, LocalAddr: tc.LocalAddr().String(), BackendAddr: b.Addr}, nil
}

func newStreamID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sendBudget bounds how many data bytes one wake-up of a sender collects:
// small enough that a cut is noticed soon (bytes sent past the last commit
// are sent again to the next owner).
const sendBudget = 256 << 10

// Attach runs an owner's data channel.
func (v service) Attach(ss muxv1.Mux_AttachServer) error {
	s := v.srv
	ctx := ss.Context()
	who, err := caller(ctx)
	if err != nil {
		return err
	}
	first, err := ss.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return rpcerr.New(codes.InvalidArgument, "HELLO_REQUIRED", "the first message of Attach must be a Hello")
	}
	st, err := s.stream(hello.GetStreamId())
	if err != nil {
		return err
	}
	var a *attachment
	var attached *muxv1.Attached
	if hello.GetStandby() {
		a, attached, err = st.attachStandby(ctx, who, hello.GetEpoch())
	} else {
		a, attached, err = st.attach(who, hello.GetEpoch())
	}
	if err != nil {
		return err
	}
	defer st.detach(a)
	if err := ss.Send(&muxv1.AttachResponse{Msg: &muxv1.AttachResponse_Attached{Attached: attached}}); err != nil {
		return err
	}

	go recvLoop(ctx, ss, st, a)

	var msgs []*muxv1.AttachResponse
	for {
		var wait <-chan struct{}
		var done bool
		var err error
		msgs, wait, done, err = st.next(a, msgs[:0], sendBudget)
		for _, m := range msgs {
			if serr := ss.Send(m); serr != nil {
				return serr
			}
		}
		clear(msgs)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if wait != nil {
			select {
			case <-wait:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// recvLoop applies the owner's requests until the channel ends.
func recvLoop(ctx context.Context, ss muxv1.Mux_AttachServer, st *stream, a *attachment) {
	for {
		req, err := ss.Recv()
		if err != nil {
			// io.EOF: the owner closed its send side, and down bytes keep
			// flowing. Anything else: the channel is gone and the sender sees
			// its context end.
			return
		}
		switch m := req.GetMsg().(type) {
		case *muxv1.AttachRequest_Data:
			err = st.acceptUp(ctx, a, m.Data.GetOffset(), m.Data.GetData())
		case *muxv1.AttachRequest_Commit:
			err = st.commit(a, m.Commit.GetOffset())
		case *muxv1.AttachRequest_CloseWrite:
			err = st.closeWrite(a, m.CloseWrite.GetOffset())
		case *muxv1.AttachRequest_Hello:
			err = rpcerr.New(codes.InvalidArgument, "DUPLICATE_HELLO", "Hello may only be the first message")
		default:
			err = rpcerr.New(codes.InvalidArgument, "EMPTY_MESSAGE", "Attach request carries no message")
		}
		if errors.Is(err, errCut) {
			return
		}
		if err != nil {
			st.log.Warn("bad request on attach channel", "mws", a.owner, "epoch", a.epoch, "error", err)
			st.setRecvErr(a, err)
			return
		}
	}
}

// Handover grants a stream to another MWS.
func (v service) Handover(ctx context.Context, req *muxv1.HandoverRequest) (*muxv1.HandoverResponse, error) {
	s := v.srv
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.stream(req.GetStreamId())
	if err != nil {
		return nil, err
	}
	return st.handover(who, req)
}

// Takeover claims a stream without its owner's cooperation.
func (v service) Takeover(ctx context.Context, req *muxv1.TakeoverRequest) (*muxv1.TakeoverResponse, error) {
	s := v.srv
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.stream(req.GetStreamId())
	if err != nil {
		return nil, err
	}
	return st.takeover(who, req)
}

// Close closes a stream's legacy connection (the Close RPC).
func (v service) Close(ctx context.Context, req *muxv1.CloseRequest) (*muxv1.CloseResponse, error) {
	s := v.srv
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.stream(req.GetStreamId())
	if err != nil {
		return nil, err
	}
	if err := st.closeByOwner(who, req.GetEpoch()); err != nil {
		return nil, err
	}
	return &muxv1.CloseResponse{}, nil
}

// GetStream reports one stream.
func (v service) GetStream(_ context.Context, req *muxv1.GetStreamRequest) (*muxv1.StreamInfo, error) {
	s := v.srv
	st, err := s.stream(req.GetStreamId())
	if err != nil {
		return nil, err
	}
	// A closed stream leaves the table just after its connection closes:
	// it is reported gone from the moment it closed.
	if st.isClosed() {
		return nil, rpcerr.New(codes.NotFound, "UNKNOWN_STREAM", "stream %q is closed", req.GetStreamId())
	}
	return st.info(), nil
}

// ListStreams reports every stream, oldest first.
func (v service) ListStreams(context.Context, *muxv1.ListStreamsRequest) (*muxv1.ListStreamsResponse, error) {
	s := v.srv
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	out := &muxv1.ListStreamsResponse{}
	for _, st := range streams {
		out.Streams = append(out.Streams, st.info())
	}
	sort.Slice(out.Streams, func(i, j int) bool { return out.Streams[i].CreatedUnixNano < out.Streams[j].CreatedUnixNano })
	return out, nil
}

// ListBackends reports the configured backends by name.
func (v service) ListBackends(context.Context, *muxv1.ListBackendsRequest) (*muxv1.ListBackendsResponse, error) {
	s := v.srv
	out := &muxv1.ListBackendsResponse{}
	for _, b := range s.cfg.Backends {
		out.Backends = append(out.Backends, &muxv1.Backend{Name: b.Name, Addr: b.Addr})
	}
	sort.Slice(out.Backends, func(i, j int) bool { return out.Backends[i].Name < out.Backends[j].Name })
	return out, nil
}
