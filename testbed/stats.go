package testbed

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 ≤ p ≤ 100) of samples by the
// nearest-rank method: the smallest sample such that at least p percent of
// the samples are less than or equal to it. p = 0 gives the minimum and
// p = 100 the maximum, and every result is one of the samples (no
// interpolation, so a p99 of a few samples is honestly their maximum).
// ok is false, and the result zero, for no samples or p out of range.
// samples is not modified.
func percentile(samples []time.Duration, p float64) (d time.Duration, ok bool) {
	if len(samples) == 0 || p < 0 || p > 100 || math.IsNaN(p) {
		return 0, false
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	return sortedPercentile(sorted, p), true
}

// sortedPercentile is percentile for a sorted, non-empty slice and a valid p.
func sortedPercentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p * float64(len(sorted)) / 100))
	return sorted[max(rank, 1)-1]
}

// latencySummary is the count and the percentiles the report prints.
type latencySummary struct {
	N        int
	P50, P99 time.Duration
}

// summarize computes a latencySummary (the zero value for no samples).
func summarize(samples []time.Duration) latencySummary {
	if len(samples) == 0 {
		return latencySummary{}
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	return latencySummary{N: len(sorted), P50: sortedPercentile(sorted, 50), P99: sortedPercentile(sorted, 99)}
}
