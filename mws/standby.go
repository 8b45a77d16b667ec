package mws

import (
	"context"
	"sync/atomic"

	"github.com/imashproject/imash/mws/muxlink"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// standby is a MASH target's channel to one stream of the session moving
// here, opened at the mux before the handover (a standby attach): the mux
// hands it the stream the moment the source hands the stream over, and
// the first relay of the stream here takes it instead of attaching only
// once the device has arrived. A standby no relay takes is released.
type standby struct {
	cancel context.CancelFunc
	done   chan struct{}
	st     *muxlink.Stream // valid after done; nil when the attach failed
	taken  atomic.Bool     // by a relay, or released
}

// startStandby attaches to stream id, now at epoch, as a standby.
func (s *Server) startStandby(id string, epoch uint64) *standby {
	ctx, cancel := context.WithCancel(s.bgCtx)
	sb := &standby{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sb.done)
		st, err := s.mux.AttachStandby(ctx, id, epoch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("standby attach ended", "stream", id, "error", err)
			}
			return
		}
		sb.st = st
	}()
	return sb
}

// startStandbys attaches as a standby to each stream a move announced
// (checked and bounded by PrepareMove).
func (s *Server) startStandbys(streams []*mwsv1.MovedStream) map[string]*standby {
	out := map[string]*standby{}
	for _, m := range streams {
		if out[m.GetStreamId()] == nil {
			out[m.GetStreamId()] = s.startStandby(m.GetStreamId(), m.GetEpoch())
		}
	}
	return out
}

// take claims sb for a relay of the stream at epoch: it waits for the
// standby attach and returns its channel, or nil when the attach failed,
// got another epoch, or sb was taken or released before.
func (sb *standby) take(ctx context.Context, epoch uint64) *muxlink.Stream {
	if !sb.taken.CompareAndSwap(false, true) {
		return nil
	}
	select {
	case <-sb.done:
	case <-ctx.Done():
		sb.free()
		return nil
	}
	sb.cancel()
	if sb.st != nil && sb.st.Epoch() != epoch {
		sb.st.Detach()
		return nil
	}
	return sb.st
}

// release ends sb unless a relay took it.
func (sb *standby) release() {
	if sb.taken.CompareAndSwap(false, true) {
		sb.free()
	}
}

// free ends the standby attach and detaches its channel once it is known.
func (sb *standby) free() {
	sb.cancel()
	go func() {
		<-sb.done
		if sb.st != nil {
			sb.st.Detach()
		}
	}()
}

// releaseStandbys releases every standby of m.
func releaseStandbys(m map[string]*standby) {
	for _, sb := range m {
		sb.release()
	}
}
