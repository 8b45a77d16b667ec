package testbed

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

func mustImages(t *testing.T, seed uint64, n int) []*legacy.Image {
	t.Helper()
	set, err := legacy.GenerateImages(seed, n, MinObjectBytes, MaxObjectBytes)
	if err != nil {
		t.Fatal(err)
	}
	return set.Images()
}

func TestBandOf(t *testing.T) {
	tests := []struct {
		size int
		want string
	}{
		{512, "≤4 KB"}, {4 << 10, "≤4 KB"}, {4<<10 + 1, "4–64 KB"}, {64 << 10, "4–64 KB"},
		{64<<10 + 1, "64–512 KB"}, {512 << 10, "64–512 KB"}, {512<<10 + 1, "512 KB–1.25 MB"},
		{MaxObjectBytes, "512 KB–1.25 MB"}, {MaxObjectBytes + 1, "512 KB–1.25 MB"},
	}
	for _, tt := range tests {
		if got := bandOf(tt.size).Label; got != tt.want {
			t.Errorf("bandOf(%d) = %q, want %q", tt.size, got, tt.want)
		}
	}
}

func TestTabulate(t *testing.T) {
	ms := time.Millisecond
	rec := func(size int, path, cache string, lat time.Duration) record {
		return record{Size: size, Band: bandOf(size).Label, Path: path, Cache: cache, latency: lat}
	}
	recs := []record{
		rec(1000, pathDirect, "", 1*ms), rec(1000, pathImash, "MISS", 4*ms),
		rec(1000, pathDirect, "", 3*ms), rec(1000, pathImash, "HIT", 2*ms),
		rec(1<<20, pathDirect, "", 10*ms), rec(1<<20, pathImash, "MISS", 30*ms),
		rec(1<<20, pathDirect, "", 20*ms), rec(1<<20, pathImash, "UNCACHED", 50*ms),
	}
	rows := tabulate(recs)
	if len(rows) != len(sizeBands)+1 {
		t.Fatalf("%d rows, want %d", len(rows), len(sizeBands)+1)
	}
	want := map[string]bandStats{
		"≤4 KB": {requests: 2, direct: latencySummary{2, 1 * ms, 3 * ms},
			miss: latencySummary{1, 4 * ms, 4 * ms}, hit: latencySummary{1, 2 * ms, 2 * ms}},
		"4–64 KB":   {},
		"64–512 KB": {},
		"512 KB–1.25 MB": {requests: 2, direct: latencySummary{2, 10 * ms, 20 * ms},
			miss: latencySummary{1, 30 * ms, 30 * ms}, other: 1},
		"all": {requests: 4, direct: latencySummary{4, 3 * ms, 20 * ms},
			miss: latencySummary{2, 4 * ms, 30 * ms}, hit: latencySummary{1, 2 * ms, 2 * ms}, other: 1},
	}
	for _, r := range rows {
		w, ok := want[r.label]
		if !ok {
			t.Errorf("unexpected row %q", r.label)
			continue
		}
		w.label = r.label
		if r != w {
			t.Errorf("row %q = %+v, want %+v", r.label, r, w)
		}
	}

	var out bytes.Buffer
	writeTable(&out, rows)
	for _, s := range []string{"≤4 KB", "4–64 KB", "\nall ", "4.00×", "0.67×"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

func TestVerify(t *testing.T) {
	img := &legacy.Image{Name: "img-000.jpg", Bytes: []byte("jpeg bytes")}
	other := []byte("other byte")
	r := request{Seq: 3, Device: "pda", Image: img}
	digest := "sha256:bf1c6e8e8ac1eaf0ff5bb1ac2d0ff3fe3ba6ac37e1b7ac49ee0b50a2cc4a4a6e" // not the body's
	tests := []struct {
		name    string
		direct  []byte
		obj     *clientlib.Object
		wantErr string // empty: no error
	}{
		{name: "identical", direct: img.Bytes, obj: &clientlib.Object{Body: img.Bytes}},
		{name: "imash differs", direct: img.Bytes, obj: &clientlib.Object{Body: other, Cache: mwsv1.CacheOutcome_CACHE_OUTCOME_HIT},
			wantErr: "imash delivered 10 bytes"},
		{name: "legacy differs", direct: other, obj: &clientlib.Object{Body: other}, wantErr: "the legacy server sent 10 bytes"},
		{name: "truncated", direct: img.Bytes, obj: &clientlib.Object{Body: img.Bytes[:4]}, wantErr: "imash delivered 4 bytes"},
		{name: "wrong digest", direct: img.Bytes, obj: &clientlib.Object{Body: img.Bytes, Digest: digest}, wantErr: "MWS names the object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(r, tt.direct, tt.obj)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "request 3 (pda /images/img-000.jpg)") {
				t.Fatalf("verify = %v, want an ErrMismatch naming the request and %q", err, tt.wantErr)
			}
		})
	}
}
