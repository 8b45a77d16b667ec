package objcache

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// origin is a legacy server whose responses carry the headers a test case
// chooses, and which answers conditional requests with 304 when its
// validators match.
type origin struct {
	*legacy
	full, notModified atomic.Int64
}

func newOrigin(t *testing.T, clock *fakeClock, body string, etag string, lastModified time.Time, headers func(now time.Time) http.Header) *origin {
	o := &origin{}
	o.legacy = newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		for k, vs := range headers(clock.Now()) {
			w.Header()[k] = vs
		}
		if etag != "" {
			w.Header().Set("ETag", etag)
		}
		if !lastModified.IsZero() {
			w.Header().Set("Last-Modified", lastModified.Format(http.TimeFormat))
		}
		inm, ims := r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
		since, err := http.ParseTime(ims)
		if (etag != "" && inm == etag) || (inm == "" && ims != "" && err == nil && !lastModified.IsZero() && !lastModified.After(since)) {
			o.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		o.full.Add(1)
		w.Write([]byte(body))
	})
	return o
}

func TestFreshness(t *testing.T) {
	type step struct {
		advance     time.Duration
		reqHeader   http.Header
		want        Outcome
		wantFull    int64 // full (200) responses the server has sent so far
		want304     int64 // 304 responses the server has sent so far
		wantStored  bool
		wantEntries int
		// stillInStore: Lookup finds the content although this response
		// was not stored (an earlier one with the same body was).
		stillInStore bool
	}
	lastMod := newFakeClock().Now().Add(-24 * time.Hour)
	for _, tc := range []struct {
		name    string
		etag    string
		lastMod time.Time
		headers func(now time.Time) http.Header
		steps   []step
	}{
		{
			name:    "no-store is never cached",
			etag:    `"a"`,
			headers: func(time.Time) http.Header { return http.Header{"Cache-Control": {"no-store"}} },
			steps: []step{
				{want: Miss, wantFull: 1},
				{want: Miss, wantFull: 2},
			},
		},
		{
			name:    "max-age expiry then ETag revalidation",
			etag:    `"v1"`,
			headers: func(time.Time) http.Header { return http.Header{"Cache-Control": {"max-age=60"}} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 59 * time.Second, want: Hit, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 2 * time.Second, want: Revalidated, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
				// The 304 renewed freshness for another 60 s.
				{advance: 59 * time.Second, want: Hit, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
				{advance: 2 * time.Second, want: Revalidated, wantFull: 1, want304: 2, wantStored: true, wantEntries: 1},
			},
		},
		{
			name:    "max-age expiry then Last-Modified revalidation",
			lastMod: lastMod,
			headers: func(time.Time) http.Header { return http.Header{"Cache-Control": {"max-age=10"}} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 5 * time.Second, want: Hit, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 10 * time.Second, want: Revalidated, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
			},
		},
		{
			name: "Expires relative to Date, no validator",
			headers: func(now time.Time) http.Header {
				return http.Header{"Date": {now.Format(http.TimeFormat)}, "Expires": {now.Add(30 * time.Second).Format(http.TimeFormat)}}
			},
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 29 * time.Second, want: Hit, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 2 * time.Second, want: Miss, wantFull: 2, wantStored: true, wantEntries: 1},
			},
		},
		{
			name:    "invalid Expires means already stale",
			headers: func(time.Time) http.Header { return http.Header{"Expires": {"0"}} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true},
				{want: Miss, wantFull: 2, wantStored: true},
			},
		},
		{
			name:    "s-maxage beats max-age in a shared entry",
			etag:    `"s"`,
			headers: func(time.Time) http.Header { return http.Header{"Cache-Control": {"max-age=600, s-maxage=5"}} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 6 * time.Second, want: Revalidated, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
			},
		},
		{
			name:    "no-cache revalidates before every use",
			etag:    `"nc"`,
			headers: func(time.Time) http.Header { return http.Header{"Cache-Control": {"no-cache, max-age=600"}} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{want: Revalidated, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
				{want: Revalidated, wantFull: 1, want304: 2, wantStored: true, wantEntries: 1},
			},
		},
		{
			name:    "must-revalidate: fresh hits, then revalidates",
			etag:    `"mr"`,
			headers: func(time.Time) http.Header { return http.Header{"Cache-Control": {"max-age=10, must-revalidate"}} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 9 * time.Second, want: Hit, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 2 * time.Second, want: Revalidated, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
			},
		},
		{
			name:    "no freshness and no validator is stored but not reused",
			headers: func(time.Time) http.Header { return http.Header{} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true},
				{want: Miss, wantFull: 2, wantStored: true},
			},
		},
		{
			name:    "heuristic freshness from Last-Modified",
			lastMod: lastMod, // a day old: 10% heuristic = 2.4 h
			headers: func(time.Time) http.Header { return http.Header{} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: 2 * time.Hour, want: Hit, wantFull: 1, wantStored: true, wantEntries: 1},
				{advance: time.Hour, want: Revalidated, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
			},
		},
		{
			name:    "request directives no-cache, max-age=0 and no-store",
			etag:    `"rq"`,
			headers: func(time.Time) http.Header { return http.Header{"Cache-Control": {"max-age=600"}} },
			steps: []step{
				{want: Miss, wantFull: 1, wantStored: true, wantEntries: 1},
				{reqHeader: http.Header{"Cache-Control": {"no-cache"}}, want: Revalidated, wantFull: 1, want304: 1, wantStored: true, wantEntries: 1},
				{advance: time.Second, reqHeader: http.Header{"Cache-Control": {"max-age=0"}}, want: Revalidated, wantFull: 1, want304: 2, wantStored: true, wantEntries: 1},
				{reqHeader: http.Header{"Cache-Control": {"no-store"}}, want: Miss, wantFull: 2, want304: 2, wantStored: false, stillInStore: true, wantEntries: 1},
				{want: Hit, wantFull: 2, want304: 2, wantStored: true, wantEntries: 1},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const body = "the object body"
			clock := newFakeClock()
			srv := newOrigin(t, clock, body, tc.etag, tc.lastMod, tc.headers)
			c := newTestCache(t, clock, nil)
			for i, s := range tc.steps {
				clock.Advance(s.advance)
				res, got := fetch(t, c, srv.URL+"/obj", "", s.reqHeader)
				if string(got) != body {
					t.Fatalf("step %d: body %q, want %q", i, got, body)
				}
				if res.Outcome != s.want {
					t.Errorf("step %d: outcome %v, want %v", i, res.Outcome, s.want)
				}
				if n := srv.full.Load(); n != s.wantFull {
					t.Errorf("step %d: server sent %d full responses, want %d", i, n, s.wantFull)
				}
				if n := srv.notModified.Load(); n != s.want304 {
					t.Errorf("step %d: server sent %d 304s, want %d", i, n, s.want304)
				}
				if res.Stored != s.wantStored {
					t.Errorf("step %d: Result.Stored %v, want %v", i, res.Stored, s.wantStored)
				}
				if _, ok := c.Lookup(digestOf([]byte(body))); ok != (s.wantStored || s.stillInStore) {
					t.Errorf("step %d: Lookup found %v, want %v", i, ok, s.wantStored || s.stillInStore)
				}
				if n := c.Stats().Entries; n != s.wantEntries {
					t.Errorf("step %d: %d index entries, want %d", i, n, s.wantEntries)
				}
				if res.StatusCode != http.StatusOK {
					t.Errorf("step %d: status %d, want 200", i, res.StatusCode)
				}
			}
		})
	}
}

// A 304 carries fresh header fields; they replace the stored ones.
func TestRevalidationRefreshesHeader(t *testing.T) {
	clock := newFakeClock()
	var version atomic.Int64
	srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"e"`)
		w.Header().Set("X-Version", string(rune('0'+version.Add(1))))
		if r.Header.Get("If-None-Match") == `"e"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("body"))
	})
	c := newTestCache(t, clock, nil)
	res, _ := fetch(t, c, srv.URL, "", nil)
	if res.Header.Get("X-Version") != "1" {
		t.Fatalf("X-Version %q, want 1", res.Header.Get("X-Version"))
	}
	clock.Advance(11 * time.Second)
	res, body := fetch(t, c, srv.URL, "", nil)
	if res.Outcome != Revalidated || string(body) != "body" || res.Header.Get("X-Version") != "2" || res.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("revalidated: %v %q X-Version %q Content-Type %q", res.Outcome, body, res.Header.Get("X-Version"), res.Header.Get("Content-Type"))
	}
	res, _ = fetch(t, c, srv.URL, "", nil)
	if res.Outcome != Hit || res.Header.Get("X-Version") != "2" {
		t.Fatalf("after refresh: %v X-Version %q, want hit with 2", res.Outcome, res.Header.Get("X-Version"))
	}
}
