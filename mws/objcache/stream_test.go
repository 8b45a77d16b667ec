package objcache

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestOversizedObjectStreamsAndIsNotCached(t *testing.T) {
	const limit = 1024
	for _, tc := range []struct {
		name          string
		size          int
		contentLength bool // false: chunked, length unknown until the end
		wantStream    bool
	}{
		{name: "Content-Length over limit", size: 4 * limit, contentLength: true, wantStream: true},
		{name: "chunked over limit", size: 4 * limit, wantStream: true},
		{name: "chunked one byte over limit", size: limit + 1, wantStream: true},
		{name: "chunked exactly at limit", size: limit},
		{name: "Content-Length exactly at limit", size: limit, contentLength: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := randomBytes(t, tc.size)
			srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				if tc.contentLength {
					w.Header().Set("Content-Length", strconv.Itoa(len(want)))
				}
				for i := 0; i < len(want); i += 100 {
					w.Write(want[i:min(i+100, len(want))])
					http.NewResponseController(w).Flush() // forces chunked without Content-Length
				}
			})
			c := newTestCache(t, newFakeClock(), func(cfg *Config) { cfg.MaxObjectBytes = limit })
			for i := range 2 {
				res, body := fetch(t, c, srv.URL+"/big", "", nil)
				if !bytes.Equal(body, want) {
					t.Fatalf("fetch %d: body differs (%d bytes, want %d)", i, len(body), len(want))
				}
				if streamed := res.Body != nil; streamed != tc.wantStream {
					t.Fatalf("fetch %d: streamed %v, want %v", i, streamed, tc.wantStream)
				}
			}
			_, found := c.Lookup(digestOf(want))
			if s := c.Stats(); tc.wantStream && (found || s.StoredBytes != 0 || srv.requests.Load() != 2 || s.Uncacheable != 2) {
				t.Fatalf("oversized: Lookup %v, stats %+v, requests %d; want nothing stored and 2 requests", found, s, srv.requests.Load())
			}
			if !tc.wantStream && (!found || srv.requests.Load() != 1) {
				t.Fatalf("at limit: Lookup %v, requests %d; want stored and 1 request", found, srv.requests.Load())
			}
		})
	}
}

// An oversized body of unknown length is handed over before upstream has
// finished sending it, so the cache never holds it whole.
func TestOversizedBodyIsNotBuffered(t *testing.T) {
	const limit = 1024
	head := randomBytes(t, 3*limit)
	tail := randomBytes(t, 10*limit)
	sendTail := make(chan struct{})
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(head)
		http.NewResponseController(w).Flush()
		select {
		case <-sendTail:
			w.Write(tail)
		case <-r.Context().Done():
		}
	})
	c := newTestCache(t, newFakeClock(), func(cfg *Config) { cfg.MaxObjectBytes = limit })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Fetch returns while the server still holds back the tail.
	res, err := c.Fetch(ctx, testBackend, newReq(t, http.MethodGet, srv.URL, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Body == nil {
		t.Fatal("not streamed")
	}
	close(sendTail)
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(head, tail...)) {
		t.Fatalf("streamed body differs: %d bytes, want %d", len(got), len(head)+len(tail))
	}
}
