package objcache

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
)

// Cache fetches objects from legacy HTTP servers and caches them. It is safe
// for concurrent use. Create it with New and release it with Close.
type Cache struct {
	cfg       Config
	transport http.RoundTripper
	log       *slog.Logger

	// closeMu guards objects against Close: ristretto panics on a Set after
	// Close, so every store operation holds the read lock.
	closeMu sync.RWMutex
	closed  bool
	objects *ristretto.Cache[string, *Object]

	idx     *index
	flights flightGroup

	hits, revalidations, misses, collapsed atomic.Int64
	upstream, uncacheable, errs            atomic.Int64
}

// New returns a Cache that sends upstream requests through transport (in
// production a RoundTripper that reaches legacy servers through the mux) and
// logs to log (nil discards). It fails if cfg is invalid.
func New(cfg Config, transport http.RoundTripper, log *slog.Logger) (*Cache, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if transport == nil {
		errs = append(errs, errors.New("transport: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("objcache: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	objects, err := ristretto.NewCache(&ristretto.Config[string, *Object]{
		// Ristretto wants about ten counters per item it may hold; the index
		// bound is the best estimate of how many objects are live.
		NumCounters: 10 * int64(cfg.MaxEntries),
		MaxCost:     cfg.MaxBytes,
		BufferItems: 64,
		// Cost is bytes we account for ourselves; Config.MaxBytes is the
		// budget for those.
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("objcache: object store: %w", err)
	}
	return &Cache{
		cfg:       cfg,
		transport: transport,
		log:       log,
		objects:   objects,
		idx:       newIndex(cfg.MaxEntries),
	}, nil
}

// Close releases the object store. Fetch calls after Close fail with
// ErrClosed; calls in flight finish but store nothing. Close is idempotent.
func (c *Cache) Close() {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.objects.Close()
}

// Lookup returns the stored object with digest ("sha256:<hex>"), if it is
// still in the object store. A savepoint refers to server objects this way.
// Lookup does not check who may see the object: the session layer decides
// which digests a client may name.
func (c *Cache) Lookup(digest string) (*Object, bool) {
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		return nil, false
	}
	return c.objects.Get(digest)
}

// Stats returns the counters and sizes now.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits:          c.hits.Load(),
		Revalidations: c.revalidations.Load(),
		Misses:        c.misses.Load(),
		Collapsed:     c.collapsed.Load(),
		Upstream:      c.upstream.Load(),
		Uncacheable:   c.uncacheable.Load(),
		Errors:        c.errs.Load(),
		Entries:       c.idx.len(),
	}
	c.closeMu.RLock()
	if !c.closed {
		s.StoredBytes = c.objects.MaxCost() - c.objects.RemainingCost()
	}
	c.closeMu.RUnlock()
	return s
}

// store puts obj in the object store and waits until the store has decided,
// so that a Lookup right after Fetch finds it. It returns the stored object
// with obj's digest (an earlier object with the same content if there is
// one) and whether it is stored.
func (c *Cache) store(obj *Object) (*Object, bool) {
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		return obj, false
	}
	if prev, ok := c.objects.Get(obj.Digest); ok {
		return prev, true
	}
	if !c.objects.Set(obj.Digest, obj, obj.cost()) {
		return obj, false
	}
	c.objects.Wait()
	// Set only queues; the admission policy may still refuse the object when
	// the store is full.
	if _, ok := c.objects.Get(obj.Digest); !ok {
		return obj, false
	}
	return obj, true
}

func (c *Cache) isClosed() bool {
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	return c.closed
}

func (c *Cache) count(res *Result, err error) {
	if err != nil {
		c.errs.Add(1)
		return
	}
	switch res.Outcome {
	case Hit:
		c.hits.Add(1)
	case Revalidated:
		c.revalidations.Add(1)
	default:
		c.misses.Add(1)
	}
}

// Insert stores an object that arrived from another MWS with a session
// that moved here (its original, never an adapted variant). digest must be
// the body's digest: a mismatch is an error and nothing is stored. ok
// reports whether the store kept it (it may refuse when full).
func (c *Cache) Insert(digest string, body []byte, status int, h http.Header) (*Object, bool, error) {
	obj := newObject(body, status, storedHeader(h), c.cfg.now())
	if obj.Digest != digest {
		return nil, false, fmt.Errorf("objcache: object claimed as %s has digest %s", digest, obj.Digest)
	}
	stored, ok := c.store(obj)
	return stored, ok, nil
}
