package objcache

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pquerna/cachecontrol/cacheobject"
)

// policy is the caching decision for one response.
type policy struct {
	storable  bool      // may enter the object store (not no-store)
	indexable bool      // may answer later requests
	private   bool      // index under the user's key, not the shared one
	vary      []string  // canonical request header names the response varies on
	expires   time.Time // fresh until; zero or past means stale
	noCache   bool      // revalidate before every use
	reason    string    // why not indexable, for logs
}

// requestDirectives parses the request's Cache-Control. A malformed one is
// ignored: the request directives only ever make the cache more conservative,
// and ignoring them keeps a sloppy client working.
func requestDirectives(req *http.Request) *cacheobject.RequestCacheDirectives {
	rd, err := cacheobject.ParseRequestCacheControl(strings.Join(req.Header.Values("Cache-Control"), ", "))
	if err != nil {
		rd, _ = cacheobject.ParseRequestCacheControl("")
	}
	return rd
}

// evaluate decides whether a GET response with status and header h, received
// at now for user, may be stored and reused. Header h must already be the
// stored form (storedHeader or mergeHeaders).
func evaluate(req *http.Request, rd *cacheobject.RequestCacheDirectives, status int, h http.Header, now time.Time, user string) policy {
	if rd.NoStore {
		return policy{reason: "request no-store"}
	}
	cc, err := cacheobject.ParseResponseCacheControl(strings.Join(h.Values("Cache-Control"), ", "))
	if err != nil {
		// Unknown intent: keep neither a copy nor an entry.
		return policy{reason: "malformed Cache-Control: " + err.Error()}
	}
	if cc.NoStore {
		return policy{reason: "no-store"}
	}
	p := policy{storable: true}
	vary, star := varyNames(h)
	if star {
		p.reason = "Vary: *"
		return p
	}
	p.vary = vary
	// A Set-Cookie replayed to another user would hand them a session, so
	// such responses are kept per user like private ones.
	p.private = cc.PrivatePresent || len(h.Values("Set-Cookie")) > 0
	if p.private && user == "" {
		p.reason = "private response without a user"
		return p
	}
	obj := cacheobject.Object{
		CacheIsPrivate:         p.private,
		RespDirectives:         cc,
		RespHeaders:            h,
		RespStatusCode:         status,
		RespExpiresHeader:      expiresHeader(h),
		RespDateHeader:         timeHeader(h, "Date"),
		RespLastModifiedHeader: timeHeader(h, "Last-Modified"),
		ReqDirectives:          rd,
		ReqHeaders:             req.Header,
		ReqMethod:              http.MethodGet,
		NowUTC:                 now.UTC(),
	}
	var rv cacheobject.ObjectResults
	cacheobject.CachableObject(&obj, &rv)
	cacheobject.ExpirationObject(&obj, &rv)
	if len(rv.OutReasons) > 0 {
		p.reason = fmt.Sprint(rv.OutReasons)
		return p
	}
	p.expires = rv.OutExpirationTime
	p.noCache = cc.NoCachePresent
	if !p.expires.After(now) && !hasValidator(h) {
		p.reason = "no freshness lifetime and no validator"
		return p
	}
	p.indexable = true
	return p
}

func hasValidator(h http.Header) bool {
	return h.Get("ETag") != "" || h.Get("Last-Modified") != ""
}

func timeHeader(h http.Header, name string) time.Time {
	t, err := http.ParseTime(h.Get(name))
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// expiresHeader returns the Expires time. An invalid Expires (such as "0")
// means already expired (RFC 9111 §5.3), so it maps to the epoch.
func expiresHeader(h http.Header) time.Time {
	v := h.Get("Expires")
	if v == "" {
		return time.Time{}
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return time.Unix(0, 0).UTC()
	}
	return t.UTC()
}

// splitTokens splits comma-separated header values into trimmed, non-empty
// tokens.
func splitTokens(values []string) []string {
	var out []string
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// varyNames returns the sorted, canonical, distinct field names of h's Vary,
// and whether Vary contains "*".
func varyNames(h http.Header) (names []string, star bool) {
	for _, t := range splitTokens(h.Values("Vary")) {
		if t == "*" {
			return nil, true
		}
		names = append(names, http.CanonicalHeaderKey(t))
	}
	slices.Sort(names)
	return slices.Compact(names), false
}

// hopByHop are the fields that describe one connection, not the object
// (RFC 9110 §7.6.1); they are never stored.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// storedHeader returns a copy of h without hop-by-hop fields, including those
// named by Connection.
func storedHeader(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	for _, name := range splitTokens(h.Values("Connection")) {
		out.Del(name)
	}
	for _, name := range hopByHop {
		out.Del(name)
	}
	return out
}

// mergeHeaders returns stored updated with the fields of a 304 response
// (RFC 9111 §4.3.4). Content-Length is kept from stored: it describes the
// body, which a 304 does not carry.
func mergeHeaders(stored, notModified http.Header) http.Header {
	out := stored.Clone()
	for k, vs := range storedHeader(notModified) {
		if k == "Content-Length" {
			continue
		}
		out[k] = vs
	}
	return out
}
