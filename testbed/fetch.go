package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/testbed/legacy"
)

// Path names of a request record.
const (
	pathDirect = "direct"
	pathImash  = "imash"
)

// ErrMismatch is wrapped by the error of a run in which imash delivered
// different bytes than the legacy server sent directly.
var ErrMismatch = errors.New("byte mismatch")

// record is the outcome of one fetch of one request: the JSON records of
// --json, one per path per request.
type record struct {
	// Seq is the request's index in the plan; the direct and the imash
	// fetch of a request share it.
	Seq    int    `json:"seq"`
	Device string `json:"device"`
	Object string `json:"object"`
	Size   int    `json:"size"`
	Band   string `json:"band"`
	// Path is "direct" (straight to the legacy server) or "imash"
	// (device → MWS → mux → legacy server).
	Path string `json:"path"`
	// Cache is the MWS's answer for imash fetches: MISS, HIT, REVALIDATED
	// or UNCACHED; empty for direct fetches.
	Cache string `json:"cache,omitempty"`
	// ExpectHit says whether the object had been requested through imash
	// before (by either device).
	ExpectHit bool `json:"expect_hit"`
	// StartUS is when the fetch started, in µs since the workload began;
	// LatencyUS is how long it took until the whole body had arrived.
	StartUS   int64 `json:"start_us"`
	LatencyUS int64 `json:"latency_us"`

	latency time.Duration
}

// device is a client device of the demo: its imash session and, for the
// baseline, its own keep-alive HTTP client to the legacy server.
type device struct {
	name    string
	client  *clientlib.Client
	session *clientlib.Session
	direct  *http.Client
}

// runWorkload serves every request of plan through imash and directly,
// verifying that the imash body is byte-identical to the direct one, which
// must be the image itself. It stops at the first failure (an ErrMismatch
// for different bytes) and returns the records made so far.
func runWorkload(ctx context.Context, plan []request, devices map[string]*device, images *legacy.HTTPServer) ([]record, error) {
	recs := make([]record, 0, 2*len(plan))
	began := time.Now()
	for _, r := range plan {
		if err := sleep(ctx, r.Delay); err != nil {
			return recs, err
		}
		d := devices[r.Device]
		path := "/images/" + r.Image.Name
		base := record{Seq: r.Seq, Device: r.Device, Object: r.Image.Name, Size: len(r.Image.Bytes), Band: bandOf(len(r.Image.Bytes)).Label, ExpectHit: r.ExpectHit}

		var directBody []byte
		var obj *clientlib.Object
		var directRec, imashRec record
		fetchDirectly := func() (err error) {
			directRec = base
			directRec.Path = pathDirect
			directRec.StartUS = time.Since(began).Microseconds()
			directBody, directRec.latency, err = fetchDirect(ctx, d.direct, images.URL(path))
			return err
		}
		fetchImash := func() (err error) {
			imashRec = base
			imashRec.Path = pathImash
			imashRec.StartUS = time.Since(began).Microseconds()
			obj, imashRec.latency, err = fetchThroughImash(ctx, d.session, path)
			if obj != nil {
				imashRec.Cache = outcomeName(obj.Cache)
			}
			return err
		}
		steps := []func() error{fetchDirectly, fetchImash}
		if r.ImashFirst {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return recs, fmt.Errorf("request %d (%s %s): %w", r.Seq, r.Device, path, err)
			}
		}
		directRec.LatencyUS, imashRec.LatencyUS = directRec.latency.Microseconds(), imashRec.latency.Microseconds()
		recs = append(recs, directRec, imashRec)
		if err := verify(r, directBody, obj); err != nil {
			return recs, err
		}
	}
	return recs, nil
}

// verify checks that the legacy server sent the image itself and that
// imash delivered exactly the same bytes, with a matching digest.
func verify(r request, direct []byte, obj *clientlib.Object) error {
	want := r.Image.Bytes
	where := fmt.Sprintf("request %d (%s /images/%s)", r.Seq, r.Device, r.Image.Name)
	if !bytes.Equal(direct, want) {
		return fmt.Errorf("%w: %s: the legacy server sent %s directly, the image is %s", ErrMismatch, where, describe(direct), describe(want))
	}
	if !bytes.Equal(obj.Body, direct) {
		return fmt.Errorf("%w: %s: imash delivered %s (cache %s), the legacy server sent %s directly", ErrMismatch, where, describe(obj.Body), outcomeName(obj.Cache), describe(direct))
	}
	if obj.Digest != "" {
		sum := sha256.Sum256(obj.Body)
		if want := "sha256:" + hex.EncodeToString(sum[:]); obj.Digest != want {
			return fmt.Errorf("%w: %s: MWS names the object %s, its bytes hash to %s", ErrMismatch, where, obj.Digest, want)
		}
	}
	return nil
}

// describe summarizes a body for an error message.
func describe(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%d bytes (sha256 %x…)", len(b), sum[:8])
}

// fetchDirect GETs url with c and returns the whole body and the time it
// took to arrive.
func fetchDirect(ctx context.Context, c *http.Client, url string) ([]byte, time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("direct: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	elapsed := time.Since(start)
	if err != nil {
		return nil, 0, fmt.Errorf("direct: reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("direct: status %s", resp.Status)
	}
	return body, elapsed, nil
}

// fetchThroughImash gets path from the "images" backend through the
// device's session and returns the object and the time it took to arrive.
func fetchThroughImash(ctx context.Context, s *clientlib.Session, path string) (*clientlib.Object, time.Duration, error) {
	start := time.Now()
	obj, err := s.Get(ctx, imagesBackend, path)
	elapsed := time.Since(start)
	if err != nil {
		return nil, 0, fmt.Errorf("imash: %w", err)
	}
	if obj.Status != http.StatusOK {
		return obj, 0, fmt.Errorf("imash: status %d", obj.Status)
	}
	return obj, elapsed, nil
}

// outcomeName is the short name of a cache outcome: MISS, HIT, …
func outcomeName(o clientlib.CacheOutcome) string {
	return strings.TrimPrefix(o.String(), "CACHE_OUTCOME_")
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
