package objcache

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
)

func TestConcurrentIdenticalMissesShareOneRequest(t *testing.T) {
	const n = 50
	body := randomBytes(t, 64<<10)
	release := make(chan struct{})
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write(body)
	})
	c := newTestCache(t, newFakeClock(), nil)
	url := srv.URL + "/popular"

	results := make([]*Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, url, nil), "alice")
		})
	}
	// Hold the upstream response until every other Fetch is waiting on the
	// first one's flight.
	key := flightKey(testBackend, newReq(t, http.MethodGet, url, nil), "alice")
	waitFor(t, "49 followers", func() bool { return c.flights.waiting(key) == n-1 })
	close(release)
	wg.Wait()

	if got := srv.requests.Load(); got != 1 {
		t.Fatalf("server saw %d requests, want 1", got)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("fetch %d: %v", i, errs[i])
		}
		if !bytes.Equal(results[i].Object.Body, body) || results[i].Object.Digest != digestOf(body) {
			t.Fatalf("fetch %d: wrong object", i)
		}
	}
	if s := c.Stats(); s.Upstream != 1 || s.Collapsed != n-1 || s.Misses != n {
		t.Fatalf("stats %+v, want 1 upstream, %d collapsed, %d misses", s, n-1, n)
	}
}

func TestDifferentRequestsAreNotCollapsed(t *testing.T) {
	if flightKey("b", newReq(t, http.MethodGet, "http://x/p", http.Header{"Accept": {"a"}}), "u") ==
		flightKey("b", newReq(t, http.MethodGet, "http://x/p", http.Header{"Accept": {"b"}}), "u") {
		t.Error("requests with different Accept share a flight key")
	}
	if flightKey("b", newReq(t, http.MethodGet, "http://x/p", nil), "alice") ==
		flightKey("b", newReq(t, http.MethodGet, "http://x/p", nil), "bob") {
		t.Error("requests of different users share a flight key")
	}
	if flightKey("b", newReq(t, http.MethodGet, "http://x/p", nil), "") ==
		flightKey("c", newReq(t, http.MethodGet, "http://x/p", nil), "") {
		t.Error("requests to different backends share a flight key")
	}
}

// A follower that cannot share the leader's answer (a stream) fetches on
// its own, and one whose leader gave up retries.
func TestCollapsedFollowersOfAStreamFetchAlone(t *testing.T) {
	const n = 5
	body := randomBytes(t, 4<<10)
	release := make(chan struct{})
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Write(body)
	})
	c := newTestCache(t, newFakeClock(), func(cfg *Config) { cfg.MaxObjectBytes = 1024 })
	url := srv.URL + "/video"
	results := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, url, nil), "")
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = resultBody(t, res)
		})
	}
	key := flightKey(testBackend, newReq(t, http.MethodGet, url, nil), "")
	waitFor(t, "followers", func() bool { return c.flights.waiting(key) == n-1 })
	close(release)
	wg.Wait()
	for i, got := range results {
		if !bytes.Equal(got, body) {
			t.Fatalf("fetch %d: body differs", i)
		}
	}
	if got := srv.requests.Load(); got != n {
		t.Fatalf("server saw %d requests, want %d (one per stream)", got, n)
	}
}

func TestFollowerRetriesWhenLeaderIsCanceled(t *testing.T) {
	release := make(chan struct{})
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			w.Header().Set("Cache-Control", "max-age=60")
			w.Write([]byte("ok"))
		case <-r.Context().Done():
		}
	})
	c := newTestCache(t, newFakeClock(), nil)
	url := srv.URL + "/slow"
	key := flightKey(testBackend, newReq(t, http.MethodGet, url, nil), "")

	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := c.Fetch(leaderCtx, testBackend, newReq(t, http.MethodGet, url, nil), "")
		leaderErr <- err
	}()
	waitFor(t, "the leader's request", func() bool { return srv.requests.Load() == 1 })
	followerRes := make(chan *Result, 1)
	go func() {
		res, err := c.Fetch(context.Background(), testBackend, newReq(t, http.MethodGet, url, nil), "")
		if err != nil {
			t.Error(err)
		}
		followerRes <- res
	}()
	waitFor(t, "the follower", func() bool { return c.flights.waiting(key) == 1 })
	cancelLeader()
	if err := <-leaderErr; err == nil {
		t.Fatal("canceled leader succeeded")
	}
	waitFor(t, "the follower's own request", func() bool { return srv.requests.Load() == 2 })
	close(release)
	if res := <-followerRes; res == nil || string(res.Object.Body) != "ok" {
		t.Fatalf("follower got %+v", res)
	}
}
