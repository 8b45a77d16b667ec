package objcache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
)

// hijacked returns a handler that takes over the connection, writes raw and
// closes it: a legacy server that breaks the protocol.
func hijacked(t *testing.T, raw string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		buf.WriteString(raw)
		buf.Flush()
	}
}

func TestUpstreamErrorsCacheNothing(t *testing.T) {
	const partial = "0123456789"
	for _, tc := range []struct {
		name      string
		raw       string
		wantOp    string
		wantUnder error // errors.Is target, nil to skip
	}{
		{
			name:      "body shorter than Content-Length",
			raw:       "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nCache-Control: max-age=60\r\n\r\n" + partial,
			wantOp:    "read body",
			wantUnder: io.ErrUnexpectedEOF,
		},
		{
			name:      "connection closed mid-chunk",
			raw:       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\na\r\n" + partial + "\r\n400\r\nabc",
			wantOp:    "read body",
			wantUnder: io.ErrUnexpectedEOF,
		},
		{
			name:   "garbage status line",
			raw:    "SSH-2.0-OpenSSH_9.6\r\n\r\n",
			wantOp: "round trip",
		},
		{
			name:   "closed before the response",
			raw:    "",
			wantOp: "round trip",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLegacy(t, hijacked(t, tc.raw))
			c := newTestCache(t, newFakeClock(), nil)
			for i := range 2 {
				res, err := c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, srv.URL+"/obj", nil), "")
				if err == nil {
					t.Fatalf("fetch %d: got a result (status %d), want an error", i, res.StatusCode)
				}
				var ue *UpstreamError
				if !errors.As(err, &ue) || ue.Backend != testBackend || ue.Op != tc.wantOp {
					t.Fatalf("fetch %d: error %v (%T), want *UpstreamError{Backend: %q, Op: %q}", i, err, err, testBackend, tc.wantOp)
				}
				if tc.wantUnder != nil && !errors.Is(err, tc.wantUnder) {
					t.Fatalf("fetch %d: errors.Is(%v, %v) = false", i, err, tc.wantUnder)
				}
				// Every fetch reaches the server: nothing was cached.
				if n := srv.requests.Load(); n != int64(i+1) {
					t.Fatalf("fetch %d: server saw %d requests", i, n)
				}
			}
			if _, ok := c.Lookup(digestOf([]byte(partial))); ok {
				t.Fatal("the partial body is in the object store")
			}
			if s := c.Stats(); s.StoredBytes != 0 || s.Entries != 0 || s.Errors != 2 {
				t.Fatalf("stats %+v, want nothing stored and 2 errors", s)
			}
		})
	}
}

func TestStreamedBodyErrorIsUpstreamError(t *testing.T) {
	srv := newLegacy(t, hijacked(t, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nonly this"))
	c := newTestCache(t, newFakeClock(), func(cfg *Config) { cfg.MaxObjectBytes = 1000 })
	res, err := c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, srv.URL, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, err = io.ReadAll(res.Body)
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Op != "read body" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading a truncated stream: %v, want *UpstreamError wrapping io.ErrUnexpectedEOF", err)
	}
}

func TestFetchCanceled(t *testing.T) {
	release := make(chan struct{})
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	c := newTestCache(t, newFakeClock(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Fetch(ctx, testBackend, newReq(t, http.MethodGet, srv.URL, nil), "")
		done <- err
	}()
	waitFor(t, "the request to reach the server", func() bool { return srv.requests.Load() == 1 })
	cancel()
	err := <-done
	var ue *UpstreamError
	if !errors.As(err, &ue) || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled fetch: %v, want *UpstreamError wrapping context.Canceled", err)
	}
}
