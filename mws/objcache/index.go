package objcache

import (
	"container/list"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// entry is what the index knows about one request key. Entries are never
// modified once in the index; a revalidation replaces the entry.
type entry struct {
	digest       string
	status       int
	header       http.Header // as served; shared read-only with Results
	responseTime time.Time   // when the response (or its last 304) arrived
	expires      time.Time
	noCache      bool
	etag         string
	lastModified string
}

// fresh reports whether e may answer a request with directives noCache and
// maxAge (seconds; -1 when absent) at now without revalidation.
func (e *entry) fresh(now time.Time, noCache bool, maxAge int64) bool {
	if e.noCache || noCache || !now.Before(e.expires) {
		return false
	}
	return maxAge < 0 || now.Sub(e.responseTime) <= time.Duration(maxAge)*time.Second
}

func (e *entry) hasValidator() bool { return e.etag != "" || e.lastModified != "" }

// primaryKey identifies a URL on a backend for GET, as seen by user ("" for
// the shared view). Every part is length-prefixed, so no choice of user name,
// URL or header value can make two different requests share a key.
func primaryKey(backend string, req *http.Request, user string) string {
	var b strings.Builder
	for _, s := range []string{backend, http.MethodGet, req.URL.RequestURI(), user} {
		writeField(&b, s)
	}
	return b.String()
}

// variantKey is the part of a request key selected by Vary: the request's
// values of the named fields.
func variantKey(names []string, h http.Header) string {
	var b strings.Builder
	for _, name := range names {
		writeField(&b, name)
		writeField(&b, strings.Join(h.Values(name), ","))
	}
	return b.String()
}

// writeField writes s to b as "<len>:<s>".
func writeField(b *strings.Builder, s string) {
	b.WriteString(strconv.Itoa(len(s)))
	b.WriteByte(':')
	b.WriteString(s)
}

// index maps request keys to entries. Per primary key it remembers the Vary
// field names of the latest stored response, so that a request can be turned
// into its full key before anything is known about the response.
type index struct {
	mu      sync.Mutex
	vary    *lru[[]string]
	entries *lru[*entry]
}

func newIndex(maxEntries int) *index {
	return &index{vary: newLRU[[]string](maxEntries), entries: newLRU[*entry](maxEntries)}
}

// find returns the full key and entry for a request with header h under
// primary key pk.
func (ix *index) find(pk string, h http.Header) (string, *entry, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	names, ok := ix.vary.get(pk)
	if !ok {
		return "", nil, false
	}
	key := pk + variantKey(names, h)
	e, ok := ix.entries.get(key)
	return key, e, ok
}

// put stores e for a request with header h under pk, varying on names, and
// returns its full key. A change of Vary makes the other variants of pk
// unreachable; the LRU forgets them in time.
func (ix *index) put(pk string, names []string, h http.Header, e *entry) string {
	key := pk + variantKey(names, h)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.vary.put(pk, names)
	ix.entries.put(key, e)
	return key
}

// drop removes key if it still holds e, so that a newer entry stored
// concurrently survives.
func (ix *index) drop(key string, e *entry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if cur, ok := ix.entries.peek(key); ok && cur == e {
		ix.entries.remove(key)
	}
}

// invalidate makes every variant of pk unreachable.
func (ix *index) invalidate(pk string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.vary.remove(pk)
}

func (ix *index) len() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.entries.len()
}

// lru is a size-bounded least-recently-used map. It is not safe for
// concurrent use; index guards it.
type lru[V any] struct {
	max int
	ll  *list.List // of *lruItem[V], most recent first
	m   map[string]*list.Element
}

type lruItem[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, ll: list.New(), m: make(map[string]*list.Element)}
}

func (l *lru[V]) get(key string) (V, bool) {
	el, ok := l.m[key]
	if !ok {
		var zero V
		return zero, false
	}
	l.ll.MoveToFront(el)
	return el.Value.(*lruItem[V]).val, true
}

func (l *lru[V]) peek(key string) (V, bool) {
	el, ok := l.m[key]
	if !ok {
		var zero V
		return zero, false
	}
	return el.Value.(*lruItem[V]).val, true
}

func (l *lru[V]) put(key string, val V) {
	if el, ok := l.m[key]; ok {
		el.Value.(*lruItem[V]).val = val
		l.ll.MoveToFront(el)
		return
	}
	l.m[key] = l.ll.PushFront(&lruItem[V]{key: key, val: val})
	for l.ll.Len() > l.max {
		last := l.ll.Back()
		l.ll.Remove(last)
		delete(l.m, last.Value.(*lruItem[V]).key)
	}
}

func (l *lru[V]) remove(key string) {
	if el, ok := l.m[key]; ok {
		l.ll.Remove(el)
		delete(l.m, key)
	}
}

func (l *lru[V]) len() int { return l.ll.Len() }
