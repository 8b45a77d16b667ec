package testbed

import (
	"fmt"
	"testing"
	"time"

	"github.com/imashproject/imash/testbed/legacy"
)

// fakeImages returns n distinct images without encoding any JPEG: the
// planner only looks at names and sizes.
func fakeImages(n int) []*legacy.Image {
	imgs := make([]*legacy.Image, n)
	for i := range imgs {
		imgs[i] = &legacy.Image{Name: fmt.Sprintf("img-%03d.jpg", i), Bytes: make([]byte, 512+i)}
	}
	return imgs
}

func TestPlanWorkloadIsSeeded(t *testing.T) {
	imgs := fakeImages(60)
	opts := workloadOptions{Devices: demoDevices, Seed: 7, MeanDelay: time.Second}
	a, b := planWorkload(imgs, opts), planWorkload(imgs, opts)
	if len(a) != len(b) {
		t.Fatalf("same seed, %d and %d requests", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, request %d differs: %+v vs %+v", i, a[i], b[i])
		}
	}
	opts.Seed = 8
	c := planWorkload(imgs, opts)
	same := len(c) == len(a)
	for i := 0; same && i < len(a); i++ {
		same = a[i].Image == c[i].Image && a[i].Device == c[i].Device
	}
	if same {
		t.Fatal("seeds 7 and 8 gave the same request sequence")
	}
}

func TestPlanWorkloadShape(t *testing.T) {
	for _, n := range []int{1, 2, 3, 8, 60, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			imgs := fakeImages(n)
			plan := planWorkload(imgs, workloadOptions{Devices: demoDevices, Seed: 1})
			seen := map[*legacy.Image]bool{}
			firstSaw := map[*legacy.Image]bool{}
			secondRevisits := 0
			phase := 0
			for i, r := range plan {
				if r.Seq != i {
					t.Fatalf("request %d has Seq %d", i, r.Seq)
				}
				if r.Delay != 0 {
					t.Fatalf("request %d: delay %v without MeanDelay", i, r.Delay)
				}
				if r.ExpectHit != seen[r.Image] {
					t.Fatalf("request %d (%s %s): ExpectHit %v, requested before: %v", i, r.Device, r.Image.Name, r.ExpectHit, seen[r.Image])
				}
				switch r.Device {
				case demoDevices[0]:
					if phase == 1 {
						t.Fatalf("request %d: %s again after %s took over", i, demoDevices[0], demoDevices[1])
					}
					firstSaw[r.Image] = true
				case demoDevices[1]:
					phase = 1
					if firstSaw[r.Image] {
						secondRevisits++
					}
				default:
					t.Fatalf("request %d: unknown device %q", i, r.Device)
				}
				seen[r.Image] = true
			}
			if len(seen) != n {
				t.Errorf("%d of %d images requested", len(seen), n)
			}
			if want := (2*n + 2) / 3; len(firstSaw) != want {
				t.Errorf("%s requested %d distinct images, want %d", demoDevices[0], len(firstSaw), want)
			}
			if secondRevisits == 0 {
				t.Errorf("%s never re-requested an image %s fetched, so it cannot hit the MWS cache", demoDevices[1], demoDevices[0])
			}
			hits := 0
			for _, r := range plan {
				if r.ExpectHit {
					hits++
				}
			}
			if len(plan)-hits != n {
				t.Errorf("%d requests expect a miss, want one per image (%d)", len(plan)-hits, n)
			}
		})
	}
}

func TestPlanWorkloadPacedDelays(t *testing.T) {
	const mean = 100 * time.Millisecond
	plan := planWorkload(fakeImages(200), workloadOptions{Devices: demoDevices, Seed: 3, MeanDelay: mean})
	var total time.Duration
	for i, r := range plan {
		if r.Delay < 0 {
			t.Fatalf("request %d: negative delay %v", i, r.Delay)
		}
		total += r.Delay
	}
	// About 300 exponential samples: the sample mean's standard deviation
	// is mean/√300 ≈ 6%, so 25% is over four of them.
	got := total / time.Duration(len(plan))
	if got < mean*3/4 || got > mean*5/4 {
		t.Fatalf("mean delay %v over %d requests, want about %v", got, len(plan), mean)
	}
}

func TestPlanWorkloadPacingKeepsSequence(t *testing.T) {
	imgs := fakeImages(60)
	plain := planWorkload(imgs, workloadOptions{Devices: demoDevices, Seed: 9})
	paced := planWorkload(imgs, workloadOptions{Devices: demoDevices, Seed: 9, MeanDelay: time.Second})
	if len(plain) != len(paced) {
		t.Fatalf("pacing changed the request count: %d vs %d", len(plain), len(paced))
	}
	for i := range plain {
		p := paced[i]
		p.Delay = 0
		if p != plain[i] {
			t.Fatalf("pacing changed request %d: %+v vs %+v", i, paced[i], plain[i])
		}
	}
}
