package mws

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/profiles"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// fakeClock is a settable clock for the meter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testMeter returns a meter whose probes land in the returned map, by
// device, newest last.
func testMeter() (*netMeter, *fakeClock, func(device string) []uint64) {
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	var mu sync.Mutex
	sent := map[string][]uint64{}
	m := newNetMeter(time.Second, func(device string, ev *mwsv1.Event) bool {
		mu.Lock()
		defer mu.Unlock()
		sent[device] = append(sent[device], ev.GetProbe().GetSeq())
		return true
	}, slog.New(slog.DiscardHandler))
	m.now = clock.now
	return m, clock, func(device string) []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]uint64(nil), sent[device]...)
	}
}

func TestProbeReplies(t *testing.T) {
	m, clock, sent := testMeter()
	svc := &deviceService{s: &Server{netmeter: m}}
	ctxOf := func(device string) context.Context {
		return context.WithValue(context.Background(), principalKey{}, principal{user: "alice", device: device})
	}
	reply := func(device string, seq uint64) error {
		_, err := svc.ProbeReply(ctxOf(device), &mwsv1.ProbeReplyRequest{Seq: seq})
		return err
	}

	for range maxOutstandingProbes + 2 {
		m.sendProbe("pda")
		clock.add(10 * time.Millisecond)
	}
	seqs := sent("pda")
	if len(seqs) != maxOutstandingProbes+2 {
		t.Fatalf("%d probes published, want %d", len(seqs), maxOutstandingProbes+2)
	}
	for _, tc := range []struct {
		name   string
		device string
		seq    uint64
		ok     bool
	}{
		{"forgotten: beyond the outstanding bound", "pda", seqs[0], false},
		{"another device's probe", "laptop", seqs[3], false},
		{"made up", "pda", 12345, false},
		{"answered", "pda", seqs[3], true},
		{"answered twice", "pda", seqs[3], false},
		{"older than an answered one", "pda", seqs[2], false},
		{"newer", "pda", seqs[5], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := reply(tc.device, tc.seq)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if rpcerr.Code(err) != codes.InvalidArgument || rpcerr.Reason(err) != "UNKNOWN_PROBE" {
				t.Fatalf("got %v, want InvalidArgument UNKNOWN_PROBE", err)
			}
		})
	}
	s, ok := m.sample("pda")
	// Probes 3 and 5 were sent 30 and 10 ms before the answers.
	if !ok || s.Probes != 2 || s.RTT != 10*time.Millisecond || s.SRTT != 27500*time.Microsecond || s.Latency != 8*time.Millisecond {
		t.Fatalf("sample %+v, %t: want 2 probes, RTT 10ms (the minimum) in the 8ms bucket, SRTT 27.5ms", s, ok)
	}

	// Too late to count.
	m.sendProbe("pda")
	clock.add(probeTTL + time.Second)
	if err := reply("pda", sent("pda")[len(sent("pda"))-1]); rpcerr.Reason(err) != "UNKNOWN_PROBE" {
		t.Fatalf("stale reply: %v", err)
	}
	// And a measurement too old is forgotten.
	clock.add(netSampleTTL)
	if s, ok := m.sample("pda"); ok {
		t.Fatalf("stale sample %+v still current", s)
	}
}

func TestRTTIsWindowedMinimum(t *testing.T) {
	m, clock, sent := testMeter()
	for i, rtt := range []time.Duration{80, 50, 300, 400, 60, 70, 90, 100, 110, 120} {
		m.sendProbe("laptop")
		clock.add(rtt * time.Millisecond)
		if !m.reply("laptop", sent("laptop")[i]) {
			t.Fatalf("probe %d not matched", i)
		}
	}
	s, _ := m.sample("laptop")
	// The last rttWindow samples are 300..120: the 50 ms sample has left
	// the window, 60 ms has not.
	if s.RTT != 60*time.Millisecond || s.Latency != 45254834*time.Nanosecond {
		t.Fatalf("RTT %v (bucket %v), want 60ms in the bucket from 45.25ms", s.RTT, s.Latency)
	}
}

func TestBucketHysteresis(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []float64 // successive updates (unit 1000)
		want   float64   // the bucket's lower edge after them
	}{
		{"exact edge", []float64{1_024_000}, 1_024_000},
		{"floor to the lower edge", []float64{1_400_000}, 1_024_000},
		{"small wobble keeps the bucket", []float64{1_050_000, 990_000, 1_040_000, 960_000}, 1_024_000},
		{"a real drop moves it", []float64{1_050_000, 900_000}, 724_077},
		{"a real rise moves it", []float64{1_050_000, 1_600_000}, 1_448_155},
		{"below the unit", []float64{10}, 1000},
		{"zero ignored", []float64{1_050_000, 0}, 1_024_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bucket
			for _, v := range tc.values {
				b.update(v, 1000)
			}
			if b.value != tc.want {
				t.Fatalf("bucket %v after %v, want %v", b.value, tc.values, tc.want)
			}
		})
	}
}

func TestGoodputRun(t *testing.T) {
	t0 := time.Unix(0, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	for _, tc := range []struct {
		name     string
		readings []struct {
			at         int // ms
			acked      uint64
			backlogged bool
		}
		want float64 // bytes/s; 0: no sample
	}{
		{
			// The buffers take 128 KB at once; then 100 KB/s.
			name: "initial burst excluded",
			readings: []struct {
				at         int
				acked      uint64
				backlogged bool
			}{{0, 0, true}, {10, 128_000, true}, {20, 128_000, true}, {510, 178_000, true}, {1010, 228_000, true}, {2010, 328_000, true}},
			want: 100_000,
		},
		{
			name: "too few bytes",
			readings: []struct {
				at         int
				acked      uint64
				backlogged bool
			}{{0, 0, true}, {10, 1000, true}, {510, 30_000, true}},
		},
		{
			name: "too short",
			readings: []struct {
				at         int
				acked      uint64
				backlogged bool
			}{{0, 0, true}, {10, 1000, true}, {40, 1_000_000, true}},
		},
		{
			// An idle sender's trickle is not the path's rate: only
			// the backlogged stretch counts.
			name: "idle stretch cut off",
			readings: []struct {
				at         int
				acked      uint64
				backlogged bool
			}{{0, 0, true}, {10, 10_000, true}, {1010, 210_000, true}, {2010, 211_000, false}, {5010, 212_000, false}},
			want: 200_000,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g goodputRun
			var got float64
			for _, r := range tc.readings {
				if rate, ok := g.observe(r.acked, r.backlogged, ms(r.at)); ok {
					got = rate
				}
			}
			if rate, ok := g.rate(); ok && got == 0 {
				got = rate
			}
			if fmt.Sprintf("%.0f", got) != fmt.Sprintf("%.0f", tc.want) {
				t.Fatalf("rate %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNetDevicesBounded(t *testing.T) {
	m, _, _ := testMeter()
	for i := range maxNetDevices + 10 {
		m.addGoodput(fmt.Sprintf("d%d", i), 1000)
	}
	m.mu.Lock()
	n, l := len(m.devices), m.lru.Len()
	m.mu.Unlock()
	if n != maxNetDevices || l != maxNetDevices {
		t.Fatalf("%d devices (%d in the LRU list), want %d", n, l, maxNetDevices)
	}
	if _, ok := m.sample("d0"); ok {
		t.Fatal("the least recently measured device was kept")
	}
	if _, ok := m.sample(fmt.Sprintf("d%d", maxNetDevices+9)); !ok {
		t.Fatal("the newest device was forgotten")
	}
}

// TestLiveConstraints checks that a measured bandwidth replaces the
// declared network profile in the merge (keeping its save-data wish), that
// small fluctuations keep the constraints' digest, and that a stale
// measurement gives the declared profile back.
func TestLiveConstraints(t *testing.T) {
	m, clock, _ := testMeter()
	s := &Server{netmeter: m, log: slog.New(slog.DiscardHandler)}
	dev, netp, err := profiles.TestbedDevice("pda")
	if err != nil {
		t.Fatal(err)
	}
	netp.Network.SaveData = true
	var docs [][]byte
	for _, p := range []*profiles.Profile{dev, netp} {
		b, err := profiles.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	declared, err := mergeLoginProfiles(docs, 8)
	if err != nil {
		t.Fatal(err)
	}
	s.docs.set("pda", docs)
	if got := s.liveConstraints("pda", declared); got.Digest() != declared.Digest() {
		t.Fatalf("without a measurement: %+v, want the declared %+v", got, declared)
	}

	m.addGoodput("pda", 1_050_000.0/8) // 1.05 Mbit/s: the 1.024 Mbit/s bucket
	live := s.liveConstraints("pda", declared)
	// 1.024 Mbit/s × 2 s of patience, quartered for save-data.
	if want := int64(1_024_000 / 8 * 2 / profiles.SaveDataDivisor); live.ByteBudget != want {
		t.Fatalf("live byte budget %d, want %d (declared %d)", live.ByteBudget, want, declared.ByteBudget)
	}
	if live.MaxWidth != declared.MaxWidth || live.ColorDepth != declared.ColorDepth {
		t.Fatalf("live %+v lost the device's constraints %+v", live, declared)
	}
	m.addGoodput("pda", 980_000.0/8)
	if again := s.liveConstraints("pda", declared); again.Digest() != live.Digest() {
		t.Fatalf("a 7%% wobble changed the constraints: %+v then %+v", live, again)
	}
	clock.add(netSampleTTL + time.Second)
	if got := s.liveConstraints("pda", declared); got.Digest() != declared.Digest() {
		t.Fatalf("stale measurement still used: %+v", got)
	}
}
