package clientlib_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
)

// BenchmarkHandoffFASHvsCASH hands the same session state from a PDA to a
// device on the same MWS (CASH) and to one on another MWS (FASH), in one
// run, and reports both latencies: until the source's Handoff returns, and
// until the session has arrived on the target. The state is an image the
// session fetched (a server object, adapted for the target from the MWS's
// original) and an application object of the given size.
//
//	go test -run '^$' -bench HandoffFASHvsCASH -benchtime 40x ./clientlib/
func BenchmarkHandoffFASHvsCASH(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10, 1250 << 10} {
		b.Run(fmt.Sprintf("state=%dKB", size>>10), func(b *testing.B) {
			e := newMASHEnv(b, 0, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			src := e.device(b, "pda", 0, testbedDocs(b, "pda")...)
			targets := map[string]chan *clientlib.Resumed{}
			for _, t := range []struct {
				name string
				mws  int
			}{{"desktop", 0}, {"workstation", 1}} {
				c := e.device(b, t.name, t.mws)
				ch := make(chan *clientlib.Resumed, 1)
				targets[t.name] = ch
				go c.Serve(ctx, clientlib.Target{Resumed: func(r *clientlib.Resumed) { ch <- r }})
			}
			home := e.cl.MWS[0].Name()
			pollDeadline(b, "targets online", func() bool {
				_, on1, _ := e.cl.Peers.For(home).LookupDevice("doc", "desktop")
				_, on2, _ := e.cl.Peers.For(home).LookupDevice("doc", "workstation")
				return on1 && on2
			})
			img := e.set.Images()[len(e.set.Images())-1]
			app := make([]byte, size)
			for i := range app {
				app[i] = byte(i * 7)
			}
			type sample struct{ handoff, arrived time.Duration }
			results := map[string][]sample{}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, target := range []string{"desktop", "workstation"} {
					sess, err := src.OpenSession(ctx, "viewer")
					if err != nil {
						b.Fatal(err)
					}
					obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
					if err != nil {
						b.Fatal(err)
					}
					sess.SetSavepointProvider(func(context.Context) ([]clientlib.Element, error) {
						return []clientlib.Element{
							{Name: "image", Kind: clientlib.ServerObject, Digest: obj.Digest},
							{Name: "document", Kind: clientlib.AppObject, Data: app},
						}, nil
					})
					t0 := time.Now()
					if _, err := sess.Handoff(ctx, target); err != nil {
						b.Fatalf("%s: %v", target, err)
					}
					t1 := time.Now()
					var r *clientlib.Resumed
					select {
					case r = <-targets[target]:
					case <-time.After(time.Minute):
						b.Fatalf("%s: nothing arrived", target)
					}
					t2 := time.Now()
					results[target] = append(results[target], sample{t1.Sub(t0), t2.Sub(t0)})
					if err := r.Session.Close(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			pct := func(s []sample, f func(sample) time.Duration, p float64) time.Duration {
				v := make([]time.Duration, len(s))
				for i, x := range s {
					v[i] = f(x)
				}
				slices.Sort(v)
				return v[min(len(v)-1, int(p*float64(len(v))))]
			}
			arrived := func(s sample) time.Duration { return s.arrived }
			handoff := func(s sample) time.Duration { return s.handoff }
			for _, k := range []struct{ name, target string }{{"cash", "desktop"}, {"fash", "workstation"}} {
				s := results[k.target]
				b.ReportMetric(float64(pct(s, arrived, 0.5).Microseconds()), k.name+"-arrived-p50-us")
				b.ReportMetric(float64(pct(s, arrived, 0.99).Microseconds()), k.name+"-arrived-p99-us")
				b.ReportMetric(float64(pct(s, handoff, 0.5).Microseconds()), k.name+"-handoff-p50-us")
			}
			c50, f50 := pct(results["desktop"], arrived, 0.5), pct(results["workstation"], arrived, 0.5)
			b.ReportMetric(float64(f50)/float64(c50), "fash/cash-p50")
			b.Logf("state %d KB, %d handoffs each: arrived p50 CASH %v FASH %v (FASH/CASH %.2f); p99 CASH %v FASH %v",
				size>>10, b.N, c50, f50, float64(f50)/float64(c50),
				pct(results["desktop"], arrived, 0.99), pct(results["workstation"], arrived, 0.99))
			b.ReportMetric(0, "ns/op")
		})
	}
}
