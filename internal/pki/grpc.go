package pki

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/imashproject/imash/internal/rpcerr"
)

// PeerIdentity returns the verified identity of the gRPC peer of ctx.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, rpcerr.New(codes.Unauthenticated, "NO_PEER", "no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return Identity{}, rpcerr.New(codes.Unauthenticated, "NO_CLIENT_CERTIFICATE", "connection is not mutually authenticated TLS")
	}
	id, err := IdentityFromCert(ti.State.PeerCertificates[0])
	if err != nil {
		return Identity{}, rpcerr.New(codes.Unauthenticated, "BAD_IDENTITY", "%v", err)
	}
	return id, nil
}

type identityKey struct{}

// IdentityFrom returns the caller identity stored by the RequireRoles
// interceptors.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

func checkRole(ctx context.Context, roles []Role) (context.Context, error) {
	id, err := PeerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(roles, id.Role) {
		return nil, rpcerr.New(codes.PermissionDenied, "WRONG_ROLE", "caller %s has role %q; this service accepts %v", id, id.Role, roles)
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// RequireRoles returns server options whose interceptors refuse every call
// from a peer whose certificate role is not in roles (PermissionDenied,
// reason WRONG_ROLE) and put the caller's Identity in the context.
func RequireRoles(roles ...Role) []grpc.ServerOption {
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := checkRole(ctx, roles)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := checkRole(ss.Context(), roles)
		if err != nil {
			return err
		}
		return h(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// RequireRolesBy is RequireRoles with the accepted roles chosen per method
// (the gRPC full method name): one server can serve several services, each
// to its own kind of caller. A method for which roles returns none is
// refused.
func RequireRolesBy(roles func(method string) []Role) []grpc.ServerOption {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := checkRole(ctx, roles(info.FullMethod))
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := checkRole(ss.Context(), roles(info.FullMethod))
		if err != nil {
			return err
		}
		return h(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}
