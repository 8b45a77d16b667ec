package mux_test

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/mux"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestHandoverByteExact moves 64 MiB each way through one legacy stream
// while three MWSs hand it to one another at random points. Every byte must
// reach each side exactly once, in order, over one legacy connection.
func TestHandoverByteExact(t *testing.T) {
	size := 64 << 20
	minHandovers := 200
	if testing.Short() {
		size, minHandovers = 8<<20, 20
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	upload := make([]byte, size)
	if _, err := io.ReadFull(legacy.RandomStream(seed+7), upload); err != nil {
		t.Fatal(err)
	}
	upSum := sha256.Sum256(upload)
	ls, err := legacy.NewStreamServer(legacy.StreamConfig{SendBytes: int64(size), Seed: seed, CloseWriteAfterSend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Close() })
	// A small retention window bounds what is in flight beyond the last
	// commit, which the old owner drains (and the new owner receives again)
	// at every handover.
	e := newEnv(t, []mux.Backend{{Name: "stream", Addr: ls.Addr()}}, func(c *mux.Config) { c.Retention = 256 << 10 })
	ctx := testCtx(t)

	names := []string{"mws-a", "mws-b", "mws-c"}
	clients := map[string]muxv1.MuxClient{}
	for _, n := range names {
		clients[n] = e.mws(n)
	}
	op := open(ctx, t, clients["mws-a"], "stream")
	owner, epoch := "mws-a", op.Epoch

	down := sha256.New()
	var downN, upSent, upHigh, upAck, lastCommit uint64
	handovers := 0
	const maxChunk = 64 << 10
	const upLead = 512 << 10 // up bytes may run this far ahead of down bytes
	p := 0.3
	if testing.Short() {
		p = 0.2
	}

	ch := mustAttach(ctx, t, clients[owner], op.StreamId, epoch)
	sendUp := func(limit uint64) {
		for upSent < uint64(size) && upSent < limit {
			n := min(uint64(1+rng.IntN(maxChunk)), uint64(size)-upSent)
			ch.data(upSent, upload[upSent:upSent+n])
			upSent += n
			upHigh = max(upHigh, upSent)
		}
	}
	for finished := false; !finished; {
		a := ch.attached
		if a.DownOffset != downN {
			t.Fatalf("handover %d: delivery starts at %d, want the committed offset %d", handovers, a.DownOffset, downN)
		}
		if a.UpOffset < upAck || a.UpOffset > upHigh {
			t.Fatalf("handover %d: up offset %d outside [acked %d, sent %d]", handovers, a.UpOffset, upAck, upHigh)
		}
		// Resend from the last acknowledged offset, not from what the mux
		// says it accepted: the mux must drop the duplicates.
		upSent = upAck

		for handoverNow := false; !handoverNow && !finished; {
			m, err := ch.ac.Recv()
			if err != nil {
				t.Fatalf("recv after %d handovers: %v", handovers, err)
			}
			switch m := m.Msg.(type) {
			case *muxv1.AttachResponse_Data:
				if m.Data.Offset != downN {
					t.Fatalf("data at offset %d, want %d", m.Data.Offset, downN)
				}
				down.Write(m.Data.Data)
				downN += uint64(len(m.Data.Data))
				// Commit at random, and always before half the retention
				// window is outstanding: a stream whose owner does not
				// commit stalls by design.
				if rng.IntN(4) == 0 || downN-lastCommit >= 128<<10 {
					ch.commit(downN)
					lastCommit = downN
				}
				sendUp(downN + upLead)
				handoverNow = rng.Float64() < p
			case *muxv1.AttachResponse_UpAck:
				if m.UpAck.Offset < upAck {
					t.Fatalf("up ack went back from %d to %d", upAck, m.UpAck.Offset)
				}
				upAck = m.UpAck.Offset
			case *muxv1.AttachResponse_Eof:
				if m.Eof.Offset != uint64(size) || downN != uint64(size) || m.Eof.Error != "" {
					t.Fatalf("eof %v after %d bytes, want clean eof at %d", m.Eof, downN, size)
				}
				sendUp(uint64(size))
				ch.closeWrite(uint64(size))
				ch.commit(downN)
			case *muxv1.AttachResponse_Closed:
				if m.Closed.Reason != muxv1.CloseReason_CLOSE_REASON_FINISHED {
					t.Fatalf("closed: %v", m.Closed)
				}
				finished = true
			default:
				t.Fatalf("unexpected message %v", m)
			}
		}
		if finished {
			break
		}

		next := names[(indexOf(names, owner)+1+rng.IntN(2))%3]
		resp, err := clients[owner].Handover(ctx, &muxv1.HandoverRequest{
			StreamId: op.StreamId, Epoch: epoch, To: next, HasCommit: true, CommitOffset: downN,
		})
		if err != nil {
			t.Fatalf("handover %d %s -> %s: %v", handovers, owner, next, err)
		}
		if resp.Epoch != epoch+1 || resp.Committed != downN || resp.Delivered < downN {
			t.Fatalf("handover response %v: want epoch %d, committed %d", resp, epoch+1, downN)
		}
		var cut *muxv1.Cut
		if err := ch.drain(func(m *muxv1.AttachResponse) {
			if c := m.GetCut(); c != nil {
				cut = c
			}
		}); err != nil {
			t.Fatalf("old channel ended with %v, want a clean end after the cut", err)
		}
		if cut == nil || cut.Reason != muxv1.CutReason_CUT_REASON_HANDOVER || cut.Committed != downN ||
			cut.UpOffset != resp.UpOffset || cut.Epoch != resp.Epoch || cut.Owner != next {
			t.Fatalf("cut %v, want handover to %s at epoch %d, committed %d, up %d", cut, next, resp.Epoch, downN, resp.UpOffset)
		}
		if handovers%25 == 0 {
			// The old owner can no longer act on the stream.
			_, err := clients[owner].Close(ctx, &muxv1.CloseRequest{StreamId: op.StreamId, Epoch: epoch})
			wantCode(t, err, codes.FailedPrecondition, "STALE_EPOCH")
			_, err = attach(ctx, t, clients[owner], op.StreamId, epoch)
			wantCode(t, err, codes.FailedPrecondition, "STALE_EPOCH")
		}
		ch.cancel()
		handovers++
		owner, epoch = next, resp.Epoch
		lastCommit = downN
		ch = mustAttach(ctx, t, clients[owner], op.StreamId, epoch)
	}

	lc, err := ls.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lc.Done():
	case <-ctx.Done():
		t.Fatal("legacy connection did not finish")
	}
	if err := lc.Err(); err != nil {
		t.Fatalf("legacy connection: %v", err)
	}
	if got, want := [32]byte(down.Sum(nil)), lc.SentSum(); got != want || downN != uint64(size) {
		t.Fatalf("down: %d bytes, sha256 %x; legacy server sent sha256 %x", downN, got, want)
	}
	if lc.Received() != int64(size) || lc.ReceivedSum() != upSum {
		t.Fatalf("up: legacy server received %d bytes, sha256 %x; want %d, %x", lc.Received(), lc.ReceivedSum(), size, upSum)
	}
	if n := ls.Accepted(); n != 1 {
		t.Fatalf("legacy server accepted %d connections, want 1", n)
	}
	_, port, _ := net.SplitHostPort(op.LocalAddr)
	if strconv.Itoa(lc.RemotePort()) != port {
		t.Fatalf("legacy connection's peer port %d, mux opened it from %s", lc.RemotePort(), op.LocalAddr)
	}
	if handovers < minHandovers {
		t.Fatalf("only %d handovers, want at least %d", handovers, minHandovers)
	}
	t.Logf("%d MiB each way, %d handovers, checksums equal, one legacy connection", size>>20, handovers)
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
