package mux_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/imashproject/imash/internal/grpcbuf"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mux"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

// env is a mux on loopback with a cluster CA, as MWSs see it.
type env struct {
	t    testing.TB
	ca   *pki.CA
	srv  *mux.Server
	addr string
	cfg  mux.Config
}

func newEnv(t testing.TB, backends []mux.Backend, tune func(*mux.Config)) *env {
	t.Helper()
	ca, err := pki.NewCA("test.imash", 0)
	if err != nil {
		t.Fatal(err)
	}
	muxCert, err := ca.Issue(pki.IssueRequest{Role: pki.RoleMux, Name: "mux-1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mux.NewDefaultConfig()
	cfg.Backends = backends
	cfg.TLS = pki.ServerTLS(muxCert.TLS, ca.Pool())
	if tune != nil {
		tune(&cfg)
	}
	srv, err := mux.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		if err := srv.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &env{t: t, ca: ca, srv: srv, addr: lis.Addr().String(), cfg: cfg}
}

// client dials the mux with a certificate of role and name issued by ca
// (the env's CA if nil).
func (e *env) client(role pki.Role, name string, ca *pki.CA) muxv1.MuxClient {
	e.t.Helper()
	if ca == nil {
		ca = e.ca
	}
	cert, err := ca.Issue(pki.IssueRequest{Role: role, Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	opts := append(grpcbuf.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(cert.TLS, e.ca.Pool(), pki.RoleMux))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)))
	conn, err := grpc.NewClient(e.addr, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return muxv1.NewMuxClient(conn)
}

func (e *env) mws(name string) muxv1.MuxClient { return e.client(pki.RoleMWS, name, nil) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// channel is one Attach channel driven by a test acting as an MWS.
type channel struct {
	t        testing.TB
	ac       muxv1.Mux_AttachClient
	cancel   context.CancelFunc
	attached *muxv1.Attached
}

func attach(ctx context.Context, t testing.TB, c muxv1.MuxClient, id string, epoch uint64) (*channel, error) {
	t.Helper()
	return attachHello(ctx, t, c, &muxv1.Hello{StreamId: id, Epoch: epoch})
}

func attachHello(ctx context.Context, t testing.TB, c muxv1.MuxClient, hello *muxv1.Hello) (*channel, error) {
	ctx, cancel := context.WithCancel(ctx)
	ac, err := c.Attach(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	// A Send that fails with io.EOF means the server already ended the
	// call; its status comes from Recv.
	if err := ac.Send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Hello{Hello: hello}}); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, err
	}
	m, err := ac.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	if m.GetAttached() == nil {
		cancel()
		return nil, fmt.Errorf("first message is %v, want Attached", m)
	}
	return &channel{t: t, ac: ac, cancel: cancel, attached: m.GetAttached()}, nil
}

func mustAttach(ctx context.Context, t testing.TB, c muxv1.MuxClient, id string, epoch uint64) *channel {
	t.Helper()
	ch, err := attach(ctx, t, c, id, epoch)
	if err != nil {
		t.Fatalf("attach %s epoch %d: %v", id, epoch, err)
	}
	t.Cleanup(ch.cancel)
	return ch
}

func (c *channel) send(m *muxv1.AttachRequest) {
	c.t.Helper()
	if err := c.ac.Send(m); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *channel) data(off uint64, b []byte) {
	c.t.Helper()
	c.send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Data{Data: &muxv1.Data{Offset: off, Data: b}}})
}

// dataAll sends b from offset off in chunks of at most 64 KiB.
func (c *channel) dataAll(off uint64, b []byte) {
	c.t.Helper()
	for len(b) > 0 {
		n := min(len(b), 64<<10)
		c.data(off, b[:n])
		off += uint64(n)
		b = b[n:]
	}
}

func (c *channel) commit(off uint64) {
	c.t.Helper()
	c.send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Commit{Commit: &muxv1.Commit{Offset: off}}})
}

func (c *channel) closeWrite(off uint64) {
	c.t.Helper()
	c.send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_CloseWrite{CloseWrite: &muxv1.CloseWrite{Offset: off}}})
}

// wantCode fails unless err is a gRPC status with code and reason.
func wantCode(t testing.TB, err error, code codes.Code, reason string) {
	t.Helper()
	if rpcerr.Code(err) != code {
		t.Fatalf("error %v: code %v, want %v", err, rpcerr.Code(err), code)
	}
	if reason != "" && rpcerr.Reason(err) != reason {
		t.Fatalf("error %v: reason %q, want %q", err, rpcerr.Reason(err), reason)
	}
}

// recvErr reads the channel until it ends and returns the final error
// (nil for a clean end), passing each message to f.
func (c *channel) drain(f func(*muxv1.AttachResponse)) error {
	for {
		m, err := c.ac.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if f != nil {
			f(m)
		}
	}
}

func open(ctx context.Context, t testing.TB, c muxv1.MuxClient, backend string) *muxv1.OpenResponse {
	t.Helper()
	r, err := c.Open(ctx, &muxv1.OpenRequest{Backend: backend, Label: t.Name()})
	if err != nil {
		t.Fatalf("open %s: %v", backend, err)
	}
	return r
}

// pollUntil calls f until it returns true or the deadline passes.
func pollUntil(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
