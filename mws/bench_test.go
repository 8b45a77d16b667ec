package mws_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// Benchmarks of the MWS data path, each measuring imash and a direct
// connection to the same legacy server in the same run, so that the ratio
// compares like with like on the same machine at the same moment. Legacy
// servers, mux, MWS and client all run in this one process: the numbers are
// the whole path's cost on this machine, not the MWS's alone.

// benchSizes are the paper's workload extremes and a middle size: [lo, hi]
// bands for one generated image each.
var benchSizes = []struct {
	name   string
	lo, hi int
}{
	{"0.5KB", 512, 540},
	{"64KB", 63 << 10, 65 << 10},
	{"1.25MB", 1_240_000, 1_260_000},
}

// BenchmarkGet measures the latency of one Get through imash (clientlib →
// MWS → mux → legacy server) and of one plain HTTP GET to the legacy
// server, per object size, for cache misses and hits. Each iteration makes
// one request each way (alternating which goes first) and every sample is
// kept, so p50 and p99 are exact for the run.
//
// A miss asks for the image with a query string never used before: a
// distinct cache key, so the MWS fetches, digests and stores the full
// response (the path /nostore/ would skip storing). The benchmark checks
// that every such request reached the legacy server.
func BenchmarkGet(b *testing.B) {
	backends := map[string]string{}
	var names []string
	images := map[string]*legacy.Image{}
	servers := map[string]*legacy.HTTPServer{}
	for i, sz := range benchSizes {
		set, err := legacy.GenerateImages(uint64(100+i), 1, sz.lo, sz.hi)
		if err != nil {
			b.Fatal(err)
		}
		hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = hs.Close() })
		name := "size-" + sz.name
		backends[name] = hs.Addr()
		names = append(names, name)
		images[name] = set.Images()[0]
		servers[name] = hs
	}
	cl, err := cluster.Start(cluster.Options{Backends: backends, HTTPBackends: names, Users: testUsers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cl.Close(context.Background()) })
	ctx := context.Background()
	s := benchSession(b, cl)
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	b.Cleanup(direct.CloseIdleConnections)

	for i, sz := range benchSizes {
		backend := names[i]
		img, hs := images[backend], servers[backend]
		for _, mode := range []string{"miss", "hit"} {
			b.Run(fmt.Sprintf("size=%s/%s", sz.name, mode), func(b *testing.B) {
				path := "/images/" + img.Name
				want := mwsv1.CacheOutcome_CACHE_OUTCOME_HIT
				if mode == "miss" {
					want = mwsv1.CacheOutcome_CACHE_OUTCOME_MISS
				} else if _, err := s.Get(ctx, backend, path); err != nil {
					b.Fatal(err)
				}
				var viaImash, viaDirect []time.Duration
				upstreamBefore, connsBefore := hs.RequestsFor(path), hs.ConnectionsAccepted()
				n := 0
				for b.Loop() {
					target := path
					if mode == "miss" {
						target = fmt.Sprintf("%s?miss=%d-%d", path, time.Now().UnixNano(), n)
					}
					imash := func() {
						start := time.Now()
						obj, err := s.Get(ctx, backend, target)
						viaImash = append(viaImash, time.Since(start))
						if err != nil {
							b.Fatal(err)
						}
						if len(obj.Body) != len(img.Bytes) || obj.Cache != want {
							b.Fatalf("imash: %d bytes, %v; want %d bytes, %v", len(obj.Body), obj.Cache, len(img.Bytes), want)
						}
					}
					plain := func() {
						start := time.Now()
						resp, err := direct.Get(hs.URL(target))
						if err != nil {
							b.Fatal(err)
						}
						body, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						viaDirect = append(viaDirect, time.Since(start))
						if err != nil || len(body) != len(img.Bytes) {
							b.Fatalf("direct: %d bytes, %v", len(body), err)
						}
					}
					if n%2 == 0 {
						imash()
						plain()
					} else {
						plain()
						imash()
					}
					n++
				}
				upstream := hs.RequestsFor(path) - upstreamBefore
				wantUpstream := int64(n) // the direct requests
				if mode == "miss" {
					wantUpstream = int64(2 * n)
				}
				if upstream != wantUpstream {
					b.Fatalf("legacy server saw %d requests in %d iterations, want %d", upstream, n, wantUpstream)
				}
				// Both paths keep their legacy connection alive.
				if conns := hs.ConnectionsAccepted() - connsBefore; conns > 2 {
					b.Fatalf("%d iterations opened %d legacy connections", n, conns)
				}
				reportLatency(b, viaImash, viaDirect)
			})
		}
	}
}

func benchSession(b *testing.B, cl *cluster.Cluster) *clientlib.Session {
	b.Helper()
	ctx := context.Background()
	cert, roots, err := cl.DeviceCert("bench-device")
	if err != nil {
		b.Fatal(err)
	}
	c, err := clientlib.Dial(ctx, cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	if err := c.Login(ctx, "alice", testUsers["alice"]); err != nil {
		b.Fatal(err)
	}
	s, err := c.OpenSession(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// percentile returns the p-th percentile (0 < p <= 1) of sorted samples,
// by the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func reportLatency(b *testing.B, viaImash, viaDirect []time.Duration) {
	slices.Sort(viaImash)
	slices.Sort(viaDirect)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	ip50, ip99 := percentile(viaImash, 0.50), percentile(viaImash, 0.99)
	dp50, dp99 := percentile(viaDirect, 0.50), percentile(viaDirect, 0.99)
	b.ReportMetric(us(ip50), "imash-p50-µs")
	b.ReportMetric(us(ip99), "imash-p99-µs")
	b.ReportMetric(us(dp50), "direct-p50-µs")
	b.ReportMetric(us(dp99), "direct-p99-µs")
	if dp50 > 0 {
		b.ReportMetric(float64(ip50)/float64(dp50), "imash/direct-p50")
	}
}

// rawStreamBytes is what one BenchmarkRawStream iteration moves each way.
const rawStreamBytes = 32 << 20

// BenchmarkRawStream measures the throughput of one raw stream through
// imash (clientlib Session.Dial → MWS → mux → legacy server) and of a plain
// TCP connection to the same legacy server, moving rawStreamBytes per
// iteration each way: down (the server sends, the device reads to EOF) and
// up (the device sends and half-closes, timed until the server has read
// everything). Each iteration opens a fresh stream on each path.
func BenchmarkRawStream(b *testing.B) {
	for _, dir := range []string{"down", "up"} {
		b.Run("dir="+dir, func(b *testing.B) {
			cfg := legacy.StreamConfig{Seed: 1}
			if dir == "down" {
				cfg.SendBytes, cfg.CloseWriteAfterSend = rawStreamBytes, true
			}
			ss, err := legacy.NewStreamServer(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = ss.Close() })
			cl, err := cluster.Start(cluster.Options{Backends: map[string]string{streamBackend: ss.Addr()}, Users: testUsers})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = cl.Close(context.Background()) })
			s := benchSession(b, cl)
			ctx := context.Background()
			payload := make([]byte, 64<<10)
			if _, err := io.ReadFull(legacy.RandomStream(2), payload); err != nil {
				b.Fatal(err)
			}

			conns := 0
			// move runs one transfer over c and returns how long it took.
			move := func(c net.Conn, closeWrite func() error) time.Duration {
				lc, err := ss.WaitConn(ctx, conns)
				if err != nil {
					b.Fatal(err)
				}
				conns++
				start := time.Now()
				if dir == "down" {
					n, err := io.Copy(io.Discard, c)
					if err != nil || n != rawStreamBytes {
						b.Fatalf("read %d bytes: %v", n, err)
					}
				} else {
					for left := rawStreamBytes; left > 0; left -= len(payload) {
						if _, err := c.Write(payload); err != nil {
							b.Fatal(err)
						}
					}
				}
				if err := closeWrite(); err != nil {
					b.Fatal(err)
				}
				<-lc.Done()
				elapsed := time.Since(start)
				if dir == "up" && lc.Received() != rawStreamBytes {
					b.Fatalf("legacy server received %d bytes", lc.Received())
				}
				return elapsed
			}

			var viaImash, viaDirect time.Duration
			n := 0
			for b.Loop() {
				conn, err := s.Dial(ctx, streamBackend)
				if err != nil {
					b.Fatal(err)
				}
				viaImash += move(conn, conn.CloseWrite)
				_ = conn.Close()

				tc, err := net.Dial("tcp", ss.Addr())
				if err != nil {
					b.Fatal(err)
				}
				viaDirect += move(tc, tc.(*net.TCPConn).CloseWrite)
				_ = tc.Close()
				n++
			}
			mbps := func(d time.Duration) float64 { return float64(n) * rawStreamBytes / 1e6 / d.Seconds() }
			b.ReportMetric(mbps(viaImash), "imash-MB/s")
			b.ReportMetric(mbps(viaDirect), "direct-MB/s")
			b.ReportMetric(mbps(viaImash)/mbps(viaDirect), "imash/direct")
		})
	}
}
