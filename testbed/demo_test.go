package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the whole demo — image generation, legacy servers, the
// cluster of three MWSs, two devices, the workload, the raw streams, the
// handoffs, the links phase with its links off (TestDemoLinks has them on)
// and the cluster phase with few moves and sessions — on a small
// configuration, and checks the report and the JSON records.
func TestDemo(t *testing.T) {
	jsonFile := filepath.Join(t.TempDir(), "records.json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"demo", "--images", "8", "--seed", "5", "--stream-mib", "1", "--handoffs", "6", "--paced", "--mean-delay", "1ms", "--links=off", "--mash-moves", "4", "--drain-sessions", "8", "--json", jsonFile}
	if err := Run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("Run(%q) = %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Logf("output:\n%s", out)

	for _, b := range sizeBands {
		if !strings.Contains(out, "\n"+b.Label+" ") {
			t.Errorf("no table row for band %q", b.Label)
		}
	}
	for _, s := range []string{
		"size band", "direct (ms)", "imash MISS (ms)", "imash HIT (ms)", "\nall ",
		"objects:        8 distinct images",
		"imash bodies byte-identical",
		"MWS cache:", "legacy HTTP:", "(keep-alive)",
		"raw stream:     1.0 MiB each way per path; SHA-256 checked at both ends of all 4 transfers: OK",
		"handoffs:       6 CASH between workstation and pda",
		"legacy requests meanwhile: 0",
		"phases p50    skeleton",
		"links:          off — the four testbed devices, each on loopback",
		"1 mux, 3 MWSs, devices workstation then pda at the first",
		"cluster:        3 MWSs (mws-1, mws-2, mws-3)",
		"MASH          4 operator moves of one session among the 3 MWSs",
		"raw stream SHA-256 both ways: OK; legacy connections: stream 1, echo 1",
		"FASH  desk-1@mws-1 → desk-2@mws-2",
		"drain         mws-3 held 8 sessions",
		"afterwards 8 of 8 sessions answered a Get at a peer",
		"wall time:",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}

	doc := readReport(t, jsonFile)
	if !doc.Complete || doc.Seed != 5 || doc.Images != 8 {
		t.Errorf("report header: complete %v, seed %d, images %d", doc.Complete, doc.Seed, doc.Images)
	}
	plan := planWorkload(mustImages(t, 5, 8), workloadOptions{Devices: demoDevices, Seed: 5})
	if len(doc.Requests) != 2*len(plan) {
		t.Fatalf("%d request records, want 2 per planned request (%d)", len(doc.Requests), 2*len(plan))
	}
	paths := map[int][]string{}
	for i, r := range doc.Requests {
		p := plan[r.Seq]
		switch {
		case r.Device != p.Device || r.Object != p.Image.Name || r.Size != len(p.Image.Bytes):
			t.Errorf("record %d: %s %s %d bytes, plan says %s %s %d", i, r.Device, r.Object, r.Size, p.Device, p.Image.Name, len(p.Image.Bytes))
		case r.Band != bandOf(r.Size).Label:
			t.Errorf("record %d: band %q for %d bytes", i, r.Band, r.Size)
		case r.LatencyUS <= 0 || r.StartUS < 0:
			t.Errorf("record %d: latency %d µs, start %d µs", i, r.LatencyUS, r.StartUS)
		case r.ExpectHit != p.ExpectHit:
			t.Errorf("record %d: expect_hit %v, plan says %v", i, r.ExpectHit, p.ExpectHit)
		case r.Path == pathDirect && r.Cache != "":
			t.Errorf("record %d: direct fetch with cache outcome %q", i, r.Cache)
		case r.Path == pathImash && r.ExpectHit && r.Cache != "HIT":
			t.Errorf("record %d: %s re-requested %s through imash, cache %q, want HIT", i, r.Device, r.Object, r.Cache)
		case r.Path == pathImash && !r.ExpectHit && r.Cache != "MISS":
			t.Errorf("record %d: first request of %s through imash, cache %q, want MISS", i, r.Object, r.Cache)
		case r.Path != pathDirect && r.Path != pathImash:
			t.Errorf("record %d: path %q", i, r.Path)
		}
		paths[r.Seq] = append(paths[r.Seq], r.Path)
	}
	for seq, ps := range paths {
		slices.Sort(ps)
		if !slices.Equal(ps, []string{pathDirect, pathImash}) {
			t.Errorf("request %d has fetches %v, want one direct and one imash", seq, ps)
		}
	}

	if len(doc.Streams) != 4 {
		t.Fatalf("%d stream records, want 4", len(doc.Streams))
	}
	for i, s := range doc.Streams {
		if s.Bytes != 1<<20 || s.Seconds <= 0 || s.MiBps <= 0 || len(s.SHA256) != 64 {
			t.Errorf("stream record %d: %+v", i, s)
		}
	}

	// The links phase on loopback: no link counters, and still variants
	// for the devices' declared profiles.
	if len(doc.Links) != 4 {
		t.Fatalf("%d link records, want 4", len(doc.Links))
	}
	sizes := map[string]int{}
	for _, r := range doc.Links {
		if r.Link != "loopback" || r.LinkConns != 0 || r.LinkRateBPS != 0 {
			t.Errorf("%s: link %q, %d connections, %d bit/s; want loopback and no link counters", r.Device, r.Link, r.LinkConns, r.LinkRateBPS)
		}
		sizes[r.Device] = r.Bytes
	}
	if sizes["pda"] >= sizes["workstation"] || sizes["laptop"] >= sizes["workstation"] {
		t.Errorf("variant sizes %v: want the pda's and the laptop's smaller than the workstation's", sizes)
	}

	// The cluster phase, as TestClusterPhase checks it in detail.
	c := doc.Cluster
	if c == nil || c.Skipped != "" || len(c.MWSs) != 3 || c.MASH == nil || c.Handoffs == nil || c.Drain == nil {
		t.Fatalf("cluster record %+v: want all three parts on 3 MWSs", c)
	}
	if m := c.MASH; len(m.Moves) != 4 || !m.ChecksumsOK || m.LegacyStreamConns != 1 || m.Follows < 4 {
		t.Errorf("MASH: %d moves, checksums OK %v, %d legacy connections, %d follows", len(m.Moves), m.ChecksumsOK, m.LegacyStreamConns, m.Follows)
	}
	if h := c.Handoffs; len(h.Handoffs) != 2 || h.FinalMWS != "mws-2" || !h.TargetAnswered || !h.ChecksumsOK {
		t.Errorf("handoffs: %+v", h)
	}
	if d := c.Drain; d.MWS != "mws-3" || d.Sessions != 8 || d.Answered != 8 || d.Left != 0 {
		t.Errorf("drain: %+v", d)
	}
}

// TestDemoCancelled checks that a cancelled context stops the demo with
// the context's error.
func TestDemoCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	err := Run(ctx, []string{"demo", "--images", "8", "--seed", "5"}, &stdout, &stderr)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context = %v, want context.Canceled", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("a cancelled run printed a report:\n%s", stdout.String())
	}
}

func readReport(t *testing.T, name string) jsonReport {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var doc jsonReport
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decoding %s: %v", name, err)
	}
	return doc
}
