package mws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/dgraph-io/ristretto/v2"
	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/adapters"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws/objcache"
	"github.com/imashproject/imash/profiles"
)

// deviceProfiles holds each device's merged constraints, from the profiles
// it gave at login.
type deviceProfiles struct {
	mu sync.RWMutex
	m  map[string]profiles.Constraints
}

func (d *deviceProfiles) set(device string, c profiles.Constraints) {
	d.mu.Lock()
	if d.m == nil {
		d.m = map[string]profiles.Constraints{}
	}
	d.m[device] = c
	d.mu.Unlock()
}

func (d *deviceProfiles) get(device string) (profiles.Constraints, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	c, ok := d.m[device]
	return c, ok
}

// mergeLoginProfiles parses a device's profiles and merges them, with the
// default user and application profiles standing in for missing kinds.
func mergeLoginProfiles(docs [][]byte, maxDocs int) (profiles.Constraints, error) {
	ps, err := loginProfiles(docs, maxDocs)
	if err != nil {
		return profiles.Constraints{}, err
	}
	c, err := profiles.Merge(ps...)
	if err != nil {
		return profiles.Constraints{}, rpcerr.New(codes.InvalidArgument, "BAD_PROFILE", "%v", err)
	}
	return c, nil
}

// loginProfiles parses a device's profiles, adding the default user and
// application profiles for missing kinds.
func loginProfiles(docs [][]byte, maxDocs int) ([]*profiles.Profile, error) {
	if len(docs) > maxDocs {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_PROFILE", "%d profiles exceed the limit of %d", len(docs), maxDocs)
	}
	var ps []*profiles.Profile
	kinds := map[profiles.Kind]bool{}
	var errs []error
	for i, doc := range docs {
		p, err := profiles.Parse(bytes.NewReader(doc), fmt.Sprintf("profile[%d]", i))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps = append(ps, p)
		kinds[p.Kind] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_PROFILE", "%v", err)
	}
	if !kinds[profiles.KindUser] {
		ps = append(ps, profiles.DefaultUser())
	}
	if !kinds[profiles.KindApplication] {
		ps = append(ps, profiles.DefaultApplication())
	}
	return ps, nil
}

// variantCache keeps adapted variants by (object digest, constraints
// digest) and runs identical concurrent adaptations once.
type variantCache struct {
	a     *adapters.Adapter
	store *ristretto.Cache[string, *adapters.Result]

	mu      sync.Mutex
	flights map[string]*variantFlight
}

type variantFlight struct {
	done chan struct{}
	res  *adapters.Result
	err  error
}

func newVariantCache(a *adapters.Adapter, maxBytes int64) (*variantCache, error) {
	store, err := ristretto.NewCache(&ristretto.Config[string, *adapters.Result]{
		NumCounters: 100000, MaxCost: maxBytes, BufferItems: 64, IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	return &variantCache{a: a, store: store, flights: map[string]*variantFlight{}}, nil
}

func (v *variantCache) close() { v.store.Close() }

// adapt returns obj adapted to c.
func (v *variantCache) adapt(ctx context.Context, obj *objcache.Object, c profiles.Constraints) (*adapters.Result, error) {
	key := obj.Digest + "|" + c.Digest()
	if r, ok := v.store.Get(key); ok {
		return r, nil
	}
	v.mu.Lock()
	if f := v.flights[key]; f != nil {
		v.mu.Unlock()
		select {
		case <-f.done:
			return f.res, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &variantFlight{done: make(chan struct{})}
	v.flights[key] = f
	v.mu.Unlock()

	// The adaptation is shared: it must not die with the first caller.
	f.res, f.err = v.a.Adapt(context.WithoutCancel(ctx), obj.Body, c)
	if f.err == nil {
		v.store.Set(key, f.res, int64(len(f.res.Data))+256)
		v.store.Wait()
	}
	v.mu.Lock()
	delete(v.flights, key)
	v.mu.Unlock()
	close(f.done)
	return f.res, f.err
}

// clientHints are the request headers that describe a device or its
// network (HTTP Client Hints). Accept alone is not one: every browser sends
// it.
var clientHints = []string{"Viewport-Width", "Sec-CH-Viewport-Width", "Viewport-Height", "Sec-CH-Viewport-Height",
	"DPR", "Sec-CH-DPR", "Width", "Sec-CH-Width", "Downlink", "RTT", "ECT", "Save-Data"}

// constraintsFor returns the constraints to adapt for: the device's
// profiles from its login (with the network it was measured to have, once
// it was: see liveConstraints), else the request's Client Hints (a browser
// behind the black-box proxy), else none.
func (s *Server) constraintsFor(device string, h http.Header) (profiles.Constraints, bool, error) {
	if c, ok := s.profiles.get(device); ok {
		return s.liveConstraints(device, c), true, nil
	}
	if !slices.ContainsFunc(clientHints, func(k string) bool { return h.Get(k) != "" }) {
		return profiles.Constraints{}, false, nil
	}
	dev, net, err := profiles.FromClientHints(h)
	if err != nil {
		return profiles.Constraints{}, false, rpcerr.New(codes.InvalidArgument, "BAD_CLIENT_HINTS", "%v", err)
	}
	ps := []*profiles.Profile{profiles.DefaultUser(), profiles.DefaultApplication()}
	for _, p := range []*profiles.Profile{dev, net} {
		if p != nil { // absent when no hint speaks of it
			ps = append(ps, p)
		}
	}
	c, err := profiles.Merge(ps...)
	if err != nil {
		return profiles.Constraints{}, false, rpcerr.New(codes.InvalidArgument, "BAD_CLIENT_HINTS", "%v", err)
	}
	return c, true, nil
}

// adaptFor returns the variant of obj for device (with the request headers
// h, which may carry Client Hints): ok is false when there is nothing to
// adapt for, or adaptation is off.
func (s *Server) adaptFor(ctx context.Context, obj *objcache.Object, device string, h http.Header) (*adapters.Result, bool, error) {
	if s.variants == nil {
		return nil, false, nil
	}
	c, ok, err := s.constraintsFor(device, h)
	if err != nil || !ok {
		return nil, false, err
	}
	r, err := s.variants.adapt(ctx, obj, c)
	if err != nil {
		return nil, false, rpcerr.New(codes.Internal, "ADAPTATION_FAILED", "adapting %s for %s: %v", obj.Digest, device, err)
	}
	return r, true, nil
}

// contentAdapter is the MWS's Adapter for handoffs: the target's variant,
// made from the original.
type contentAdapter struct{ s *Server }

func (c contentAdapter) Adaptable(contentType string) bool {
	return strings.HasPrefix(contentType, "image/") || strings.Contains(contentType, "xml")
}

func (c contentAdapter) Adapt(ctx context.Context, obj *objcache.Object, device string) ([]byte, string, bool, error) {
	r, ok, err := c.s.adaptFor(ctx, obj, device, nil)
	if err != nil {
		return nil, "", false, err
	}
	if !ok {
		return obj.Body, obj.ContentType, false, nil
	}
	return r.Data, r.ContentType, r.Adapted, nil
}
