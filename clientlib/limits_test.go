package clientlib_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestGetTooLarge proves Config.MaxObjectBytes: an object over the
// device's limit fails with ErrTooLarge, whether the MWS announces its size
// (a cached object) or streams it (an object over the MWS's own cache
// limit, of unknown size), and the session keeps working.
func TestGetTooLarge(t *testing.T) {
	const deviceLimit, mwsLimit = 16 << 10, 8 << 10
	e := newLibEnv(t, nil, func(c *mws.Config) {
		c.Cache.MaxObjectBytes = mwsLimit
		c.GetChunk = 4 << 10
	})
	ctx := libCtx(t)
	s := e.session(t, ctx, func(c *clientlib.Config) { c.MaxObjectBytes = deviceLimit })
	var small, mid, big *legacy.Image
	for _, img := range e.set.Images() {
		switch n := len(img.Bytes); {
		case n <= mwsLimit && small == nil:
			small = img
		case n > mwsLimit && n <= deviceLimit && mid == nil:
			mid = img
		case n > 2*deviceLimit && big == nil:
			big = img
		}
	}
	if small == nil || mid == nil || big == nil {
		t.Fatalf("image sizes %v: need one under %d, one between %d and %d, and one over %d bytes", e.set.Sizes(), mwsLimit, mwsLimit, deviceLimit, 2*deviceLimit)
	}

	// Over both limits: the MWS streams it without a size, and the device
	// stops once the body passes its limit.
	_, err := s.Get(ctx, "images", "/images/"+big.Name)
	if !errors.Is(err, clientlib.ErrTooLarge) {
		t.Fatalf("streamed object of %d bytes: %v, want ErrTooLarge", len(big.Bytes), err)
	}

	// Between the limits: streamed, of unknown size, and fits.
	obj, err := s.Get(ctx, "images", "/images/"+mid.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(obj.Body, mid.Bytes) || obj.Cache != mwsv1.CacheOutcome_CACHE_OUTCOME_UNCACHED || obj.Digest != "" {
		t.Fatalf("streamed object: %d bytes, %v, digest %q", len(obj.Body), obj.Cache, obj.Digest)
	}

	obj, err = s.Get(ctx, "images", "/images/"+small.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(obj.Body, small.Bytes) || obj.Cache != mwsv1.CacheOutcome_CACHE_OUTCOME_MISS {
		t.Fatalf("small object: %d bytes, %v", len(obj.Body), obj.Cache)
	}

	// A device with a limit below a cached object's announced size.
	tiny := e.session(t, ctx, func(c *clientlib.Config) { c.MaxObjectBytes = int64(len(small.Bytes)) - 1 })
	if _, err := tiny.Get(ctx, "images", "/images/"+small.Name); !errors.Is(err, clientlib.ErrTooLarge) {
		t.Fatalf("cached object of %d bytes over a limit of %d: %v, want ErrTooLarge", len(small.Bytes), len(small.Bytes)-1, err)
	}
	if n := e.http.RequestsFor("/images/" + small.Name); n != 1 {
		t.Fatalf("the refused object was fetched upstream again (%d requests); it should have been a hit", n)
	}
}

// TestNotLoggedIn proves that calls needing a user fail locally with
// ErrNotLoggedIn before login and after logout.
func TestNotLoggedIn(t *testing.T) {
	e := newLibEnv(t, nil, nil)
	ctx := libCtx(t)
	c := e.dial(t, "pda-1", nil)
	check := func(when string) {
		t.Helper()
		if _, err := c.OpenSession(ctx, "test"); !errors.Is(err, clientlib.ErrNotLoggedIn) {
			t.Fatalf("OpenSession %s: %v", when, err)
		}
		if _, err := c.Sessions(ctx); !errors.Is(err, clientlib.ErrNotLoggedIn) {
			t.Fatalf("Sessions %s: %v", when, err)
		}
		if _, err := c.Backends(ctx); !errors.Is(err, clientlib.ErrNotLoggedIn) {
			t.Fatalf("Backends %s: %v", when, err)
		}
		if err := c.Events(ctx, func(clientlib.Event) {}); !errors.Is(err, clientlib.ErrNotLoggedIn) {
			t.Fatalf("Events %s: %v", when, err)
		}
	}
	check("before login")
	if err := c.Login(ctx, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	bs, err := c.Backends(ctx)
	if err != nil || len(bs) != 1 || bs[0] != (clientlib.Backend{Name: "images", HTTP: true}) {
		t.Fatalf("backends %+v, %v", bs, err)
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	check("after logout")
}
