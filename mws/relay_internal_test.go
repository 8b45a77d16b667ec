package mws

import (
	"slices"
	"testing"

	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

// TestDownCursorHoldsAckUntilMuxDelivered: a device that resumes after a
// move acknowledges bytes it received through another MWS; the mux sends
// them again from its last commit and refuses a commit beyond what it has
// delivered, so the relay holds such an acknowledgement until the mux's
// data passes it.
func TestDownCursorHoldsAckUntilMuxDelivered(t *testing.T) {
	var commits []uint64
	commit := func(off uint64) error { commits = append(commits, off); return nil }
	data := func(off, n uint64) *muxv1.AttachResponse {
		return &muxv1.AttachResponse{Msg: &muxv1.AttachResponse_Data{Data: &muxv1.Data{Offset: off, Data: make([]byte, n)}}}
	}
	c := &downCursor{}
	c.mux.Store(100)       // the mux's commit point when the relay attached
	c.delivered.Store(300) // the device resumed at 300

	if err := c.ack(commit, 80); err != nil || !slices.Equal(commits, []uint64{80}) {
		t.Fatalf("ack within the mux's point: commits %v, %v", commits, err)
	}
	if err := c.ack(commit, 250); err != nil || len(commits) != 1 {
		t.Fatalf("ack beyond the mux's point was sent: %v", commits)
	}
	out, _ := relayDown(data(100, 100), c) // mux at 200: still short of 250
	if out != nil {
		t.Fatal("bytes the device holds were sent again")
	}
	if err := c.flush(commit); err != nil || len(commits) != 1 {
		t.Fatalf("committed before the mux delivered: %v", commits)
	}
	relayDown(data(200, 100), c) // mux at 300
	if err := c.flush(commit); err != nil || !slices.Equal(commits, []uint64{80, 250}) {
		t.Fatalf("held ack not committed once delivered: %v", commits)
	}
	if err := c.flush(commit); err != nil || len(commits) != 2 {
		t.Fatalf("held ack committed twice: %v", commits)
	}
	out, _ = relayDown(data(300, 10), c)
	if out.GetData().GetOffset() != 300 || c.delivered.Load() != 310 {
		t.Fatalf("new bytes: %v, delivered %d", out, c.delivered.Load())
	}
}
