package mws

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// principal is who makes a call: a user logged in on a device.
type principal struct {
	user   string
	device string // device certificate name
	token  [32]byte
}

type credential struct {
	user    string
	device  string
	expires time.Time
}

// credStore holds live login credentials, by the SHA-256 of the token so
// that a memory dump does not hand out bearer tokens.
type credStore struct {
	mu  sync.Mutex
	m   map[[32]byte]credential
	ttl time.Duration
	now func() time.Time
}

func newCredentials(ttl time.Duration) *credStore {
	return &credStore{m: map[[32]byte]credential{}, ttl: ttl, now: time.Now}
}

func (c *credStore) issue(user, device string) (string, time.Time) {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	exp := c.now().Add(c.ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	// Expired credentials are dropped as new ones are issued.
	now := c.now()
	for k, v := range c.m {
		if now.After(v.expires) {
			delete(c.m, k)
		}
	}
	c.m[sha256.Sum256([]byte(tok))] = credential{user: user, device: device, expires: exp}
	return tok, exp
}

func (c *credStore) check(tok, device string) (principal, error) {
	h := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	cr, ok := c.m[h]
	c.mu.Unlock()
	if !ok {
		return principal{}, rpcerr.New(codes.Unauthenticated, "BAD_CREDENTIAL", "credential unknown or revoked; log in again")
	}
	if c.now().After(cr.expires) {
		c.revoke(h)
		return principal{}, rpcerr.New(codes.Unauthenticated, "CREDENTIAL_EXPIRED", "credential expired; log in again")
	}
	if cr.device != device {
		return principal{}, rpcerr.New(codes.Unauthenticated, "CREDENTIAL_DEVICE_MISMATCH", "credential was issued to device %q, not %q", cr.device, device)
	}
	return principal{user: cr.user, device: device, token: h}, nil
}

func (c *credStore) revoke(h [32]byte) {
	c.mu.Lock()
	delete(c.m, h)
	c.mu.Unlock()
}

type principalKey struct{}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// authenticate checks the bearer credential of every call but Login and
// puts the principal into the context. The device certificate itself was
// already checked by the RequireRoles interceptor.
func (s *Server) authenticate(ctx context.Context, method string) (context.Context, error) {
	switch {
	case method == mwsv1.Device_Login_FullMethodName, method == mwsv1.Device_MoveIn_FullMethodName,
		method == mwsv1.Device_Ping_FullMethodName, !inService(method, mwsv1.Device_ServiceDesc):
		// Peers and operators are authenticated by their certificates.
		return ctx, nil
	case method == mwsv1.Device_Stream_FullMethodName && moveTokenOf(ctx) != "":
		// A stream that moves its session in: the move token proves the
		// device, as in MoveIn (Stream checks it).
		return ctx, nil
	}
	id, _ := pki.IdentityFrom(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 || !strings.HasPrefix(vals[0], "Bearer ") {
		return nil, rpcerr.New(codes.Unauthenticated, "NO_CREDENTIAL", "call carries no bearer credential; log in first")
	}
	p, err := s.creds.check(strings.TrimPrefix(vals[0], "Bearer "), id.Name)
	if err != nil {
		return nil, err
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

func (s *Server) authInterceptors() []grpc.ServerOption {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := s.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := s.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

// sessionKeyHeader is the metadata key of the session key.
const sessionKeyHeader = "imash-session-key"

// moveTokenHeader carries the move token of a Stream call that moves its
// session in.
const moveTokenHeader = "imash-move-token"

// moveTokenOf returns the call's move token, if it has exactly one.
func moveTokenOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(moveTokenHeader); len(v) == 1 {
		return v[0]
	}
	return ""
}

// session returns the session id of the calling principal, checking the
// session key the call carries. While the session is being moved to
// another MWS the call waits: it then goes on here (the move failed) or
// gets SESSION_MOVED with where to (it succeeded).
func (s *Server) session(ctx context.Context, id string) (*session, error) {
	return s.sessionCall(ctx, id, false)
}

// sessionCall is session; with count set, the call is counted as in
// flight (a move waits for it to finish) and the caller must call
// ss.endCall.
func (s *Server) sessionCall(ctx context.Context, id string, count bool) (*session, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var key string
	if v := md.Get(sessionKeyHeader); len(v) == 1 {
		key = v[0]
	}
	for {
		ss, err := s.sessions.get(principalFrom(ctx), id, key)
		if err != nil {
			return nil, err
		}
		ss.mu.Lock()
		mv := ss.move
		// A counted call (a Get) goes on while a move copies objects
		// ahead; it waits once the session is frozen.
		serve := mv == nil || (count && !mv.frozen)
		if serve && count {
			ss.inflight++
		}
		ss.mu.Unlock()
		if serve {
			return ss, nil
		}
		select {
		case <-mv.done:
		case <-ctx.Done():
			return nil, rpcerr.New(codes.Unavailable, "SESSION_MOVING", "session %s is being moved to another MWS", id)
		}
	}
}
