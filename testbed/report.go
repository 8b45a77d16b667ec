package testbed

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/imashproject/imash/mws/objcache"
)

// sizeBand is a range of object sizes the report groups requests by:
// sizes above the previous band's Max up to Max (bytes, inclusive).
type sizeBand struct {
	Label string
	Max   int
}

// sizeBands cover the workload's 0.5 KB – 1.25 MB (KB = 1024 bytes).
var sizeBands = []sizeBand{
	{"≤4 KB", 4 << 10},
	{"4–64 KB", 64 << 10},
	{"64–512 KB", 512 << 10},
	{"512 KB–1.25 MB", MaxObjectBytes},
}

// bandOf returns the band of an object of size bytes; sizes beyond the
// last band count in the last band.
func bandOf(size int) sizeBand {
	for _, b := range sizeBands {
		if size <= b.Max {
			return b
		}
	}
	return sizeBands[len(sizeBands)-1]
}

// counters are the servers' own counts, read before and after a phase.
type counters struct {
	// legacyRequests and legacyConns are what the legacy HTTP server
	// received and accepted.
	legacyRequests, legacyConns int64
	// cache is the MWS's object cache statistics; sessions its session
	// count.
	cache    objcache.Stats
	sessions int
}

// snapshot reads the counters now.
func (e *testbedEnv) snapshot() counters {
	st := e.cluster.MWS[0].Stats()
	return counters{
		legacyRequests: e.images.Requests(),
		legacyConns:    e.images.ConnectionsAccepted(),
		cache:          st.Cache,
		sessions:       st.Sessions,
	}
}

// since returns the counts between an earlier snapshot and c; gauges
// (stored bytes, entries, sessions) keep c's values.
func (c counters) since(earlier counters) counters {
	d := c
	d.legacyRequests -= earlier.legacyRequests
	d.legacyConns -= earlier.legacyConns
	d.cache.Hits -= earlier.cache.Hits
	d.cache.Revalidations -= earlier.cache.Revalidations
	d.cache.Misses -= earlier.cache.Misses
	d.cache.Collapsed -= earlier.cache.Collapsed
	d.cache.Upstream -= earlier.cache.Upstream
	d.cache.Uncacheable -= earlier.cache.Uncacheable
	d.cache.Errors -= earlier.cache.Errors
	return d
}

// bandStats is one row of the latency table.
type bandStats struct {
	label             string
	requests          int
	direct, miss, hit latencySummary
	other             int // imash answers neither MISS nor HIT
}

// tabulate groups the records by size band, plus a row for all sizes.
func tabulate(recs []record) []bandStats {
	type samples struct{ direct, miss, hit []time.Duration }
	rows := make([]bandStats, len(sizeBands)+1)
	lat := make([]samples, len(rows))
	for i, b := range sizeBands {
		rows[i].label = b.Label
	}
	rows[len(sizeBands)].label = "all"
	for _, r := range recs {
		i := 0
		for sizeBands[i].Label != r.Band {
			i++
		}
		for _, j := range []int{i, len(sizeBands)} {
			switch {
			case r.Path == pathDirect:
				rows[j].requests++
				lat[j].direct = append(lat[j].direct, r.latency)
			case r.Cache == "MISS":
				lat[j].miss = append(lat[j].miss, r.latency)
			case r.Cache == "HIT":
				lat[j].hit = append(lat[j].hit, r.latency)
			default:
				rows[j].other++
			}
		}
	}
	for i := range rows {
		rows[i].direct, rows[i].miss, rows[i].hit = summarize(lat[i].direct), summarize(lat[i].miss), summarize(lat[i].hit)
	}
	return rows
}

// writeReport prints the latency table and the summary.
func (res *demoResult) writeReport(w io.Writer) {
	cfg := res.cfg
	fmt.Fprintf(w, "imash-testbed demo: %d images (seed %d), 1 mux, %d MWS%s, devices %s then %s at the first; %d requests, each through imash and directly\n\n",
		cfg.Images, cfg.Seed, cfg.MWSs, plural(int64(cfg.MWSs)), demoDevices[0], demoDevices[1], len(res.plan))
	fmt.Fprintf(w, "machine: %s\n\n", machine())
	writeTable(w, tabulate(res.records))
	fmt.Fprintln(w)
	res.writeSummary(w)
}

// writeTable prints the rows with latencies in milliseconds; ×direct is
// the imash p50 over the direct p50 of the same band.
func writeTable(w io.Writer, rows []bandStats) {
	const row = "%-15s %8s   %8s %8s   %4s %8s %8s %8s   %4s %8s %8s %8s"
	line := func(format string, args ...any) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf(format, args...), " "))
	}
	// The group titles sit over their columns: 17 runes of direct
	// latencies, then 31 each of MISS and HIT columns.
	line("%-15s %8s   %17s   %31s   %31s", "", "", "direct (ms)", "imash MISS (ms)", "imash HIT (ms)")
	line(row, "size band", "requests", "p50", "p99", "n", "p50", "p99", "×direct", "n", "p50", "p99", "×direct")
	for _, r := range rows {
		if r.label == "all" {
			line("%s", strings.Repeat("-", 115))
		}
		line(row, r.label, fmt.Sprint(r.requests),
			ms(r.direct, r.direct.P50), ms(r.direct, r.direct.P99),
			fmt.Sprint(r.miss.N), ms(r.miss, r.miss.P50), ms(r.miss, r.miss.P99), ratio(r.miss, r.direct),
			fmt.Sprint(r.hit.N), ms(r.hit, r.hit.P50), ms(r.hit, r.hit.P99), ratio(r.hit, r.direct))
	}
}

// ms formats d in milliseconds, or "-" if s has no samples.
func ms(s latencySummary, d time.Duration) string {
	if s.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

// ratio formats the p50 of s over the p50 of base.
func ratio(s, base latencySummary) string {
	if s.N == 0 || base.N == 0 || base.P50 <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", float64(s.P50)/float64(base.P50))
}

// writeSummary prints the totals, the servers' counters, the raw-stream
// throughput and the wall time.
func (res *demoResult) writeSummary(w io.Writer) {
	var (
		bytes, expectHits, hits, misses, other, verified int
		perDevice                                        = map[string]int{}
	)
	for _, r := range res.plan {
		perDevice[r.Device]++
		bytes += len(r.Image.Bytes)
		if r.ExpectHit {
			expectHits++
		}
	}
	for _, r := range res.records {
		if r.Path != pathImash {
			continue
		}
		verified++
		switch r.Cache {
		case "HIT":
			hits++
		case "MISS":
			misses++
		default:
			other++
		}
	}
	c, f := res.workload, res.final
	fmt.Fprintf(w, "objects:        %d distinct images, %s; %d requests (%s %d, %s %d) moved %s per path\n",
		res.set.Len(), mib(res.set.TotalBytes()), len(res.plan),
		demoDevices[0], perDevice[demoDevices[0]], demoDevices[1], perDevice[demoDevices[1]], mib(int64(bytes)))
	fmt.Fprintf(w, "verified:       %d/%d imash bodies byte-identical to the direct body and to the image\n", verified, len(res.plan))
	fmt.Fprintf(w, "imash answers:  %d MISS, %d HIT (workload expects %d hits)", misses, hits, expectHits)
	if other > 0 {
		fmt.Fprintf(w, ", %d other (REVALIDATED or UNCACHED)", other)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "MWS cache:      %d hits, %d misses, %d revalidations, %d upstream requests during the workload; holds %s in %d entries; %d sessions\n",
		c.cache.Hits, c.cache.Misses, c.cache.Revalidations, c.cache.Upstream, mib(f.cache.StoredBytes), f.cache.Entries, f.sessions)
	fmt.Fprintf(w, "legacy HTTP:    %d requests during the workload (%d direct + %d from the MWS), %d new TCP connections; since start %d requests on %d connections (keep-alive)\n",
		c.legacyRequests, len(res.plan), c.legacyRequests-int64(len(res.plan)), c.legacyConns, f.legacyRequests, f.legacyConns)
	if len(res.streams) > 0 {
		fmt.Fprintf(w, "raw stream:     %s each way per path; SHA-256 checked at both ends of all %d transfers: OK\n", mib(res.streams[0].Bytes), len(res.streams))
		for _, dir := range []string{dirUp, dirDown} {
			var direct, imash streamResult
			for _, s := range res.streams {
				if s.Direction == dir && s.Path == pathDirect {
					direct = s
				} else if s.Direction == dir {
					imash = s
				}
			}
			fmt.Fprintf(w, "  %-4s          imash %8.1f MiB/s, direct %8.1f MiB/s (imash/direct %.2f)\n", dir, imash.MiBps, direct.MiBps, imash.MiBps/direct.MiBps)
		}
	}
	if res.handoffs != nil {
		res.handoffs.write(w)
	}
	if len(res.links) > 0 {
		writeLinks(w, res.cfg.Links, res.linkObject, res.links)
	}
	if res.cluster != nil {
		res.cluster.write(w)
	}
	p := res.phases
	fmt.Fprintf(w, "wall time:      %.2f s (images %.2f s, testbed start %.2f s, workload %.2f s, raw streams %.2f s, handoffs %.2f s, links %.2f s, cluster %.2f s)\n",
		p.total.Seconds(), p.generate.Seconds(), p.start.Seconds(), p.workload.Seconds(), p.streams.Seconds(), p.handoffs.Seconds(), p.links.Seconds(), p.cluster.Seconds())
}

// mib formats a byte count in MiB.
func mib(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// machine describes where the numbers were measured: OS, architecture,
// CPUs (and the CPU model where /proc/cpuinfo tells it) and Go version.
func machine() string {
	desc := fmt.Sprintf("%s/%s, %d CPUs (GOMAXPROCS %d), %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return desc
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return desc + ", " + strings.TrimSpace(v)
		}
	}
	return desc
}
