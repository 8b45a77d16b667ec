package objcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestFetchBytesEqualDirectAndSecondFetchHits(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
	}{
		{name: "empty", size: 0},
		{name: "200KB", size: 200 << 10},
		{name: "1.25MB", size: 1_250_000},
		{name: "1.25MiB", size: 1_310_720},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := randomBytes(t, tc.size)
			srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "image/jpeg")
				w.Header().Set("Cache-Control", "max-age=60")
				w.Write(want)
			})
			direct, err := http.Get(srv.URL + "/img")
			if err != nil {
				t.Fatal(err)
			}
			directBody, err := io.ReadAll(direct.Body)
			direct.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			c := newTestCache(t, newFakeClock(), nil) // default limits: 2 MiB objects

			res, got := fetch(t, c, srv.URL+"/img", "", nil)
			if !bytes.Equal(got, directBody) {
				t.Fatalf("body through cache (%d bytes) differs from direct body (%d bytes)", len(got), len(directBody))
			}
			if res.Outcome != Miss || !res.Stored || res.Object == nil {
				t.Fatalf("first fetch: outcome %v stored %v object %v, want miss, stored, buffered", res.Outcome, res.Stored, res.Object != nil)
			}
			if res.Object.Digest != digestOf(want) || res.Object.Size != int64(tc.size) || res.Object.ContentType != "image/jpeg" {
				t.Fatalf("object = %s %d %q, want %s %d image/jpeg", res.Object.Digest, res.Object.Size, res.Object.ContentType, digestOf(want), tc.size)
			}
			if obj, ok := c.Lookup(digestOf(want)); !ok || !bytes.Equal(obj.Body, want) {
				t.Fatalf("Lookup right after Fetch: found %v", ok)
			}
			before := srv.requests.Load() // 2: direct + first fetch

			res, got = fetch(t, c, srv.URL+"/img", "", nil)
			if res.Outcome != Hit || !bytes.Equal(got, want) {
				t.Fatalf("second fetch: outcome %v, body equal %v; want hit with same body", res.Outcome, bytes.Equal(got, want))
			}
			if n := srv.requests.Load(); n != before {
				t.Fatalf("server saw %d requests after the hit, want %d", n, before)
			}
			if s := c.Stats(); s.Hits != 1 || s.Misses != 1 || s.Upstream != 1 || s.Entries != 1 || s.StoredBytes < int64(tc.size) {
				t.Fatalf("stats = %+v", s)
			}
		})
	}
}

func TestEvictedObjectIsAMiss(t *testing.T) {
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "evict me")
	})
	c := newTestCache(t, newFakeClock(), nil)
	res, _ := fetch(t, c, srv.URL, "", nil)

	c.objects.Del(res.Object.Digest) // as ristretto does under pressure
	c.objects.Wait()

	res, body := fetch(t, c, srv.URL, "", nil)
	if res.Outcome != Miss || string(body) != "evict me" || srv.requests.Load() != 2 {
		t.Fatalf("after eviction: outcome %v body %q requests %d, want miss from upstream", res.Outcome, body, srv.requests.Load())
	}
	if _, ok := c.Lookup(res.Object.Digest); !ok {
		t.Fatal("refetched object not stored again")
	}
}

func TestIndexIsBounded(t *testing.T) {
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, r.URL.Path)
	})
	c := newTestCache(t, newFakeClock(), func(cfg *Config) { cfg.MaxEntries = 2 })
	for _, p := range []string{"/a", "/b", "/c"} {
		fetch(t, c, srv.URL+p, "", nil)
	}
	if n := c.Stats().Entries; n != 2 {
		t.Fatalf("Entries = %d, want 2", n)
	}
	if res, _ := fetch(t, c, srv.URL+"/c", "", nil); res.Outcome != Hit {
		t.Fatalf("/c: %v, want hit", res.Outcome)
	}
	if res, _ := fetch(t, c, srv.URL+"/a", "", nil); res.Outcome != Miss {
		t.Fatalf("/a (least recently used): %v, want miss", res.Outcome)
	}
}

func TestPassThrough(t *testing.T) {
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v1"`)
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		http.ServeContent(w, r, "", newFakeClock().Now(), strings.NewReader("0123456789"))
	})
	c := newTestCache(t, newFakeClock(), nil)
	ctx := context.Background()

	for _, tc := range []struct {
		name       string
		method     string
		hdr        http.Header
		wantStatus int
		wantBody   string
	}{
		{name: "HEAD", method: http.MethodHead, wantStatus: 200, wantBody: ""},
		{name: "Range", method: http.MethodGet, hdr: http.Header{"Range": {"bytes=2-4"}}, wantStatus: 206, wantBody: "234"},
		{name: "client conditional", method: http.MethodGet, hdr: http.Header{"If-None-Match": {`"v1"`}}, wantStatus: 304, wantBody: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 2 {
				before := srv.requests.Load()
				res, err := c.Fetch(ctx, testBackend, newReq(t, tc.method, srv.URL+"/x", tc.hdr), "")
				if err != nil {
					t.Fatal(err)
				}
				if res.Body == nil || res.StatusCode != tc.wantStatus || res.Outcome != Miss {
					t.Fatalf("fetch %d: status %d outcome %v streamed %v, want %d miss streamed", i, res.StatusCode, res.Outcome, res.Body != nil, tc.wantStatus)
				}
				if body := resultBody(t, res); string(body) != tc.wantBody {
					t.Fatalf("body %q, want %q", body, tc.wantBody)
				}
				if srv.requests.Load() != before+1 {
					t.Fatalf("fetch %d did not reach the server", i)
				}
			}
		})
	}

	t.Run("POST invalidates", func(t *testing.T) {
		fetch(t, c, srv.URL+"/y", "", nil)
		if res, _ := fetch(t, c, srv.URL+"/y", "", nil); res.Outcome != Hit {
			t.Fatalf("before POST: %v, want hit", res.Outcome)
		}
		res, err := c.Fetch(ctx, testBackend, newReq(t, http.MethodPost, srv.URL+"/y", nil), "")
		if err != nil {
			t.Fatal(err)
		}
		resultBody(t, res)
		if res, _ := fetch(t, c, srv.URL+"/y", "", nil); res.Outcome != Miss {
			t.Fatalf("after POST: %v, want miss", res.Outcome)
		}
	})
}

func TestClose(t *testing.T) {
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "x")
	})
	c := newTestCache(t, newFakeClock(), nil)
	res, _ := fetch(t, c, srv.URL, "", nil)
	c.Close()
	c.Close() // idempotent
	if _, err := c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, srv.URL, nil), ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Fetch after Close: %v, want ErrClosed", err)
	}
	if _, ok := c.Lookup(res.Object.Digest); ok {
		t.Fatal("Lookup after Close found an object")
	}
	_ = c.Stats() // must not panic
}

func TestFetchInvalidRequest(t *testing.T) {
	c := newTestCache(t, newFakeClock(), nil)
	if _, err := c.Fetch(context.Background(), testBackend, nil, ""); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("nil request: %v, want ErrInvalidRequest", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := NewDefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	err := Config{MaxBytes: -1, MaxObjectBytes: 0, MaxEntries: 0}.Validate()
	if err == nil {
		t.Fatal("zero config validated")
	}
	for _, field := range []string{"MaxBytes", "MaxObjectBytes", "MaxEntries"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if err := (Config{MaxBytes: 10, MaxObjectBytes: 20, MaxEntries: 1}).Validate(); err == nil || !strings.Contains(err.Error(), "MaxBytes") {
		t.Errorf("MaxBytes < MaxObjectBytes: %v, want an error naming MaxBytes", err)
	}
	if _, err := New(NewDefaultConfig(), nil, nil); err == nil || !strings.Contains(err.Error(), "transport") {
		t.Errorf("New without transport: %v", err)
	}
}

func TestCloseDuringFetches(t *testing.T) {
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, r.URL.Path)
	})
	c := newTestCache(t, newFakeClock(), nil)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			for j := range 20 {
				_, err := c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, fmt.Sprintf("%s/%d/%d", srv.URL, i, j), nil), "")
				if err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("fetch: %v", err)
				}
			}
		})
	}
	waitFor(t, "some fetches", func() bool { return srv.requests.Load() >= 20 })
	c.Close()
	wg.Wait()
}
