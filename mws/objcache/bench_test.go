package objcache

import (
	"context"
	"net/http"
	"testing"
)

// BenchmarkFetchHit measures the cache-hit path for a 64 KB object: key
// building, index lookup, object store Get, freshness check.
func BenchmarkFetchHit(b *testing.B) {
	body := randomBytes(b, 64<<10)
	srv := newLegacy(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(body)
	})
	c := newTestCache(b, newFakeClock(), nil)
	req := newReq(b, http.MethodGet, srv.URL+"/img/1.jpg", http.Header{"Accept": {"image/*"}})
	ctx := context.Background()
	if _, err := c.Fetch(ctx, testBackend, req, "alice"); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := c.Fetch(ctx, testBackend, req, "alice")
		if err != nil || res.Outcome != Hit {
			b.Fatalf("outcome %v, err %v", res.Outcome, err)
		}
	}
	if n := srv.requests.Load(); n != 1 {
		b.Fatalf("server saw %d requests", n)
	}
}
