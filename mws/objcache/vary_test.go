package objcache

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
)

func TestVary(t *testing.T) {
	t.Run("Accept values are separate entries", func(t *testing.T) {
		srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Vary", "accept") // canonicalised by the cache
			io.WriteString(w, "as "+r.Header.Get("Accept"))
		})
		c := newTestCache(t, newFakeClock(), nil)
		for i, s := range []struct {
			accept       string
			want         Outcome
			wantRequests int64
		}{
			{accept: "image/webp", want: Miss, wantRequests: 1},
			{accept: "image/jpeg", want: Miss, wantRequests: 2},
			{accept: "image/webp", want: Hit, wantRequests: 2},
			{accept: "image/jpeg", want: Hit, wantRequests: 2},
			{accept: "", want: Miss, wantRequests: 3},
		} {
			var hdr http.Header
			if s.accept != "" {
				hdr = http.Header{"Accept": {s.accept}}
			}
			res, body := fetch(t, c, srv.URL+"/pic", "", hdr)
			if res.Outcome != s.want || string(body) != "as "+s.accept || srv.requests.Load() != s.wantRequests {
				t.Fatalf("step %d (Accept %q): %v %q, server requests %d; want %v %q %d", i, s.accept, res.Outcome, body, srv.requests.Load(), s.want, "as "+s.accept, s.wantRequests)
			}
		}
		if n := c.Stats().Entries; n != 3 {
			t.Fatalf("Entries = %d, want 3", n)
		}
	})

	t.Run("Vary star is never reused", func(t *testing.T) {
		srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Vary", "Accept, *")
			io.WriteString(w, "anything")
		})
		c := newTestCache(t, newFakeClock(), nil)
		for i := range 2 {
			if res, _ := fetch(t, c, srv.URL, "", nil); res.Outcome != Miss {
				t.Fatalf("fetch %d: %v, want miss", i, res.Outcome)
			}
		}
		if s := c.Stats(); srv.requests.Load() != 2 || s.Entries != 0 || s.Uncacheable != 2 {
			t.Fatalf("requests %d, stats %+v; want 2 requests, 0 entries, 2 uncacheable", srv.requests.Load(), s)
		}
	})
}

func TestPrivate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		shared bool // the response may be reused across users
	}{
		{name: "private", header: http.Header{"Cache-Control": {"private, max-age=60"}}},
		{name: "Set-Cookie", header: http.Header{"Cache-Control": {"max-age=60"}, "Set-Cookie": {"sid=1"}}},
		{name: "public", header: http.Header{"Cache-Control": {"public, max-age=60"}}, shared: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
				for k, vs := range tc.header {
					w.Header()[k] = vs
				}
				if tc.shared {
					io.WriteString(w, "for everyone")
					return
				}
				io.WriteString(w, "for "+r.Header.Get("X-User"))
			})
			c := newTestCache(t, newFakeClock(), nil)
			get := func(user string) (*Result, string) {
				res, body := fetch(t, c, srv.URL+"/inbox", user, http.Header{"X-User": {user}})
				return res, string(body)
			}
			want := func(user string) string {
				if tc.shared {
					return "for everyone"
				}
				return "for " + user
			}

			steps := []struct {
				user string
				want Outcome
			}{
				{"alice", Miss},
				{"bob", Miss},
				{"alice", Hit},
				{"bob", Hit},
				{"", Miss}, // no user: a private response is not reused
				{"", Miss},
			}
			if tc.shared {
				steps = []struct {
					user string
					want Outcome
				}{{"alice", Miss}, {"bob", Hit}, {"", Hit}}
			}
			for i, s := range steps {
				res, body := get(s.user)
				if res.Outcome != s.want || body != want(s.user) {
					t.Fatalf("step %d (user %q): %v %q, want %v %q", i, s.user, res.Outcome, body, s.want, want(s.user))
				}
			}
		})
	}

	t.Run("shared entry does not shadow a user's private one", func(t *testing.T) {
		var private atomic.Bool
		private.Store(true)
		srv := newLegacy(t, func(w http.ResponseWriter, r *http.Request) {
			if private.Load() {
				w.Header().Set("Cache-Control", "private, max-age=60")
				io.WriteString(w, "alice's")
				return
			}
			w.Header().Set("Cache-Control", "max-age=60")
			io.WriteString(w, "public")
		})
		c := newTestCache(t, newFakeClock(), nil)
		fetch(t, c, srv.URL, "alice", nil)
		private.Store(false)
		if _, body := fetch(t, c, srv.URL, "bob", nil); string(body) != "public" {
			t.Fatalf("bob got %q", body)
		}
		if res, body := fetch(t, c, srv.URL, "alice", nil); res.Outcome != Hit || string(body) != "alice's" {
			t.Fatalf("alice got %v %q, want her private hit", res.Outcome, body)
		}
		if res, body := fetch(t, c, srv.URL, "carol", nil); res.Outcome != Hit || string(body) != "public" {
			t.Fatalf("carol got %v %q, want the shared hit", res.Outcome, body)
		}
	})
}
