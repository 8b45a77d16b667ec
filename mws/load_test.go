package mws_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// TestConcurrentSessions runs 200 sessions at once, spread over 20 devices
// and users, each making 50 requests: a mix of cacheable images (hits once
// cached) and no-store images (always upstream). Every body must be exact,
// every outcome consistent, and the cache must have absorbed the
// cacheable requests.
func TestConcurrentSessions(t *testing.T) {
	devices, perDevice, requests := 20, 10, 50
	if testing.Short() {
		devices, perDevice, requests = 5, 4, 10
	}
	users := map[string]string{}
	for d := range devices {
		users[fmt.Sprintf("user-%02d", d)] = fmt.Sprintf("pw-%02d", d)
	}
	e := newEnv(t, envOptions{users: users, tuneMWS: func(c *mws.Config) { c.MaxSessionsPerUser = perDevice }})
	ctx := testCtx(t)
	imgs := e.set.Images()

	type session struct {
		s    *clientlib.Session
		name string
	}
	var sessions []session
	for d := range devices {
		c := e.dial(fmt.Sprintf("device-%02d", d), nil)
		user := fmt.Sprintf("user-%02d", d)
		if err := c.Login(ctx, user, users[user]); err != nil {
			t.Fatal(err)
		}
		for i := range perDevice {
			s, err := c.OpenSession(ctx, "minibrowser")
			if err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, session{s, fmt.Sprintf("device-%02d/session-%d", d, i)})
		}
	}

	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		cachedGets      int64
		nostoreGets     = map[string]int64{}
		outcomes        = map[mwsv1.CacheOutcome]int64{}
		errs            []error
		ctxRun, stopRun = context.WithCancel(ctx)
	)
	defer stopRun()
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		stopRun()
	}
	start := make(chan struct{})
	for i, ss := range sessions {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			<-start
			for r := range requests {
				img := imgs[rng.IntN(len(imgs))]
				nostore := rng.IntN(4) == 0
				path := "/images/" + img.Name
				if nostore {
					path = "/nostore/" + img.Name
				}
				obj, err := ss.s.Get(ctxRun, httpBackend, path)
				if err != nil {
					fail(fmt.Errorf("%s request %d %s: %w", ss.name, r, path, err))
					return
				}
				if !bytes.Equal(obj.Body, img.Bytes) {
					fail(fmt.Errorf("%s request %d %s: %d bytes differ from the %d of the image", ss.name, r, path, len(obj.Body), len(img.Bytes)))
					return
				}
				switch {
				case nostore && (obj.Cache != mwsv1.CacheOutcome_CACHE_OUTCOME_UNCACHED || obj.Digest != ""):
					fail(fmt.Errorf("%s request %d %s: outcome %v digest %q for a no-store object", ss.name, r, path, obj.Cache, obj.Digest))
					return
				case !nostore && obj.Digest != digestOf(img.Bytes):
					// A cacheable object is always kept (unless the object
					// store refused it, which it must not do while far from
					// full).
					fail(fmt.Errorf("%s request %d %s: outcome %v digest %q", ss.name, r, path, obj.Cache, obj.Digest))
					return
				}
				mu.Lock()
				outcomes[obj.Cache]++
				if nostore {
					nostoreGets[path]++
				} else {
					cachedGets++
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	total := int64(len(sessions) * requests)
	var sum int64
	for _, n := range outcomes {
		sum += n
	}
	if sum != total {
		t.Fatalf("%d requests answered, want %d", sum, total)
	}
	// Every no-store request reached the legacy server, except those the
	// MWS collapsed with an identical concurrent request of the same user
	// (documented objcache behaviour): never more than were made.
	var nostoreTotal, nostoreUpstream int64
	for path, n := range nostoreGets {
		up := e.http.RequestsFor(path)
		if up < 1 || up > n {
			t.Errorf("%s: %d requests, %d reached the legacy server", path, n, up)
		}
		nostoreTotal += n
		nostoreUpstream += up
	}
	// Cacheable images: the legacy server saw a handful per image, not one
	// per request.
	var cachedUpstream int64
	for _, img := range imgs {
		cachedUpstream += e.http.RequestsFor("/images/" + img.Name)
	}
	st := e.mws.Stats().Cache
	t.Logf("%d sessions x %d requests: outcomes %v; cacheable: %d requests, %d upstream; no-store: %d requests, %d upstream; cache %+v; legacy connections %d",
		len(sessions), requests, outcomes, cachedGets, cachedUpstream, nostoreTotal, nostoreUpstream, st, e.http.ConnectionsAccepted())
	// Identical concurrent misses are collapsed per user, and once stored an
	// image is a hit for everyone: at most one upstream request per user
	// and image.
	if bound := int64(devices * len(imgs)); cachedUpstream > bound {
		t.Fatalf("%d of %d cacheable requests reached the legacy server; want at most %d", cachedUpstream, cachedGets, bound)
	}
	if hits := outcomes[mwsv1.CacheOutcome_CACHE_OUTCOME_HIT]; hits < cachedGets-cachedUpstream-st.Collapsed {
		t.Fatalf("%d hits for %d cacheable requests (%d upstream, %d collapsed)", hits, cachedGets, cachedUpstream, st.Collapsed)
	}
	if int64(st.Entries) != int64(len(imgs)) && cachedUpstream > 0 {
		// Each cacheable image is indexed once; no-store ones never.
		t.Fatalf("cache indexes %d entries, want %d", st.Entries, len(imgs))
	}
	if n := e.mws.Stats().Sessions; n != len(sessions) {
		t.Fatalf("MWS holds %d sessions, want %d", n, len(sessions))
	}
}
