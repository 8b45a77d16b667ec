package testbed

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []time.Duration{10, 1, 9, 2, 8, 3, 7, 4, 6, 5} // 1..10, unsorted
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100 - i) // 100..1
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
		wantOK  bool
	}{
		{name: "empty", samples: nil, p: 50, want: 0, wantOK: false},
		{name: "negative p", samples: ten, p: -1, want: 0, wantOK: false},
		{name: "p above 100", samples: ten, p: 100.5, want: 0, wantOK: false},
		{name: "NaN p", samples: ten, p: math.NaN(), want: 0, wantOK: false},
		{name: "one sample p0", samples: []time.Duration{7}, p: 0, want: 7, wantOK: true},
		{name: "one sample p50", samples: []time.Duration{7}, p: 50, want: 7, wantOK: true},
		{name: "one sample p100", samples: []time.Duration{7}, p: 100, want: 7, wantOK: true},
		{name: "ten p0 is the minimum", samples: ten, p: 0, want: 1, wantOK: true},
		{name: "ten p10", samples: ten, p: 10, want: 1, wantOK: true},
		{name: "ten p11", samples: ten, p: 11, want: 2, wantOK: true},
		{name: "ten p50", samples: ten, p: 50, want: 5, wantOK: true},
		{name: "ten p51", samples: ten, p: 51, want: 6, wantOK: true},
		{name: "ten p99 is the maximum", samples: ten, p: 99, want: 10, wantOK: true},
		{name: "ten p100", samples: ten, p: 100, want: 10, wantOK: true},
		{name: "hundred p50", samples: hundred, p: 50, want: 50, wantOK: true},
		{name: "hundred p99", samples: hundred, p: 99, want: 99, wantOK: true},
		{name: "hundred p99.5", samples: hundred, p: 99.5, want: 100, wantOK: true},
		{name: "two samples p50 takes the lower", samples: []time.Duration{20, 10}, p: 50, want: 10, wantOK: true},
		{name: "duplicates", samples: []time.Duration{3, 3, 3, 1}, p: 50, want: 3, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := slices.Clone(tt.samples)
			got, ok := percentile(tt.samples, tt.p)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("percentile(%v, %v) = %v, %v; want %v, %v", tt.samples, tt.p, got, ok, tt.want, tt.wantOK)
			}
			if !slices.Equal(before, tt.samples) {
				t.Errorf("percentile modified its input: %v, was %v", tt.samples, before)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		want    latencySummary
	}{
		{name: "none", samples: nil, want: latencySummary{}},
		{name: "one", samples: []time.Duration{4}, want: latencySummary{N: 1, P50: 4, P99: 4}},
		{name: "five", samples: []time.Duration{50, 10, 40, 20, 30}, want: latencySummary{N: 5, P50: 30, P99: 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.samples); got != tt.want {
				t.Errorf("summarize(%v) = %+v, want %+v", tt.samples, got, tt.want)
			}
		})
	}
}

// TestSummarizeAgreesWithPercentile checks the two entry points on many
// sizes, so the single-sort shortcut cannot drift from the definition.
func TestSummarizeAgreesWithPercentile(t *testing.T) {
	for n := 1; n <= 250; n++ {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration((i * 7919) % 1009) // scrambled, with repeats beyond 1009
		}
		sum := summarize(s)
		p50, _ := percentile(s, 50)
		p99, _ := percentile(s, 99)
		if sum.N != n || sum.P50 != p50 || sum.P99 != p99 {
			t.Fatalf("n=%d: summarize = %+v, percentile gives p50 %v p99 %v", n, sum, p50, p99)
		}
	}
}
