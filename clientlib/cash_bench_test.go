package clientlib_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
)

// BenchmarkCASH measures CASH latency between two devices for application
// state of 1 KB to 1.25 MB (the paper's Fig. 6 bands): the source-observed
// total, its p50/p99, and the p50 of each phase.
func BenchmarkCASH(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 512 << 10, 1280 << 10} {
		b.Run(fmt.Sprintf("state=%dKB", size>>10), func(b *testing.B) {
			e := newCASHEnv(b, 0, nil, "a", "b")
			ctx := context.Background()
			sess, err := e.devices["a"].c.OpenSession(ctx, "editor")
			if err != nil {
				b.Fatal(err)
			}
			state := make([]byte, size)
			names := []string{"a", "b"}
			at := 0
			var total []time.Duration
			var phases [5][]time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
					return []clientlib.Element{{Name: "doc", Kind: clientlib.AppObject, ContentType: "application/octet-stream", Data: state}}, nil
				})
				next := 1 - at
				t0 := time.Now()
				res, err := sess.Handoff(ctx, names[next])
				if err != nil {
					b.Fatal(err)
				}
				r := <-e.devices[names[next]].arrived
				total = append(total, time.Since(t0))
				tm := res.Timings
				for j, d := range []time.Duration{tm.Skeleton, tm.StateUpload, tm.Adaptation, tm.Delivery, tm.Resume} {
					phases[j] = append(phases[j], d)
				}
				sess, at = r.Session, next
			}
			b.StopTimer()
			b.ReportMetric(pct(total, 50), "p50-µs")
			b.ReportMetric(pct(total, 99), "p99-µs")
			for j, name := range []string{"skeleton", "upload", "adapt", "delivery", "resume"} {
				b.ReportMetric(pct(phases[j], 50), name+"-p50-µs")
			}
		})
	}
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return float64(s[max(0, min(len(s)-1, i-1))].Microseconds())
}
