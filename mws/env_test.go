package mws_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mux"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// The tests in this package drive a whole cluster on loopback — cluster CA,
// mux, MWS — in front of the real legacy servers of testbed/legacy, through
// clientlib or the raw device API. Nothing is mocked.

const (
	httpBackend   = "images"
	streamBackend = "stream"
	echoBackend   = "echo"
)

// testUsers are the users every env knows.
var testUsers = map[string]string{"alice": "secret", "bob": "hunter2"}

// env is a cluster in front of an HTTP legacy server, an echo server and,
// if asked for, a stream server.
type env struct {
	t      testing.TB
	cl     *cluster.Cluster
	mws    *mws.Server
	addr   string // the MWS's device-facing address
	set    *legacy.ImageSet
	http   *legacy.HTTPServer
	echo   *legacy.EchoServer
	stream *legacy.StreamServer // nil unless envOptions.stream is set
}

type envOptions struct {
	set      *legacy.ImageSet // default: smallSet
	httpOpts legacy.HTTPOptions
	stream   *legacy.StreamConfig
	users    map[string]string // added to testUsers
	tuneMWS  func(*mws.Config)
	tuneMux  func(*mux.Config)
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.set == nil {
		o.set = smallSet(t)
	}
	e := &env{t: t, set: o.set}
	var err error
	if e.http, err = legacy.NewHTTPServer(o.set, o.httpOpts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.http.Close() })
	if e.echo, err = legacy.NewEchoServer(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.echo.Close() })
	backends := map[string]string{httpBackend: e.http.Addr(), echoBackend: e.echo.Addr()}
	if o.stream != nil {
		if e.stream, err = legacy.NewStreamServer(*o.stream); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.stream.Close() })
		backends[streamBackend] = e.stream.Addr()
	}
	users := map[string]string{}
	for u, p := range testUsers {
		users[u] = p
	}
	for u, p := range o.users {
		users[u] = p
	}
	e.cl, err = cluster.Start(cluster.Options{
		Backends:     backends,
		HTTPBackends: []string{httpBackend},
		Users:        users,
		TuneMWS:      o.tuneMWS,
		TuneMux:      o.tuneMux,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the legacy servers' cleanups, so it runs first.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.cl.Close(ctx); err != nil {
			t.Errorf("closing the cluster: %v", err)
		}
	})
	e.mws, e.addr = e.cl.MWS[0], e.cl.MWSAddrs[0]
	return e
}

// smallSet is a handful of small images, quick to generate under -race.
func smallSet(t testing.TB) *legacy.ImageSet {
	t.Helper()
	set, err := legacy.GenerateImages(3, 6, 512, 48<<10)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// workloadSet spans the paper's workload sizes, 0.5 KB to 1.25 MB.
func workloadSet(t testing.TB) *legacy.ImageSet {
	t.Helper()
	set, err := legacy.GenerateImages(7, 8, 512, 1_250_000)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// dial connects a device named device to the MWS without logging in.
func (e *env) dial(device string, tune func(*clientlib.Config)) *clientlib.Client {
	e.t.Helper()
	cert, roots, err := e.cl.DeviceCert(device)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := clientlib.Config{Certificate: cert, Roots: roots}
	if tune != nil {
		tune(&cfg)
	}
	c, err := clientlib.Dial(context.Background(), e.addr, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// login dials device, logs user in and opens a session.
func (e *env) login(ctx context.Context, device, user string) (*clientlib.Client, *clientlib.Session) {
	e.t.Helper()
	c := e.dial(device, nil)
	if err := c.Login(ctx, user, testUsers[user]); err != nil {
		e.t.Fatalf("login %s on %s: %v", user, device, err)
	}
	s, err := c.OpenSession(ctx, "minibrowser")
	if err != nil {
		e.t.Fatalf("open session: %v", err)
	}
	return c, s
}

// image returns the set's i-th image (in name order).
func (e *env) image(i int) *legacy.Image { return e.set.Images()[i] }

// direct fetches path from the legacy HTTP server without imash.
func (e *env) direct(ctx context.Context, path string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.http.URL(path), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("direct GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("direct GET %s: %v", path, err)
	}
	return resp, body
}

// rawDevice talks the device API directly, for what clientlib does not let
// a well-behaved app do.
type rawDevice struct {
	t     testing.TB
	cc    *grpc.ClientConn
	api   mwsv1.DeviceClient
	token string
}

// close closes the device's connection (the device vanishes).
func (r *rawDevice) close() { _ = r.cc.Close() }

// raw dials the MWS with a device certificate named device issued by the
// cluster CA.
func (e *env) raw(device string) *rawDevice {
	e.t.Helper()
	iss, err := e.cl.CA.Issue(pki.IssueRequest{Role: pki.RoleDevice, Name: device})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.rawWithCert(iss.TLS)
}

func (e *env) rawWithCert(cert tls.Certificate) *rawDevice {
	e.t.Helper()
	cc, err := grpc.NewClient(e.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(cert, e.cl.CA.Pool(), pki.RoleMWS))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	return &rawDevice{t: e.t, cc: cc, api: mwsv1.NewDeviceClient(cc)}
}

func (r *rawDevice) login(ctx context.Context, user string) {
	r.t.Helper()
	resp, err := r.api.Login(ctx, &mwsv1.LoginRequest{User: user, Password: testUsers[user]})
	if err != nil {
		r.t.Fatalf("raw login %s: %v", user, err)
	}
	r.token = resp.Credential
}

// with returns ctx carrying the device's bearer credential.
func (r *rawDevice) with(ctx context.Context) context.Context {
	return withToken(ctx, r.token)
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// openSession opens a session and returns its id and a context carrying
// the device's credential and the session key.
func (r *rawDevice) openSession(ctx context.Context) (string, context.Context) {
	r.t.Helper()
	resp, err := r.api.OpenSession(r.with(ctx), &mwsv1.OpenSessionRequest{App: "raw"})
	if err != nil {
		r.t.Fatalf("raw open session: %v", err)
	}
	return resp.SessionId, metadata.AppendToOutgoingContext(r.with(ctx), "imash-session-key", resp.SessionKey)
}

// wantCode fails unless err is a gRPC status with code and reason.
func wantCode(t testing.TB, err error, code codes.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v %s", code, reason)
	}
	if rpcerr.Code(err) != code || rpcerr.Reason(err) != reason {
		t.Fatalf("error %v: got %v %q, want %v %q", err, rpcerr.Code(err), rpcerr.Reason(err), code, reason)
	}
}

// pollUntil calls f until it returns true, failing after a generous
// deadline (the machine may be loaded and under -race).
func pollUntil(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// checkObject fails unless obj is img's bytes with the expected outcome.
func checkObject(t testing.TB, what string, obj *clientlib.Object, img *legacy.Image, want mwsv1.CacheOutcome) {
	t.Helper()
	if !bytes.Equal(obj.Body, img.Bytes) {
		t.Fatalf("%s: body of %d bytes differs from the %d bytes of %s", what, len(obj.Body), len(img.Bytes), img.Name)
	}
	if obj.Cache != want {
		t.Fatalf("%s: cache outcome %v, want %v", what, obj.Cache, want)
	}
	if obj.Status != http.StatusOK || obj.ContentType != "image/jpeg" {
		t.Fatalf("%s: status %d, content type %q", what, obj.Status, obj.ContentType)
	}
}

// goroutinesIn counts the goroutines whose stack mentions fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

func describeGoroutines(fns []string) string {
	var b strings.Builder
	for _, fn := range fns {
		fmt.Fprintf(&b, "%s=%d ", fn, goroutinesIn(fn))
	}
	return b.String()
}
