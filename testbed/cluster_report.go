package testbed

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// write reports the cluster phase.
func (c *clusterResult) write(w io.Writer) {
	if c.Skipped != "" {
		fmt.Fprintf(w, "cluster:        skipped (%s)\n", c.Skipped)
		return
	}
	fmt.Fprintf(w, "cluster:        %d MWSs (%s) behind one mux, static membership; devices and legacy stream and echo servers of its own\n",
		len(c.MWSs), strings.Join(c.MWSs, ", "))
	if c.MASH != nil {
		c.MASH.write(w, len(c.MWSs))
	} else {
		fmt.Fprintln(w, "  MASH          skipped (--mash-moves 0)")
	}
	if c.Handoffs != nil {
		c.Handoffs.write(w)
	}
	if c.Drain != nil {
		c.Drain.write(w)
	} else {
		fmt.Fprintln(w, "  drain         skipped (--drain-sessions 0)")
	}
}

// usDurations converts microsecond counts to durations.
func usDurations(v []int64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Microsecond
	}
	return out
}

// msPct formats the p-th percentile of d in milliseconds.
func msPct(d []time.Duration, p float64) string {
	v, ok := percentile(d, p)
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(v)/float64(time.Millisecond))
}

// usMS formats microseconds as milliseconds.
func usMS(v int64) string {
	return fmt.Sprintf("%.2f", float64(v)/1e3)
}

func (m *mashResult) write(w io.Writer, mwss int) {
	n := len(m.Moves)
	col := func(f func(mashMove) int64) []time.Duration {
		v := make([]int64, n)
		for i, mv := range m.Moves {
			v[i] = f(mv)
		}
		return usDurations(v)
	}
	state := make([]time.Duration, n) // bytes, as durations for percentile
	for i, mv := range m.Moves {
		state[i] = time.Duration(mv.StateBytes)
	}
	stateP50, _ := percentile(state, 50)
	fmt.Fprintf(w, "  MASH          %d operator moves of one session among the %d MWSs, at random points of a raw stream moving %s each way; a Get after each move\n",
		n, mwss, mib(m.StreamBytes))
	const row = "    %-38s %9s %9s"
	line := func(format string, args ...any) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf(format, args...), " "))
	}
	line(row, "", "p50 (ms)", "p99 (ms)")
	for _, r := range []struct {
		label string
		d     []time.Duration
	}{
		{"MWS move total (MoveSession)", col(func(mv mashMove) int64 { return mv.TotalUS })},
		{"  target prepares", col(func(mv mashMove) int64 { return mv.PrepareUS })},
		{"  objects sent ahead", col(func(mv mashMove) int64 { return mv.PrecopyUS })},
		{"  mux hands the streams over", col(func(mv mashMove) int64 { return mv.HandoverUS })},
		{"  state shipped (alongside)", col(func(mv mashMove) int64 { return mv.ShipUS })},
		{fmt.Sprintf("app stall (%d-byte echo round trips)", echoBytes), col(func(mv mashMove) int64 { return mv.StallUS })},
	} {
		line(row, r.label, msPct(r.d, 50), msPct(r.d, 99))
	}
	fmt.Fprintf(w, "    state per move p50 %s; the device followed %d moves (%d over TLS-resumed connections); %d Gets and %d echo round trips checked\n",
		kib(int64(stateP50)), m.Follows, m.TLSResumed, m.Gets, m.EchoRoundTrips)
	ok := "OK"
	if !m.ChecksumsOK {
		ok = "FAILED"
	}
	fmt.Fprintf(w, "    raw stream SHA-256 both ways: %s; legacy connections: stream %d, echo %d; %.2f s in all\n",
		ok, m.LegacyStreamConns, m.LegacyEchoConns, m.Seconds)
}

func (h *handoffsResult) write(w io.Writer) {
	fmt.Fprintf(w, "  handoffs      one session: %s (%s; the PDA held a %s variant) by reference, %d B of notes, a raw stream moving %s each way, a third on each device\n",
		h.Image, kib(int64(h.ImageBytes)), kib(int64(h.SourceBytes)), h.NotesBytes, mib(h.StreamBytes))
	const row = "    %-4s  %-30s %8s %8s %8s %8s %8s %8s %8s %8s"
	line := func(format string, args ...any) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf(format, args...), " "))
	}
	line(row, "(ms)", "from → to", "skeleton", "upload", "move", "adapt", "deliver", "resume", "total", "observed")
	for _, r := range h.Handoffs {
		move := "-"
		if r.MoveUS > 0 {
			move = usMS(r.MoveUS)
		}
		line(row, r.Kind, fmt.Sprintf("%s@%s → %s@%s", r.From, r.FromMWS, r.To, r.ToMWS),
			usMS(r.SkeletonUS), usMS(r.StateUploadUS), move, usMS(r.AdaptationUS), usMS(r.DeliveryUS), usMS(r.ResumeUS), usMS(r.TotalUS), usMS(r.ObservedUS))
	}
	ok := "OK"
	if !h.ChecksumsOK {
		ok = "FAILED"
	}
	answered := "answers"
	if !h.TargetAnswered {
		answered = "does not answer"
	}
	fmt.Fprintf(w, "    each target got the original image from the MWS's copy, the notes and the stream at the next byte; stream SHA-256 both ways: %s over %d legacy connection%s; legacy HTTP requests meanwhile: %d; %s on %s %s a Get\n",
		ok, h.LegacyStreamConns, plural(h.LegacyStreamConns), h.LegacyRequests, h.FinalDevice, h.FinalMWS, answered)
}

func (d *drainResult) write(w io.Writer) {
	took := time.Duration(d.DrainUS) * time.Microsecond
	var peers []string
	for _, name := range slices.Sorted(maps.Keys(d.MovedTo)) {
		peers = append(peers, fmt.Sprintf("%s +%d", name, d.MovedTo[name]))
	}
	rate := 0.0
	if took > 0 {
		rate = float64(d.Sessions) / took.Seconds()
	}
	fmt.Fprintf(w, "  drain         %s held %d sessions: drained in %s ms (%.0f sessions/s, %d retries); %s; %d left\n",
		d.MWS, d.Sessions, usMS(d.DrainUS), rate, d.Retries, strings.Join(peers, ", "), d.Left)
	fmt.Fprintf(w, "    afterwards %d of %d sessions answered a Get at a peer (%s ms, %d at a time); the devices followed %d moves (%d over TLS-resumed connections)\n",
		d.Answered, d.Sessions, usMS(d.AnswerUS), drainCheckers, d.Follows, d.TLSResumed)
}
