package testbed

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imashproject/imash/testbed/legacy"
)

// TestClusterPhase runs the cluster phase with small numbers on three and
// on two MWSs and checks its results: the MASH part's moves went between
// different MWSs, its stream's checksums matched over one legacy
// connection each, the device followed every move; the FASH target on the
// second MWS got the session, over one legacy connection and without a
// legacy request; the drained MWS is empty and every session answered at
// a peer.
func TestClusterPhase(t *testing.T) {
	for _, tc := range []struct {
		mwss, moves, sessions int
	}{{3, 10, 20}, {2, 5, 8}} {
		t.Run(fmt.Sprintf("%d MWSs", tc.mwss), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cfg := newDefaultDemoConfig()
			cfg.Images, cfg.Seed, cfg.StreamMiB = 4, 3, 0
			cfg.MWSs, cfg.MASHMoves, cfg.DrainSessions = tc.mwss, tc.moves, tc.sessions
			set, err := legacy.GenerateImages(cfg.Seed, cfg.Images, MinObjectBytes, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			env, err := startTestbed(ctx, cfg, set, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := env.close(); err != nil {
					t.Error(err)
				}
			}()
			res, err := runCluster(ctx, env, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var report bytes.Buffer
			res.write(&report)
			t.Logf("\n%s", report.String())

			names := res.MWSs
			if len(names) != tc.mwss || res.Skipped != "" {
				t.Fatalf("MWSs %v (skipped %q), want %d", names, res.Skipped, tc.mwss)
			}
			checkMASH(t, res.MASH, names, tc.moves)
			checkHandoffs(t, res.Handoffs, names)

			d := res.Drain
			if d == nil {
				t.Fatal("no drain result")
			}
			moved := 0
			for name, n := range d.MovedTo {
				if name == d.MWS || !slices.Contains(names, name) {
					t.Errorf("sessions moved to %q", name)
				}
				moved += n
			}
			if d.MWS != names[len(names)-1] || d.Sessions != tc.sessions || d.Left != 0 || moved != tc.sessions || d.Answered != tc.sessions {
				t.Errorf("drain %+v: want %s's %d sessions all moved and answering", d, names[len(names)-1], tc.sessions)
			}
			if d.Follows < tc.sessions || d.DrainUS <= 0 {
				t.Errorf("drain: %d follows of %d sessions, took %d µs", d.Follows, tc.sessions, d.DrainUS)
			}
			drained := env.cluster.MWS[len(names)-1]
			if n := drained.Stats().Sessions; n != 0 || !drained.Draining() {
				t.Errorf("the drained MWS holds %d sessions (draining %v)", n, drained.Draining())
			}
			for _, s := range []string{"cluster:        ", "MWS move total", "app stall", "CASH  tablet@mws-1 → desk-1@mws-1", "FASH  desk-1@mws-1 → desk-2@mws-2",
				"raw stream SHA-256 both ways: OK; legacy connections: stream 1, echo 1", "stream SHA-256 both ways: OK over 1 legacy connection",
				"legacy HTTP requests meanwhile: 0", "desk-2 on mws-2 answers a Get"} {
				if !strings.Contains(report.String(), s) {
					t.Errorf("report lacks %q", s)
				}
			}
		})
	}
}

func checkMASH(t *testing.T, m *mashResult, names []string, moves int) {
	t.Helper()
	if m == nil {
		t.Fatal("no MASH result")
	}
	if len(m.Moves) != moves || m.Gets != moves {
		t.Fatalf("%d moves and %d Gets, want %d", len(m.Moves), m.Gets, moves)
	}
	if !m.ChecksumsOK || m.LegacyStreamConns != 1 || m.LegacyEchoConns != 1 || m.StreamBytes != mashStreamBytes {
		t.Errorf("MASH stream: checksums OK %v, legacy connections %d + %d echo, %d bytes", m.ChecksumsOK, m.LegacyStreamConns, m.LegacyEchoConns, m.StreamBytes)
	}
	if m.Follows < moves || m.EchoRoundTrips < moves {
		t.Errorf("the device followed %d of %d moves and made %d echo round trips", m.Follows, moves, m.EchoRoundTrips)
	}
	at := names[0]
	var prevDown, prevUp int64
	for i, mv := range m.Moves {
		switch {
		case mv.From != at || mv.To == mv.From || !slices.Contains(names, mv.To):
			t.Errorf("move %d from %s to %s, the session was on %s", i, mv.From, mv.To, at)
		case mv.TotalUS <= 0 || mv.StallUS <= 0 || mv.StateBytes <= 0:
			t.Errorf("move %d: %+v", i, mv)
		case mv.DownAt < prevDown || mv.UpAt < prevUp || mv.DownAt >= mashStreamBytes || mv.UpAt >= mashStreamBytes:
			t.Errorf("move %d at offsets %d/%d after %d/%d: want in order, inside the stream", i, mv.DownAt, mv.UpAt, prevDown, prevUp)
		}
		at, prevDown, prevUp = mv.To, mv.DownAt, mv.UpAt
	}
}

func checkHandoffs(t *testing.T, h *handoffsResult, names []string) {
	t.Helper()
	if h == nil {
		t.Fatal("no handoff result")
	}
	if len(h.Handoffs) != 2 {
		t.Fatalf("%d handoffs, want a CASH and a FASH", len(h.Handoffs))
	}
	cash, fash := h.Handoffs[0], h.Handoffs[1]
	if cash.Kind != "CASH" || cash.FromMWS != names[0] || cash.ToMWS != names[0] || cash.MoveUS != 0 || cash.ObservedUS <= 0 {
		t.Errorf("CASH %+v: want within %s, without a move", cash, names[0])
	}
	if fash.Kind != "FASH" || fash.FromMWS != names[0] || fash.ToMWS != names[1] || fash.MoveUS <= 0 || fash.TotalUS < fash.MoveUS {
		t.Errorf("FASH %+v: want from %s to %s, with a move within the total", fash, names[0], names[1])
	}
	if cash.StreamOffset == 0 || fash.StreamOffset <= cash.StreamOffset || fash.StreamOffset >= handoffStreamBytes {
		t.Errorf("the stream resumed at %d, then %d: want inside it, in order", cash.StreamOffset, fash.StreamOffset)
	}
	if h.FinalDevice != handoffFar || h.FinalMWS != names[1] || !h.TargetAnswered {
		t.Errorf("the session ended with %s on %s (answers %v), want %s on %s", h.FinalDevice, h.FinalMWS, h.TargetAnswered, handoffFar, names[1])
	}
	if !h.ChecksumsOK || h.LegacyStreamConns != 1 || h.LegacyRequests != 0 {
		t.Errorf("handoff stream: checksums OK %v over %d legacy connections; %d legacy HTTP requests", h.ChecksumsOK, h.LegacyStreamConns, h.LegacyRequests)
	}
	if h.SourceBytes >= h.ImageBytes {
		t.Errorf("the PDA held %d bytes of the %d-byte image, want its smaller variant", h.SourceBytes, h.ImageBytes)
	}
}

func TestStallAround(t *testing.T) {
	base := time.Unix(1000, 0)
	ms := func(n int) time.Time { return base.Add(time.Duration(n) * time.Millisecond) }
	laps := []lap{{ms(0), ms(1)}, {ms(1), ms(2)}, {ms(2), ms(3)}, {ms(3), ms(20)}, {ms(20), ms(21)}, {ms(21), ms(22)}}
	// The move was asked for at 2.5 ms and returned at 19 ms: the first
	// lap after it is index 4; the gaps from the lap that ended at 2 ms
	// are 1, 17 and 1 ms.
	if got := stallAround(laps, ms(2).Add(500*time.Microsecond), 4); got != 17*time.Millisecond {
		t.Errorf("stallAround = %v, want 17ms", got)
	}
	// No lap ended by t0: from the first kept one.
	if got := stallAround(laps[3:], ms(2), 1); got != time.Millisecond {
		t.Errorf("stallAround without a lap before = %v, want 1ms", got)
	}
}

func TestRandomPoints(t *testing.T) {
	pts := randomPoints(rand.New(rand.NewPCG(1, 2)), 100, 1000)
	if len(pts) != 100 || !slices.IsSorted(pts) || pts[0] < 1 || pts[99] >= 1000 {
		t.Fatalf("points %v: want 100 sorted in [1, 1000)", pts)
	}
}
