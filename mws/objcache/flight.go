package objcache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// flightGroup collapses concurrent identical cache misses into one upstream
// request, like golang.org/x/sync/singleflight, but lets a follower stop
// waiting when its own context ends and tells followers when the leader's
// answer cannot be shared.
type flightGroup struct {
	mu    sync.Mutex
	calls map[string]*flight
}

// flight is one upstream request in progress. Its fields after done is
// closed are written once, before the close, and only read after it.
type flight struct {
	done    chan struct{}
	waiters int // followers that joined; guarded by flightGroup.mu

	res *Result
	err error
	// alone: the result is a stream, which only the leader can read; each
	// follower fetches on its own.
	alone bool
	// rejoin: the leader gave up because its own context ended; followers
	// whose contexts are alive try again.
	rejoin bool
}

// join returns the flight for key and whether the caller leads it. The
// leader must call finish.
func (g *flightGroup) join(key string) (*flight, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.calls[key]; ok {
		f.waiters++
		return f, false
	}
	if g.calls == nil {
		g.calls = make(map[string]*flight)
	}
	f := &flight{done: make(chan struct{})}
	g.calls[key] = f
	return f, true
}

// finish publishes the leader's answer and releases the followers.
func (g *flightGroup) finish(key string, f *flight, res *Result, err error, alone, rejoin bool) {
	g.mu.Lock()
	delete(g.calls, key)
	g.mu.Unlock()
	f.res, f.err, f.alone, f.rejoin = res, err, alone, rejoin
	close(f.done)
}

// waiting returns how many followers wait on key's flight.
func (g *flightGroup) waiting(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.calls[key]; ok {
		return f.waiters
	}
	return 0
}

// flightKey identifies requests that may share one upstream response. The
// response's Vary is unknown before it arrives, so every request header is
// part of the key: only requests identical in all of them are collapsed.
func flightKey(backend string, req *http.Request, user string) string {
	var b strings.Builder
	b.WriteString(primaryKey(backend, req, user))
	names := make([]string, 0, len(req.Header))
	for name := range req.Header {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		writeField(&b, name)
		b.WriteString(strconv.Itoa(len(req.Header[name])))
		for _, v := range req.Header[name] {
			writeField(&b, v)
		}
	}
	return b.String()
}
