package objcache

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"time"
)

// DigestPrefix starts every Object.Digest.
const DigestPrefix = "sha256:"

// Object is a server object's content, addressed by its digest. Objects are
// shared between every request, session and goroutine that sees them and are
// immutable once made: callers must not modify Body or Header.
type Object struct {
	// Digest is "sha256:" followed by the lower-case hex SHA-256 of Body.
	Digest string
	// Body is the complete response body.
	Body []byte
	// Header is the response header of the response that first produced this
	// content, without hop-by-hop fields. The header a particular request was
	// answered with (refreshed by revalidation) is Result.Header.
	Header http.Header
	// Status is that response's status code.
	Status int
	// ContentType is Header's Content-Type.
	ContentType string
	// Size is len(Body).
	Size int64
	// StoredAt is when the response was received, by the Config's clock.
	StoredAt time.Time
}

func newObject(body []byte, status int, h http.Header, now time.Time) *Object {
	sum := sha256.Sum256(body)
	return &Object{
		Digest:      DigestPrefix + hex.EncodeToString(sum[:]),
		Body:        body,
		Header:      h,
		Status:      status,
		ContentType: h.Get("Content-Type"),
		Size:        int64(len(body)),
		StoredAt:    now,
	}
}

// cost is what the object is charged in the object store, in bytes.
func (o *Object) cost() int64 {
	n := int64(len(o.Body))
	for k, vs := range o.Header {
		for _, v := range vs {
			n += int64(len(k) + len(v))
		}
	}
	return max(n, 1)
}

// Outcome says how a Fetch was answered.
type Outcome int

const (
	// Miss: the response came from a full upstream response (including
	// responses that bypass the cache, such as HEAD or oversized bodies).
	Miss Outcome = iota
	// Hit: a fresh cached response; upstream was not contacted.
	Hit
	// Revalidated: a stale (or no-cache) cached response that upstream
	// confirmed with 304 Not Modified; the body came from the cache.
	Revalidated
)

func (o Outcome) String() string {
	switch o {
	case Miss:
		return "miss"
	case Hit:
		return "hit"
	case Revalidated:
		return "revalidated"
	}
	return "unknown"
}

// Result is the answer to one Fetch. Exactly one of Object and Body is set.
type Result struct {
	// Outcome says whether the cache answered, revalidated, or missed.
	Outcome Outcome
	// StatusCode and Header are the response as served to this request (for
	// a revalidation, the stored header updated by the 304). Header is
	// shared: read it, do not modify it.
	StatusCode int
	Header     http.Header
	// Object is the buffered, digested body: every response whose body fits
	// in Config.MaxObjectBytes, cacheable or not.
	Object *Object
	// Body streams a response that is not buffered: a body larger than
	// Config.MaxObjectBytes, and the responses to HEAD and to methods other
	// than GET. The caller must read and Close it; a failed Read returns an
	// *UpstreamError.
	Body io.ReadCloser
	// Stored reports that this response's body is in the object store (put
	// there now or found there already), so Lookup of its digest finds it
	// until it is evicted. It is false for streamed bodies, for no-store
	// responses and requests (even if the same content is stored from
	// another response), for non-2xx bodies HTTP does not let be reused, and
	// for objects ristretto refused to admit.
	Stored bool
}

// Stats are counters since New, for monitoring and the demo's table.
type Stats struct {
	// Hits, Revalidations and Misses count Fetch calls by Outcome.
	Hits, Revalidations, Misses int64
	// Collapsed counts Fetch calls answered by another concurrent Fetch's
	// upstream request (they are also counted by Outcome).
	Collapsed int64
	// Upstream counts requests sent to legacy servers.
	Upstream int64
	// Uncacheable counts upstream responses that were not indexed for reuse:
	// no-store, private without a user, Vary: *, no freshness and no
	// validator, oversized, or not a GET.
	Uncacheable int64
	// Errors counts Fetch calls that returned an error.
	Errors int64
	// StoredBytes is the object store's current cost, in bytes.
	StoredBytes int64
	// Entries is the number of request keys in the index.
	Entries int
}
