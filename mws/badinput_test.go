package mws_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestAuthRefused proves that every way of calling without the right
// certificate or credential is refused with its own code and reason, and
// that the refusals change nothing for the legitimate device.
func TestAuthRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)

	good := e.raw("pda-1")
	good.login(ctx, "alice")
	sid, sctx := good.openSession(ctx)
	other := e.raw("laptop-1")

	otherCA, err := pki.NewCA("imash.test", 0)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.Issue(pki.IssueRequest{Role: pki.RoleDevice, Name: "pda-1"})
	if err != nil {
		t.Fatal(err)
	}
	roleCert := func(role pki.Role) *rawDevice {
		iss, err := e.cl.CA.Issue(pki.IssueRequest{Role: role, Name: "impostor"})
		if err != nil {
			t.Fatal(err)
		}
		return e.rawWithCert(iss.TLS)
	}

	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
	}{
		{"wrong password", func() error {
			_, err := other.api.Login(ctx, &mwsv1.LoginRequest{User: "alice", Password: "not-secret"})
			return err
		}, codes.Unauthenticated, "BAD_CREDENTIALS"},
		{"unknown user", func() error {
			_, err := other.api.Login(ctx, &mwsv1.LoginRequest{User: "mallory", Password: "secret"})
			return err
		}, codes.Unauthenticated, "BAD_CREDENTIALS"},
		{"no login", func() error {
			_, err := other.api.OpenSession(ctx, &mwsv1.OpenSessionRequest{App: "minibrowser"})
			return err
		}, codes.Unauthenticated, "NO_CREDENTIAL"},
		{"no login, streaming call", func() error {
			st, err := other.api.Get(ctx, &mwsv1.GetRequest{SessionId: sid, Backend: httpBackend, Path: "/images/x"})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}, codes.Unauthenticated, "NO_CREDENTIAL"},
		{"made-up credential", func() error {
			_, err := other.api.ListSessions(withToken(ctx, "bm90IGEgdG9rZW4"), &mwsv1.ListSessionsRequest{})
			return err
		}, codes.Unauthenticated, "BAD_CREDENTIAL"},
		{"credential of another device", func() error {
			_, err := other.api.ListSessions(withToken(ctx, good.token), &mwsv1.ListSessionsRequest{})
			return err
		}, codes.Unauthenticated, "CREDENTIAL_DEVICE_MISMATCH"},
		{"credential of another device, on its session", func() error {
			st, err := other.api.Get(withToken(ctx, good.token), &mwsv1.GetRequest{SessionId: sid, Backend: httpBackend, Path: "/images/" + e.image(0).Name})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}, codes.Unauthenticated, "CREDENTIAL_DEVICE_MISMATCH"},
		{"certificate of another CA", func() error {
			_, err := e.rawWithCert(foreign.TLS).api.Login(ctx, &mwsv1.LoginRequest{User: "alice", Password: "secret"})
			return err
		}, codes.Unavailable, ""},
		{"MWS certificate as a device", func() error {
			_, err := roleCert(pki.RoleMWS).api.Login(ctx, &mwsv1.LoginRequest{User: "alice", Password: "secret"})
			return err
		}, codes.PermissionDenied, "WRONG_ROLE"},
		{"mux certificate as a device", func() error {
			_, err := roleCert(pki.RoleMux).api.Login(ctx, &mwsv1.LoginRequest{User: "alice", Password: "secret"})
			return err
		}, codes.PermissionDenied, "WRONG_ROLE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.reason == "" {
				// A refused TLS handshake carries no status detail.
				if rpcerr.Code(err) != tc.code {
					t.Fatalf("error %v: code %v, want %v", err, rpcerr.Code(err), tc.code)
				}
				return
			}
			wantCode(t, err, tc.code, tc.reason)
		})
	}

	// The legitimate device is untouched: its credential and session work,
	// and nothing reached the legacy server.
	if n := e.http.Requests(); n != 0 {
		t.Fatalf("refused calls reached the legacy server %d times", n)
	}
	list, err := good.api.ListSessions(good.with(ctx), &mwsv1.ListSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Sessions) != 1 || list.Sessions[0].SessionId != sid {
		t.Fatalf("sessions after the refusals: %v", list.Sessions)
	}
	img := e.image(0)
	if body, meta := rawGet(t, good, sctx, sid, "/images/"+img.Name); string(body) != string(img.Bytes) || meta.GetCache() != mwsv1.CacheOutcome_CACHE_OUTCOME_MISS {
		t.Fatalf("get after the refusals: %d bytes, %v", len(body), meta.GetCache())
	}

	// After Logout the credential is dead.
	if _, err := good.api.Logout(good.with(ctx), &mwsv1.LogoutRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = good.api.ListSessions(good.with(ctx), &mwsv1.ListSessionsRequest{})
	wantCode(t, err, codes.Unauthenticated, "BAD_CREDENTIAL")
}

// rawGet fetches path over the raw API and returns the body and metadata.
func rawGet(t testing.TB, r *rawDevice, ctx context.Context, sid, path string) ([]byte, *mwsv1.ObjectMeta) {
	t.Helper()
	st, err := r.api.Get(ctx, &mwsv1.GetRequest{SessionId: sid, Backend: httpBackend, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var meta *mwsv1.ObjectMeta
	var body []byte
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return body, meta
		}
		if err != nil {
			t.Fatalf("raw get %s: %v", path, err)
		}
		if m.GetMeta() != nil {
			meta = m.GetMeta()
		}
		body = append(body, m.GetChunk()...)
	}
}

// TestBadRequests proves that malformed Gets and Streams are refused
// before anything reaches a legacy server, and that the session keeps
// working.
func TestBadRequests(t *testing.T) {
	e := newEnv(t, envOptions{stream: &legacy.StreamConfig{}})
	ctx := testCtx(t)
	_, s := e.login(ctx, "pda-1", "alice")

	manyHeaders := make([]clientlib.GetOption, 0, 40)
	for i := range 40 {
		manyHeaders = append(manyHeaders, clientlib.WithHeader(fmt.Sprintf("X-H%d", i), "v"))
	}
	img := e.image(0)
	tests := []struct {
		name    string
		backend string
		path    string
		opts    []clientlib.GetOption
		code    codes.Code
		reason  string
	}{
		{"unknown backend", "nope", "/images/" + img.Name, nil, codes.NotFound, "UNKNOWN_BACKEND"},
		{"stream-only backend", echoBackend, "/images/" + img.Name, nil, codes.NotFound, "UNKNOWN_BACKEND"},
		{"empty path", httpBackend, "", nil, codes.InvalidArgument, "BAD_PATH"},
		{"relative path", httpBackend, "images/" + img.Name, nil, codes.InvalidArgument, "BAD_PATH"},
		{"absolute URL", httpBackend, "http://evil.example/x", nil, codes.InvalidArgument, "BAD_PATH"},
		{"control character", httpBackend, "/images/\x00x", nil, codes.InvalidArgument, "BAD_PATH"},
		{"path too long", httpBackend, "/" + strings.Repeat("a", 5000), nil, codes.InvalidArgument, "BAD_PATH"},
		{"header name with a space", httpBackend, "/images/" + img.Name, []clientlib.GetOption{clientlib.WithHeader("Bad Header", "x")}, codes.InvalidArgument, "BAD_HEADER"},
		{"header value with CRLF", httpBackend, "/images/" + img.Name, []clientlib.GetOption{clientlib.WithHeader("X-Ok", "a\r\nX-Injected: 1")}, codes.InvalidArgument, "BAD_HEADER"},
		{"empty header name", httpBackend, "/images/" + img.Name, []clientlib.GetOption{clientlib.WithHeader("", "x")}, codes.InvalidArgument, "BAD_HEADER"},
		{"too many headers", httpBackend, "/images/" + img.Name, manyHeaders, codes.InvalidArgument, "TOO_MANY_HEADERS"},
		{"headers too large", httpBackend, "/images/" + img.Name, []clientlib.GetOption{clientlib.WithHeader("X-Big", strings.Repeat("b", 9000))}, codes.InvalidArgument, "HEADERS_TOO_LARGE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Get(ctx, tc.backend, tc.path, tc.opts...)
			wantCode(t, err, tc.code, tc.reason)
		})
	}
	t.Run("stream to an unknown backend", func(t *testing.T) {
		_, err := s.Dial(ctx, "nope")
		wantCode(t, err, codes.NotFound, "UNKNOWN_BACKEND")
	})
	t.Run("resume of an unknown stream", func(t *testing.T) {
		_, err := s.Resume(ctx, "0123456789abcdef", 0)
		wantCode(t, err, codes.NotFound, "UNKNOWN_STREAM")
	})

	if n := e.http.Requests(); n != 0 {
		t.Fatalf("bad requests reached the legacy HTTP server %d times", n)
	}
	if n := e.stream.Accepted(); n != 0 {
		t.Fatalf("bad requests opened %d legacy stream connections", n)
	}
	if st := e.mws.Stats().Cache; st.Entries != 0 || st.StoredBytes != 0 || st.Upstream != 0 {
		t.Fatalf("cache changed by bad requests: %+v", st)
	}
	obj, err := s.Get(ctx, httpBackend, "/images/"+img.Name)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, "get after bad requests", obj, img, mwsv1.CacheOutcome_CACHE_OUTCOME_MISS)
}

// TestSessionOfAnotherUser proves that a user cannot reach another user's
// session, whatever the call, and cannot learn that it exists.
func TestSessionOfAnotherUser(t *testing.T) {
	e := newEnv(t, envOptions{stream: &legacy.StreamConfig{}})
	ctx := testCtx(t)
	ac, as := e.login(ctx, "pda-1", "alice")
	bob := e.raw("laptop-1")
	bob.login(ctx, "bob")
	bctx := bob.with(ctx)
	img := e.image(0)

	checks := []struct {
		name string
		call func(id string) error
	}{
		{"get", func(id string) error {
			st, err := bob.api.Get(bctx, &mwsv1.GetRequest{SessionId: id, Backend: httpBackend, Path: "/images/" + img.Name})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}},
		{"stream", func(id string) error {
			st, err := bob.api.Stream(bctx)
			if err == nil {
				err = st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Open{Open: &mwsv1.StreamOpen{SessionId: id, Backend: streamBackend}}})
			}
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}},
		{"close", func(id string) error {
			_, err := bob.api.CloseSession(bctx, &mwsv1.CloseSessionRequest{SessionId: id})
			return err
		}},
	}
	for _, c := range checks {
		for _, target := range []struct{ name, id string }{{"alice's session", as.ID()}, {"no such session", strings.Repeat("0", 32)}} {
			t.Run(c.name+" on "+target.name, func(t *testing.T) {
				// The same answer for both, so session ids cannot be probed.
				wantCode(t, c.call(target.id), codes.NotFound, "UNKNOWN_SESSION")
			})
		}
	}
	if n := e.http.Requests(); n != 0 {
		t.Fatalf("bob's calls reached the legacy HTTP server %d times", n)
	}
	if n := e.stream.Accepted(); n != 0 {
		t.Fatalf("bob's calls opened %d legacy stream connections", n)
	}
	list, err := bob.api.ListSessions(bctx, &mwsv1.ListSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Sessions) != 0 {
		t.Fatalf("bob sees sessions %v", list.Sessions)
	}
	infos, err := ac.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].ID != as.ID() {
		t.Fatalf("alice's sessions: %+v", infos)
	}
	obj, err := as.Get(ctx, httpBackend, "/images/"+img.Name)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, "alice's get", obj, img, mwsv1.CacheOutcome_CACHE_OUTCOME_MISS)
}

// TestSessionLimits proves the per-user and per-MWS session limits, and
// that hitting them leaves the existing sessions working.
func TestSessionLimits(t *testing.T) {
	const perUser, perMWS = 3, 5
	e := newEnv(t, envOptions{tuneMWS: func(c *mws.Config) {
		c.MaxSessionsPerUser = perUser
		c.MaxSessions = perMWS
	}})
	ctx := testCtx(t)
	alice := e.dial("pda-1", nil)
	if err := alice.Login(ctx, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	bob := e.dial("laptop-1", nil)
	if err := bob.Login(ctx, "bob", "hunter2"); err != nil {
		t.Fatal(err)
	}
	var mine []*clientlib.Session
	for range perUser {
		s, err := alice.OpenSession(ctx, "minibrowser")
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, s)
	}
	_, err := alice.OpenSession(ctx, "minibrowser")
	wantCode(t, err, codes.ResourceExhausted, "TOO_MANY_USER_SESSIONS")

	for range perMWS - perUser {
		if _, err := bob.OpenSession(ctx, "minibrowser"); err != nil {
			t.Fatalf("bob is under his own limit: %v", err)
		}
	}
	_, err = bob.OpenSession(ctx, "minibrowser")
	wantCode(t, err, codes.ResourceExhausted, "TOO_MANY_SESSIONS")
	if n := e.mws.Stats().Sessions; n != perMWS {
		t.Fatalf("MWS holds %d sessions, want %d", n, perMWS)
	}

	img := e.image(0)
	for i, s := range mine {
		if _, err := s.Get(ctx, httpBackend, "/images/"+img.Name); err != nil {
			t.Fatalf("session %d after the refusals: %v", i, err)
		}
	}
	if err := mine[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.OpenSession(ctx, "minibrowser"); err != nil {
		t.Fatalf("a closed session frees its place: %v", err)
	}
}

// TestUpstreamBroken proves that a legacy server answering garbage or
// cutting a body short gives the device a typed error, and that nothing of
// the broken response is cached: a later fetch goes upstream again.
func TestUpstreamBroken(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	_, s := e.login(ctx, "pda-1", "alice")
	img := e.image(3)
	tests := []struct {
		name   string
		path   string
		code   codes.Code
		reason string
	}{
		{"malformed status line", "/garbage", codes.Unavailable, "UPSTREAM_MALFORMED"},
		{"body cut short", "/truncated/" + img.Name, codes.DataLoss, "UPSTREAM_TRUNCATED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := 1; i <= 2; i++ {
				before := e.mws.Stats().Cache
				_, err := s.Get(ctx, httpBackend, tc.path)
				wantCode(t, err, tc.code, tc.reason)
				t.Logf("fetch %d: %v", i, err)
				if got := e.http.RequestsFor(tc.path); got < int64(i) {
					t.Fatalf("fetch %d: legacy server saw %d requests; the failure was answered from the cache", i, got)
				}
				after := e.mws.Stats().Cache
				if after.Errors != before.Errors+1 || after.Entries != 0 || after.StoredBytes != 0 || after.Hits != 0 {
					t.Fatalf("fetch %d: cache stats %+v: want one more error and nothing stored", i, after)
				}
			}
		})
	}
	// The MWS and the legacy connection pool recover.
	obj, err := s.Get(ctx, httpBackend, "/images/"+img.Name)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, "get after broken responses", obj, img, mwsv1.CacheOutcome_CACHE_OUTCOME_MISS)
}

// TestObjectOverCacheLimit proves that an object larger than the MWS's
// per-object limit is streamed through uncached and byte-identical, that a
// body cut short mid-stream still ends in a typed error, and that smaller
// objects are cached as usual.
func TestObjectOverCacheLimit(t *testing.T) {
	const limit = 16 << 10
	e := newEnv(t, envOptions{tuneMWS: func(c *mws.Config) {
		c.Cache.MaxObjectBytes = limit
		c.GetChunk = 4 << 10 // several chunks per object
	}})
	ctx := testCtx(t)
	_, s := e.login(ctx, "pda-1", "alice")
	var small, big *legacy.Image
	for _, img := range e.set.Images() {
		switch {
		case len(img.Bytes) <= limit && small == nil:
			small = img
		case len(img.Bytes) > 2*limit && big == nil:
			big = img
		}
	}
	if small == nil || big == nil {
		t.Fatalf("image set %v has no image under %d bytes or none over twice that", e.set.Sizes(), limit)
	}

	path := "/images/" + big.Name
	for i := 1; i <= 2; i++ {
		obj, err := s.Get(ctx, httpBackend, path)
		if err != nil {
			t.Fatal(err)
		}
		checkObject(t, fmt.Sprintf("big get %d", i), obj, big, mwsv1.CacheOutcome_CACHE_OUTCOME_UNCACHED)
		if obj.Digest != "" {
			t.Fatalf("big get %d: digest %q for an object the MWS does not keep", i, obj.Digest)
		}
		if got := e.http.RequestsFor(path); got != int64(i) {
			t.Fatalf("big get %d: legacy server saw %d requests", i, got)
		}
	}
	if st := e.mws.Stats().Cache; st.StoredBytes != 0 || st.Entries != 0 {
		t.Fatalf("cache stats %+v: the oversized object was kept", st)
	}

	_, err := s.Get(ctx, httpBackend, "/truncated/"+big.Name)
	wantCode(t, err, codes.DataLoss, "UPSTREAM_TRUNCATED")

	spath := "/images/" + small.Name
	for i, want := range []mwsv1.CacheOutcome{mwsv1.CacheOutcome_CACHE_OUTCOME_MISS, mwsv1.CacheOutcome_CACHE_OUTCOME_HIT} {
		obj, err := s.Get(ctx, httpBackend, spath)
		if err != nil {
			t.Fatal(err)
		}
		checkObject(t, fmt.Sprintf("small get %d", i), obj, small, want)
	}
	if got := e.http.RequestsFor(spath); got != 1 {
		t.Fatalf("small object fetched upstream %d times", got)
	}
}

// TestAckBeyondDelivered proves that a device acknowledging server bytes it
// was never sent is refused, commits nothing at the mux, and that the
// stream is still whole: resuming it from offset 0 delivers every byte
// once, over the one legacy connection.
func TestAckBeyondDelivered(t *testing.T) {
	const size = 1 << 20
	e := newEnv(t, envOptions{stream: &legacy.StreamConfig{SendBytes: size, Seed: 9, CloseWriteAfterSend: true}})
	ctx := testCtx(t)
	r := e.raw("pda-1")
	r.login(ctx, "alice")
	sid, sctx := r.openSession(ctx)

	st, err := r.api.Stream(sctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *mwsv1.StreamRequest) {
		t.Helper()
		if err := st.Send(m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Open{Open: &mwsv1.StreamOpen{SessionId: sid, Backend: streamBackend}}})
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	opened := first.GetOpened()
	if opened == nil || opened.DownOffset != 0 {
		t.Fatalf("first message %v, want Opened at 0", first)
	}
	var got uint64
	for got == 0 {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got += uint64(len(m.GetData().GetData()))
	}
	// Beyond anything the MWS can have sent: the legacy server sends only
	// size bytes.
	send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Ack{Ack: &mwsv1.StreamAck{Offset: size + 1}}})
	for err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.InvalidArgument, "ACK_BEYOND_DELIVERED")

	// Resume as clientlib's Session.Resume does (its session key is not
	// ours to use): everything from 0 arrives, because nothing was
	// committed.
	st2, err := r.api.Stream(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Open{Open: &mwsv1.StreamOpen{SessionId: sid, StreamId: opened.StreamId}}}); err != nil {
		t.Fatal(err)
	}
	m, err := st2.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.GetOpened().GetStreamId() != opened.StreamId || m.GetOpened().GetDownOffset() != 0 {
		t.Fatalf("resume answered %v, want the stream at offset 0", m)
	}
	h := sha256.New()
	var next uint64
	for eof := false; !eof; {
		m, err := st2.Recv()
		if err != nil {
			t.Fatalf("after %d bytes: %v", next, err)
		}
		switch {
		case m.GetData() != nil:
			if m.GetData().Offset != next {
				t.Fatalf("data at %d, want %d", m.GetData().Offset, next)
			}
			h.Write(m.GetData().Data)
			next += uint64(len(m.GetData().Data))
		case m.GetEof() != nil:
			eof = true
		}
	}
	lc, err := e.stream.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	<-lc.SendDone()
	if next != size || [32]byte(h.Sum(nil)) != lc.SentSum() {
		t.Fatalf("resumed stream delivered %d bytes (want %d) or different bytes", next, size)
	}
	if n := e.stream.Accepted(); n != 1 {
		t.Fatalf("legacy server accepted %d connections, want 1", n)
	}
	if err := st2.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Close{Close: &mwsv1.StreamClose{}}}); err != nil {
		t.Fatal(err)
	}
}
