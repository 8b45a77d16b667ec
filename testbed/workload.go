package testbed

import (
	"math/rand/v2"
	"time"

	"github.com/imashproject/imash/testbed/legacy"
)

// repeatProbability is the chance that a device, after requesting an
// image, goes back to one it requested before (a browser's back button),
// which the MWS must answer from its cache.
const repeatProbability = 0.25

// request is one step of the workload: a device asks for an image. Each
// request is served twice, once through imash and once directly from the
// legacy server, back to back in the order ImashFirst says, so both paths
// see the same machine load.
type request struct {
	// Seq is the request's index in the plan.
	Seq int
	// Device is the requesting device's name.
	Device string
	// Image is the requested object.
	Image *legacy.Image
	// ImashFirst says which path of the pair goes first; it alternates at
	// random so neither path systematically warms the other's caches.
	ImashFirst bool
	// Delay is how long to wait before the request (zero unless paced).
	Delay time.Duration
	// ExpectHit says whether any device requested the image through
	// imash before, so the MWS should answer from its cache.
	ExpectHit bool
}

// workloadOptions parameterize planWorkload.
type workloadOptions struct {
	// Devices are the two devices' names; the first browses first, the
	// second takes over (as after a handoff) and revisits part of what
	// the first saw.
	Devices [2]string
	// Seed makes the plan repeatable.
	Seed uint64
	// MeanDelay > 0 draws exponential delays of that mean between
	// requests (Poisson arrivals); 0 means no delay.
	MeanDelay time.Duration
}

// planWorkload returns the seeded request sequence for images. The images
// are split in a seeded random order: the first device requests about two
// thirds of them, and sometimes goes back to one it saw before; then the
// second device requests the remaining third mixed with half of the first
// device's images, also going back sometimes. Every image is requested at
// least once, so a run of the paper's 200 images requests all 200. The plan
// depends only on the arguments, and MeanDelay changes only the delays.
func planWorkload(images []*legacy.Image, opts workloadOptions) []request {
	rng := rand.New(rand.NewPCG(opts.Seed, 0x696d617368)) // "imash"
	// Delays come from their own generator, so that pacing a run does
	// not change which images it requests.
	delays := rand.New(rand.NewPCG(opts.Seed, 0x7061636564)) // "paced"
	n := len(images)
	perm := rng.Perm(n)
	nFirst := (2*n + 2) / 3
	first, rest := perm[:nFirst], perm[nFirst:]

	// The second device revisits half of the first device's images.
	revisit := rng.Perm(nFirst)[:max(1, nFirst/2)]
	second := append([]int(nil), rest...)
	for _, i := range revisit {
		second = append(second, first[i])
	}
	rng.Shuffle(len(second), func(i, j int) { second[i], second[j] = second[j], second[i] })

	var plan []request
	requested := make(map[int]bool)
	add := func(device string, img int) {
		r := request{
			Seq:        len(plan),
			Device:     device,
			Image:      images[img],
			ImashFirst: rng.IntN(2) == 0,
			ExpectHit:  requested[img],
		}
		if opts.MeanDelay > 0 {
			r.Delay = time.Duration(delays.ExpFloat64() * float64(opts.MeanDelay))
		}
		requested[img] = true
		plan = append(plan, r)
	}
	for d, order := range [][]int{first, second} {
		device := opts.Devices[d]
		var seen []int
		for _, img := range order {
			add(device, img)
			seen = append(seen, img)
			if len(seen) > 1 && rng.Float64() < repeatProbability {
				add(device, seen[rng.IntN(len(seen)-1)])
			}
		}
	}
	return plan
}
