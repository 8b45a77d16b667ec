package mws_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestGetByteIdenticalAndCached proves that objects of every workload size
// arrive through imash exactly as a direct fetch returns them, that the MWS
// keeps each under the digest of its bytes, and that a second fetch is a
// cache hit the legacy server never sees.
func TestGetByteIdenticalAndCached(t *testing.T) {
	e := newEnv(t, envOptions{set: workloadSet(t)})
	ctx := testCtx(t)
	c, s := e.login(ctx, "pda-1", "alice")
	imgs := e.set.Images()
	minSize, maxSize := len(imgs[0].Bytes), len(imgs[0].Bytes)
	for _, img := range imgs {
		minSize, maxSize = min(minSize, len(img.Bytes)), max(maxSize, len(img.Bytes))
	}
	if minSize > 1<<10 || maxSize < 1<<20 {
		t.Fatalf("image sizes span %d..%d bytes; want 0.5 KB..1.25 MB", minSize, maxSize)
	}
	for _, img := range imgs {
		t.Run(fmt.Sprintf("%s/%dB", img.Name, len(img.Bytes)), func(t *testing.T) {
			path := "/images/" + img.Name
			before := e.http.RequestsFor(path)

			first, err := s.Get(ctx, httpBackend, path)
			if err != nil {
				t.Fatal(err)
			}
			checkObject(t, "first get", first, img, mwsv1.CacheOutcome_CACHE_OUTCOME_MISS)
			if first.Digest != digestOf(img.Bytes) {
				t.Fatalf("digest %q, want the SHA-256 of the body %q", first.Digest, digestOf(img.Bytes))
			}
			if got := e.http.RequestsFor(path); got != before+1 {
				t.Fatalf("legacy server saw %d requests for the miss, want 1", got-before)
			}

			resp, direct := e.direct(ctx, path)
			if !bytes.Equal(first.Body, direct) {
				t.Fatalf("imash body (%d bytes) differs from the direct body (%d bytes)", len(first.Body), len(direct))
			}
			for _, h := range []string{"Content-Type", "Etag", "Last-Modified", "Cache-Control"} {
				if first.Header.Get(h) != resp.Header.Get(h) {
					t.Errorf("header %s: imash %q, direct %q", h, first.Header.Get(h), resp.Header.Get(h))
				}
			}
			afterDirect := e.http.RequestsFor(path)

			second, err := s.Get(ctx, httpBackend, path)
			if err != nil {
				t.Fatal(err)
			}
			checkObject(t, "second get", second, img, mwsv1.CacheOutcome_CACHE_OUTCOME_HIT)
			if second.Digest != first.Digest {
				t.Fatalf("hit digest %q, miss digest %q", second.Digest, first.Digest)
			}
			if got := e.http.RequestsFor(path); got != afterDirect {
				t.Fatalf("the cache hit reached the legacy server (%d more requests)", got-afterDirect)
			}
		})
	}
	infos, err := c.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].ID != s.ID() || infos[0].Objects != len(imgs) {
		t.Fatalf("sessions %+v: want session %s referring to %d objects", infos, s.ID(), len(imgs))
	}
	st := e.mws.Stats().Cache
	if st.Hits != int64(len(imgs)) || st.Misses != int64(len(imgs)) || st.Upstream != int64(len(imgs)) {
		t.Fatalf("cache stats %+v: want %d hits, misses and upstream requests", st, len(imgs))
	}
	if st.StoredBytes < e.set.TotalBytes() {
		t.Fatalf("cache stores %d bytes, less than the %d bytes of the set", st.StoredBytes, e.set.TotalBytes())
	}
}

// TestGetNoStore proves that a no-store response is never kept: every fetch
// reaches the legacy server, nothing is stored and no digest is handed out.
func TestGetNoStore(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	_, s := e.login(ctx, "pda-1", "alice")
	img := e.image(1)
	path := "/nostore/" + img.Name
	const fetches = 4
	for i := range fetches {
		obj, err := s.Get(ctx, httpBackend, path)
		if err != nil {
			t.Fatal(err)
		}
		checkObject(t, fmt.Sprintf("get %d", i), obj, img, mwsv1.CacheOutcome_CACHE_OUTCOME_UNCACHED)
		if obj.Digest != "" {
			t.Fatalf("get %d: digest %q for a no-store object", i, obj.Digest)
		}
		if got := e.http.RequestsFor(path); got != int64(i+1) {
			t.Fatalf("after %d gets the legacy server saw %d requests", i+1, got)
		}
	}
	if st := e.mws.Stats().Cache; st.StoredBytes != 0 || st.Entries != 0 || st.Hits != 0 {
		t.Fatalf("cache stats %+v after no-store fetches: want nothing stored, indexed or hit", st)
	}
}

// TestGetRevalidates proves that a stale entry is revalidated with the
// legacy server (a 304 that carries no body) and served from the cache.
func TestGetRevalidates(t *testing.T) {
	// max-age=0: every reuse must revalidate.
	e := newEnv(t, envOptions{httpOpts: legacy.HTTPOptions{MaxAge: -1}})
	ctx := testCtx(t)
	_, s := e.login(ctx, "pda-1", "alice")
	img := e.image(2)
	path := "/images/" + img.Name
	first, err := s.Get(ctx, httpBackend, path)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, "first get", first, img, mwsv1.CacheOutcome_CACHE_OUTCOME_MISS)
	if first.Digest == "" {
		t.Fatal("a max-age=0 response with validators was not kept")
	}
	for i := 1; i <= 3; i++ {
		obj, err := s.Get(ctx, httpBackend, path)
		if err != nil {
			t.Fatal(err)
		}
		checkObject(t, fmt.Sprintf("reuse %d", i), obj, img, mwsv1.CacheOutcome_CACHE_OUTCOME_REVALIDATED)
		if obj.Digest != first.Digest {
			t.Fatalf("reuse %d: digest %q, want %q", i, obj.Digest, first.Digest)
		}
		if got := e.http.NotModified(); got != int64(i) {
			t.Fatalf("after reuse %d the legacy server answered %d 304s", i, got)
		}
		if got := e.http.RequestsFor(path); got != int64(i+1) {
			t.Fatalf("after reuse %d the legacy server saw %d requests", i, got)
		}
	}
	if full := e.http.FullResponses(); full != 1 {
		t.Fatalf("legacy server sent %d full bodies, want only the first", full)
	}
	if st := e.mws.Stats().Cache; st.Revalidations != 3 {
		t.Fatalf("cache stats %+v: want 3 revalidations", st)
	}
}

// TestGetKeepAlive proves that the MWS reuses keep-alive legacy
// connections: many requests, few TCP connections at the legacy server.
func TestGetKeepAlive(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	_, s := e.login(ctx, "pda-1", "alice")
	imgs := e.set.Images()
	const rounds = 5
	sequential := 0
	for range rounds {
		for _, img := range imgs {
			// /nostore/ reaches the legacy server every time.
			obj, err := s.Get(ctx, httpBackend, "/nostore/"+img.Name)
			if err != nil {
				t.Fatal(err)
			}
			checkObject(t, "sequential get", obj, img, mwsv1.CacheOutcome_CACHE_OUTCOME_UNCACHED)
			sequential++
		}
	}
	if got := e.http.Requests(); got != int64(sequential) {
		t.Fatalf("legacy server saw %d requests, want %d", got, sequential)
	}
	if got := e.http.ConnectionsAccepted(); got != 1 {
		t.Fatalf("%d sequential requests used %d legacy connections, want 1", sequential, got)
	}

	// Concurrent requests reuse their connections.
	const workers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				img := imgs[(w+i)%len(imgs)]
				obj, err := s.Get(ctx, httpBackend, "/nostore/"+img.Name)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(obj.Body, img.Bytes) {
					errs <- fmt.Errorf("worker %d: %s differs", w, img.Name)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := e.http.Requests()
	if total < int64(sequential) || total > int64(sequential+workers*each) {
		t.Fatalf("legacy server saw %d requests", total)
	}
	// net/http dials for a request that finds no idle connection and
	// keeps the new one even when another became idle meanwhile, so a
	// worker may leave one spare connection behind: at most two each,
	// against one per request without keep-alive.
	if got := e.http.ConnectionsAccepted(); got > 1+2*workers {
		t.Fatalf("%d requests used %d legacy connections; want at most %d", total, got, 1+2*workers)
	}
}
