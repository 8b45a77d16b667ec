package objcache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pquerna/cachecontrol/cacheobject"
)

// Fetch answers req, addressed to the legacy server named backend, on behalf
// of user ("" for no user). backend keys the cache and names the server in
// errors; req must already be addressed so that the Cache's transport
// reaches that server. req is not modified, and ctx governs the upstream
// request, including the reading of a streamed Result.Body.
//
// A GET is answered from the cache when a fresh entry matches backend, the
// path and query, and the request header values named by the stored
// response's Vary; a stale entry with a validator (ETag, Last-Modified) is
// revalidated with If-None-Match / If-Modified-Since, and a 304 refreshes its
// header and freshness and serves the cached body. Otherwise the response is
// fetched, buffered and digested (up to Config.MaxObjectBytes; larger bodies
// stream and are not cached), stored by digest unless no-store, and indexed
// for reuse when RFC 9111 allows it: max-age, s-maxage (shared entries only),
// Expires, or heuristic freshness from Last-Modified; no-cache means
// revalidate before every use; Vary: * is never reused. Private responses,
// and responses that set cookies, are reused only for the same user and are
// not reused at all when user is "". Request directives no-store, no-cache
// and max-age are honoured. The cache never serves a stale response, so
// must-revalidate and proxy-revalidate need nothing more.
//
// Concurrent GETs identical in backend, URL, user and every header share one
// upstream request (unless its body is streamed).
//
// A GET with Range or a conditional header of its own, a HEAD and every other
// method pass through to upstream uncached, with a streamed Body. A
// non-error response to an unsafe method (POST, PUT, DELETE, ...) makes the
// URL's shared entries and user's private entries unreachable.
//
// Errors: ErrInvalidRequest, ErrClosed, or *UpstreamError (also when ctx ends
// during the upstream exchange). After an error nothing of the failed
// response is cached.
func (c *Cache) Fetch(ctx context.Context, backend string, req *http.Request, user string) (*Result, error) {
	if req == nil || req.URL == nil {
		return nil, ErrInvalidRequest
	}
	if c.isClosed() {
		return nil, ErrClosed
	}
	res, err := c.fetch(ctx, backend, req, user)
	c.count(res, err)
	if err != nil {
		c.log.Warn("objcache: fetch failed", "backend", backend, "url", req.URL.RequestURI(), "err", err)
	}
	return res, err
}

func (c *Cache) fetch(ctx context.Context, backend string, req *http.Request, user string) (*Result, error) {
	switch req.Method {
	case "", http.MethodGet:
		if bypass(req) {
			return c.pass(ctx, backend, req)
		}
		return c.fetchGet(ctx, backend, req, user)
	case http.MethodHead, http.MethodOptions, http.MethodTrace:
		return c.pass(ctx, backend, req)
	}
	res, err := c.pass(ctx, backend, req)
	if err == nil && res.StatusCode < 400 {
		// RFC 9111 §4.4. Other users' private entries cannot be found from
		// here; they expire by themselves.
		c.idx.invalidate(primaryKey(backend, req, ""))
		if user != "" {
			c.idx.invalidate(primaryKey(backend, req, user))
		}
	}
	return res, err
}

// bypass reports a GET the cache cannot answer with a whole stored object:
// a range, or a request conditional on the client's own copy.
func bypass(req *http.Request) bool {
	for _, name := range []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if req.Header.Get(name) != "" {
			return true
		}
	}
	return false
}

func (c *Cache) fetchGet(ctx context.Context, backend string, req *http.Request, user string) (*Result, error) {
	rd := requestDirectives(req)
	if res, ok := c.freshHit(backend, req, user, rd); ok {
		return res, nil
	}
	key := flightKey(backend, req, user)
	for {
		f, leader := c.flights.join(key)
		if leader {
			return c.lead(ctx, key, f, backend, req, user, rd)
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, &UpstreamError{Backend: backend, Op: "round trip", Err: ctx.Err()}
		}
		switch {
		case f.rejoin:
			continue
		case f.alone:
			return c.fill(ctx, backend, req, user, rd)
		case f.err != nil:
			return nil, f.err
		}
		c.collapsed.Add(1)
		res := *f.res
		return &res, nil
	}
}

// lead runs fill for flight f and publishes the answer to its followers.
func (c *Cache) lead(ctx context.Context, key string, f *flight, backend string, req *http.Request, user string, rd *cacheobject.RequestCacheDirectives) (res *Result, err error) {
	finished := false
	defer func() {
		if !finished { // fill panicked: let the followers try for themselves
			c.flights.finish(key, f, nil, nil, false, true)
		}
	}()
	res, err = c.fill(ctx, backend, req, user, rd)
	// A stream can be read once; an error caused by the leader's own
	// context says nothing about the followers' requests.
	alone := res != nil && res.Body != nil
	rejoin := err != nil && ctx.Err() != nil
	c.flights.finish(key, f, res, err, alone, rejoin)
	finished = true
	return res, err
}

// found is an index entry whose object is in the store.
type found struct {
	key   string
	entry *entry
	obj   *Object
}

// find returns the entry matching req for user: the user's private one
// first, then the shared one.
func (c *Cache) find(backend string, req *http.Request, user string) (found, bool) {
	users := []string{""}
	if user != "" {
		users = []string{user, ""}
	}
	for _, u := range users {
		key, e, ok := c.idx.find(primaryKey(backend, req, u), req.Header)
		if !ok {
			continue
		}
		obj, ok := c.Lookup(e.digest)
		if !ok {
			c.idx.drop(key, e) // evicted
			continue
		}
		return found{key: key, entry: e, obj: obj}, true
	}
	return found{}, false
}

func (c *Cache) freshHit(backend string, req *http.Request, user string, rd *cacheobject.RequestCacheDirectives) (*Result, bool) {
	if rd.NoStore {
		return nil, false
	}
	f, ok := c.find(backend, req, user)
	if !ok || !f.entry.fresh(c.cfg.now(), rd.NoCache, int64(rd.MaxAge)) {
		return nil, false
	}
	return &Result{Outcome: Hit, StatusCode: f.entry.status, Header: f.entry.header, Object: f.obj, Stored: true}, true
}

// fill answers a GET the cache could not answer from a fresh entry, as the
// leader of its flight.
func (c *Cache) fill(ctx context.Context, backend string, req *http.Request, user string, rd *cacheobject.RequestCacheDirectives) (*Result, error) {
	// A flight that finished between our freshHit and join may have just
	// stored the answer.
	if res, ok := c.freshHit(backend, req, user, rd); ok {
		return res, nil
	}
	var stale *found
	cond := http.Header{}
	if !rd.NoStore {
		if f, ok := c.find(backend, req, user); ok {
			stale = &f
			if f.entry.etag != "" {
				cond.Set("If-None-Match", f.entry.etag)
			}
			if f.entry.lastModified != "" {
				cond.Set("If-Modified-Since", f.entry.lastModified)
			}
		}
	}
	resp, err := c.roundTrip(ctx, backend, req, cond)
	if err != nil {
		return nil, err
	}
	now := c.cfg.now()
	if resp.StatusCode == http.StatusNotModified && len(cond) > 0 {
		return c.refresh(backend, req, user, rd, resp, *stale, now), nil
	}
	return c.admit(backend, req, user, rd, resp, stale, now)
}

// refresh serves stale's object after upstream confirmed it with resp, a
// 304, and re-indexes it with the merged header's freshness.
func (c *Cache) refresh(backend string, req *http.Request, user string, rd *cacheobject.RequestCacheDirectives, resp *http.Response, stale found, now time.Time) *Result {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	h := mergeHeaders(stale.entry.header, resp.Header)
	p := evaluate(req, rd, stale.entry.status, h, now, user)
	obj, stored := stale.obj, false
	if p.storable {
		// Put back, in case it was evicted while we asked.
		obj, stored = c.store(obj)
	}
	key := ""
	switch {
	case stored && p.indexable:
		key = c.idx.put(primaryKey(backend, req, userIf(p.private, user)), p.vary, req.Header, newEntry(obj.Digest, stale.entry.status, h, now, p))
	case p.indexable:
		c.notIndexed(backend, req, "object store refused the object")
	default:
		c.notIndexed(backend, req, p.reason)
	}
	if key != stale.key {
		c.idx.drop(stale.key, stale.entry)
	}
	return &Result{Outcome: Revalidated, StatusCode: stale.entry.status, Header: h, Object: obj, Stored: stored}
}

// admit reads a full upstream response and stores and indexes it as its
// headers allow. stale, if not nil, is the entry the request matched before.
func (c *Cache) admit(backend string, req *http.Request, user string, rd *cacheobject.RequestCacheDirectives, resp *http.Response, stale *found, now time.Time) (*Result, error) {
	h := storedHeader(resp.Header)
	body, stream, err := c.readBody(backend, resp)
	if err != nil {
		return nil, err
	}
	key := ""
	defer func() {
		// The response supersedes what the old entry said about this URL.
		if stale != nil && stale.key != key {
			c.idx.drop(stale.key, stale.entry)
		}
	}()
	if stream != nil {
		c.notIndexed(backend, req, fmt.Sprintf("body over %d bytes", c.cfg.MaxObjectBytes))
		return &Result{Outcome: Miss, StatusCode: resp.StatusCode, Header: h, Body: stream}, nil
	}
	obj := newObject(body, resp.StatusCode, h, now)
	p := evaluate(req, rd, resp.StatusCode, h, now, user)
	stored := false
	// Only successful bodies are kept for savepoints; other statuses only
	// when HTTP lets them be reused.
	if p.storable && (p.indexable || resp.StatusCode/100 == 2) {
		obj, stored = c.store(obj)
	}
	switch {
	case stored && p.indexable:
		key = c.idx.put(primaryKey(backend, req, userIf(p.private, user)), p.vary, req.Header, newEntry(obj.Digest, resp.StatusCode, h, now, p))
	case p.indexable:
		c.notIndexed(backend, req, "object store refused the object")
	default:
		c.notIndexed(backend, req, p.reason)
	}
	return &Result{Outcome: Miss, StatusCode: resp.StatusCode, Header: h, Object: obj, Stored: stored}, nil
}

func (c *Cache) notIndexed(backend string, req *http.Request, reason string) {
	c.uncacheable.Add(1)
	c.log.Debug("objcache: response not cached for reuse", "backend", backend, "url", req.URL.RequestURI(), "reason", reason)
}

func newEntry(digest string, status int, h http.Header, now time.Time, p policy) *entry {
	return &entry{
		digest:       digest,
		status:       status,
		header:       h,
		responseTime: now,
		expires:      p.expires,
		noCache:      p.noCache,
		etag:         h.Get("ETag"),
		lastModified: h.Get("Last-Modified"),
	}
}

func userIf(private bool, user string) string {
	if private {
		return user
	}
	return ""
}

// pass sends req upstream and streams the response back, caching nothing.
func (c *Cache) pass(ctx context.Context, backend string, req *http.Request) (*Result, error) {
	resp, err := c.roundTrip(ctx, backend, req, nil)
	if err != nil {
		return nil, err
	}
	c.notIndexed(backend, req, "method or request headers bypass the cache")
	return &Result{Outcome: Miss, StatusCode: resp.StatusCode, Header: storedHeader(resp.Header), Body: newUpstreamBody(backend, resp.Body, nil)}, nil
}

// roundTrip sends a copy of req, with the fields of extra set, upstream.
func (c *Cache) roundTrip(ctx context.Context, backend string, req *http.Request, extra http.Header) (*http.Response, error) {
	out := req.Clone(ctx)
	out.RequestURI = "" // set on server-side requests; a client request must not have it
	for k, vs := range extra {
		out.Header[k] = vs
	}
	c.upstream.Add(1)
	resp, err := c.transport.RoundTrip(out)
	if err != nil {
		return nil, &UpstreamError{Backend: backend, Op: "round trip", Err: err}
	}
	return resp, nil
}

// readBody buffers resp's body if it fits in MaxObjectBytes. Otherwise it
// returns a stream of the body, holding at most MaxObjectBytes+1 bytes read
// so far. A body that fails before its end is an *UpstreamError.
func (c *Cache) readBody(backend string, resp *http.Response) ([]byte, io.ReadCloser, error) {
	limit := c.cfg.MaxObjectBytes
	if resp.ContentLength > limit {
		return nil, newUpstreamBody(backend, resp.Body, nil), nil
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		// Room for the final read that finds EOF, so the buffer never grows.
		buf.Grow(int(resp.ContentLength) + bytes.MinRead)
	}
	_, err := io.CopyN(&buf, resp.Body, limit+1)
	switch err {
	case io.EOF: // the whole body, within the limit
		resp.Body.Close()
		body := buf.Bytes()
		if cap(body)-len(body) > len(body)/4+bytes.MinRead {
			body = bytes.Clone(body) // do not keep a doubled buffer for a body of unknown length
		}
		return body, nil, nil
	case nil: // limit+1 bytes and more to come
		return nil, newUpstreamBody(backend, resp.Body, buf.Bytes()), nil
	default:
		resp.Body.Close()
		return nil, nil, &UpstreamError{Backend: backend, Op: "read body", Err: err}
	}
}

// upstreamBody streams a response body, first the bytes already read, and
// reports failures as *UpstreamError.
type upstreamBody struct {
	backend string
	r       io.Reader
	body    io.ReadCloser
}

func newUpstreamBody(backend string, body io.ReadCloser, head []byte) *upstreamBody {
	r := io.Reader(body)
	if len(head) > 0 {
		r = io.MultiReader(bytes.NewReader(head), body)
	}
	return &upstreamBody{backend: backend, r: r, body: body}
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &UpstreamError{Backend: b.backend, Op: "read body", Err: err}
	}
	return n, err
}

func (b *upstreamBody) Close() error { return b.body.Close() }
