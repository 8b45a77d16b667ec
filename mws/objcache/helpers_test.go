package objcache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testBackend = "legacy"

// legacy is an unmodified HTTP server on loopback that counts the requests
// reaching it.
type legacy struct {
	*httptest.Server
	requests atomic.Int64
}

func newLegacy(t testing.TB, h http.HandlerFunc) *legacy {
	t.Helper()
	l := &legacy{}
	l.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.requests.Add(1)
		h(w, r)
	}))
	t.Cleanup(l.Close)
	return l
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestCache returns a Cache over a real http.Transport with the default
// config changed by edit (may be nil) and the fake clock.
func newTestCache(t testing.TB, clock *fakeClock, edit func(*Config)) *Cache {
	t.Helper()
	cfg := NewDefaultConfig()
	cfg.MaxEntries = 1024
	cfg.Now = clock.Now
	if edit != nil {
		edit(&cfg)
	}
	tr := &http.Transport{}
	c, err := New(cfg, tr, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		tr.CloseIdleConnections()
	})
	return c
}

func newReq(t testing.TB, method, url string, hdr http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	return req
}

// fetch runs Fetch and returns the result and its whole body.
func fetch(t testing.TB, c *Cache, url, user string, hdr http.Header) (*Result, []byte) {
	t.Helper()
	res, err := c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, url, hdr), user)
	if err != nil {
		t.Fatalf("Fetch %s: %v", url, err)
	}
	return res, resultBody(t, res)
}

func resultBody(t testing.TB, res *Result) []byte {
	t.Helper()
	if (res.Object == nil) == (res.Body == nil) {
		t.Fatalf("Result has Object=%v Body=%v: want exactly one", res.Object != nil, res.Body != nil)
	}
	if res.Object != nil {
		return res.Object.Body
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read streamed body: %v", err)
	}
	return b
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return DigestPrefix + hex.EncodeToString(sum[:])
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
