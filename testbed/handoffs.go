package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/imashproject/imash/clientlib"
)

// handoffResult is what the demo's CASH phase measured.
type handoffResult struct {
	Count int
	// Total is the source-observed latency of each handoff, until the
	// target holds the session; Phases the MWS's breakdown.
	Total                                          []time.Duration
	Skeleton, Upload, Adaptation, Delivery, Resume []time.Duration
	StateBytes                                     int
	LegacyRequests                                 int64
}

// runHandoffs moves the workstation's session between the two devices n
// times (CASH). Its savepoint holds three images by reference, notes and a
// progress marker; each target checks it received the images from the
// MWS's copy, byte for byte, and the state intact, and the legacy server
// must see no request during the phase.
func runHandoffs(ctx context.Context, env *testbedEnv, n int) (*handoffResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type arrival struct {
		r   *clientlib.Resumed
		err error
	}
	arrived := map[string]chan arrival{}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, name := range demoDevices {
		ch := make(chan arrival, 1)
		arrived[name] = ch
		d := env.devices[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.client.Serve(ctx, clientlib.Target{
				Resumed: func(r *clientlib.Resumed) { ch <- arrival{r: r} },
				Failed:  func(_ string, err error) { ch <- arrival{err: err} },
			})
		}()
	}
	if err := waitOnline(ctx, env.devices[demoDevices[0]].client); err != nil {
		return nil, err
	}

	sess := env.devices[demoDevices[0]].session
	images := env.images.Set().Images()
	type ref struct {
		name, digest string
		body         []byte
	}
	var refs []ref
	for _, img := range images[:min(3, len(images))] {
		obj, err := sess.Get(ctx, imagesBackend, "/images/"+img.Name)
		if err != nil {
			return nil, fmt.Errorf("handoffs: fetching %s: %w", img.Name, err)
		}
		if obj.Digest == "" {
			return nil, fmt.Errorf("handoffs: %s is not kept by the MWS", img.Name)
		}
		refs = append(refs, ref{img.Name, obj.Digest, img.Bytes})
	}
	notes := bytes.Repeat([]byte("patient stable; continue observation. "), 100)
	res := &handoffResult{Count: n, StateBytes: len(notes)}
	before := env.images.Requests()
	at := 0
	for i := range n {
		progress := fmt.Appendf(nil, "image=%d;zoom=2", i%len(refs))
		sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
			els := []clientlib.Element{
				{Name: "notes", Kind: clientlib.AppObject, ContentType: "text/plain", Data: notes},
				{Name: "progress", Kind: clientlib.Progress, ContentType: "text/plain", Data: progress},
			}
			for _, r := range refs {
				els = append(els, clientlib.Element{Name: "image/" + r.name, Kind: clientlib.ServerObject, Digest: r.digest})
			}
			return els, nil
		})
		next := 1 - at
		t0 := time.Now()
		out, err := sess.Handoff(ctx, demoDevices[next])
		if err != nil {
			return nil, fmt.Errorf("handoff %d to %s: %w", i, demoDevices[next], err)
		}
		var a arrival
		select {
		case a = <-arrived[demoDevices[next]]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if a.err != nil {
			return nil, fmt.Errorf("handoff %d: target: %w", i, a.err)
		}
		res.Total = append(res.Total, time.Since(t0))
		t := out.Timings
		res.Skeleton = append(res.Skeleton, t.Skeleton)
		res.Upload = append(res.Upload, t.StateUpload)
		res.Adaptation = append(res.Adaptation, t.Adaptation)
		res.Delivery = append(res.Delivery, t.Delivery)
		res.Resume = append(res.Resume, t.Resume)
		if err := checkArrival(a.r, notes, progress, func(name string) ([]byte, bool) {
			for _, r := range refs {
				if "image/"+r.name == name {
					return r.body, true
				}
			}
			return nil, false
		}); err != nil {
			return nil, fmt.Errorf("handoff %d: %w", i, err)
		}
		sess, at = a.r.Session, next
	}
	env.devices[demoDevices[0]].session = sess // the session lives on where it ended
	res.LegacyRequests = env.images.Requests() - before
	if res.LegacyRequests != 0 {
		return nil, fmt.Errorf("handoffs: the legacy server saw %d requests; state must come from the MWS", res.LegacyRequests)
	}
	return res, nil
}

// checkArrival verifies a resumed session's elements.
func checkArrival(r *clientlib.Resumed, notes, progress []byte, image func(string) ([]byte, bool)) error {
	seen := 0
	for _, e := range r.Elements {
		switch e.Kind {
		case clientlib.ServerObject:
			want, ok := image(e.Name)
			if !ok || !bytes.Equal(e.Data, want) {
				return fmt.Errorf("server object %s differs from the original", e.Name)
			}
		case clientlib.AppObject:
			if !bytes.Equal(e.Data, notes) {
				return errors.New("notes differ")
			}
		case clientlib.Progress:
			if !bytes.Equal(e.Data, progress) {
				return fmt.Errorf("progress %q, want %q", e.Data, progress)
			}
		}
		seen++
	}
	if seen != 5 {
		return fmt.Errorf("%d elements arrived, want 5", seen)
	}
	return nil
}

// waitOnline polls until both demo devices are online at the MWS.
func waitOnline(ctx context.Context, c *clientlib.Client) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := c.Devices(ctx)
		if err != nil {
			return err
		}
		online := 0
		for _, d := range list {
			if d.Online {
				online++
			}
		}
		if online == len(demoDevices) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("handoffs: devices did not come online")
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// write reports the CASH phase.
func (h *handoffResult) write(w io.Writer) {
	pct := func(d []time.Duration, p float64) float64 {
		v, _ := percentile(d, p)
		return float64(v.Microseconds()) / 1000
	}
	p50 := func(d []time.Duration) float64 { return pct(d, 50) }
	p99 := func(d []time.Duration) float64 { return pct(d, 99) }
	fmt.Fprintf(w, "handoffs:       %d CASH between %s and %s (3 images by reference + %d B of notes + progress); legacy requests meanwhile: %d\n",
		h.Count, demoDevices[0], demoDevices[1], h.StateBytes, h.LegacyRequests)
	fmt.Fprintf(w, "  latency       p50 %.2f ms, p99 %.2f ms (from the source's request until the target holds the session)\n", p50(h.Total), p99(h.Total))
	fmt.Fprintf(w, "  phases p50    skeleton %.2f ms, state upload %.2f ms, adaptation %.2f ms (overlapped), delivery %.2f ms, resume %.2f ms\n",
		p50(h.Skeleton), p50(h.Upload), p50(h.Adaptation), p50(h.Delivery), p50(h.Resume))
}
