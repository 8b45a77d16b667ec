package mws

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws/muxlink"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// Stream relays a raw legacy stream between a device and the mux. Offsets
// are the same on both hops, so the device's bytes and acknowledgements
// pass through unchanged: the mux writes each up byte exactly once, and a
// down byte is committed at the mux only when the device has acknowledged
// it. When the device goes away the stream stays open at the mux and the
// device (or, after a handoff, another one) attaches again with Open
// {stream_id, resume_offset}.
func (d *deviceService) Stream(ds mwsv1.Device_StreamServer) error {
	s := d.s
	ctx := ds.Context()
	first, err := ds.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return rpcerr.New(codes.InvalidArgument, "OPEN_REQUIRED", "the first message of Stream must be an Open")
	}
	var ss *session
	if tok := moveTokenOf(ctx); tok != "" {
		// The device follows its session here and attaches again at once.
		if open.GetStreamId() == "" {
			return rpcerr.New(codes.InvalidArgument, "MOVE_TOKEN_ON_NEW_STREAM", "only a stream attaching again may carry a move token")
		}
		resp, mss, err := s.moveIn(ctx, &mwsv1.MoveInRequest{Token: tok, SessionId: open.GetSessionId()})
		if err != nil {
			return err
		}
		if err := ds.Send(&mwsv1.StreamResponse{Msg: &mwsv1.StreamResponse_MovedIn{MovedIn: resp}}); err != nil {
			return err
		}
		mss.mu.Lock()
		p := principal{user: mss.user, device: mss.device, token: sha256.Sum256([]byte(resp.GetCredential()))}
		mss.mu.Unlock()
		ctx = context.WithValue(ctx, principalKey{}, p)
		ss = mss // the key the call carries is the one before the move
	} else {
		var err error
		if ss, err = s.session(ctx, open.GetSessionId()); err != nil {
			return err
		}
	}

	var st *muxlink.Stream
	var rs *relayState
	resume := open.GetResumeOffset()
	if open.GetStreamId() == "" {
		if resume != 0 {
			return rpcerr.New(codes.InvalidArgument, "RESUME_WITHOUT_STREAM", "resume_offset needs a stream_id")
		}
		if s.openStreams(ctx, ss) >= s.cfg.MaxStreamsPerSession {
			return rpcerr.New(codes.ResourceExhausted, "TOO_MANY_STREAMS", "session holds its limit of %d streams", s.cfg.MaxStreamsPerSession)
		}
		st, err = s.mux.Open(ctx, open.GetBackend(), ss.id)
		if err != nil {
			return upstreamStatus(open.GetBackend(), err)
		}
		rs = &relayState{id: st.ID(), backend: open.GetBackend(), epoch: st.Epoch()}
		ss.mu.Lock()
		ss.streams[rs.id] = rs
		ss.mu.Unlock()
		s.log.Info("stream opened", "session", ss.id, "stream", rs.id, "backend", rs.backend)
		s.replicateLater(ss)
	} else {
		ss.mu.Lock()
		rs = ss.streams[open.GetStreamId()]
		var pre *standby
		var epoch uint64
		if rs != nil {
			pre, rs.pre, epoch = rs.pre, nil, rs.epoch
		}
		ss.mu.Unlock()
		if rs == nil {
			return rpcerr.New(codes.NotFound, "UNKNOWN_STREAM", "session %s has no stream %q", ss.id, open.GetStreamId())
		}
		if pre != nil {
			// The channel a move opened ahead at the mux.
			st = pre.take(ctx, epoch)
		}
		if st == nil {
			st, err = s.mux.Attach(ctx, rs.id, epoch)
		}
		if err != nil {
			if rpcerr.Code(err) == codes.NotFound {
				ss.forgetStream(rs)
			}
			if rpcerr.Code(err) == codes.FailedPrecondition {
				// The session moved on between the check and the attach:
				// the device tries again and is redirected.
				return rpcerr.New(codes.Unavailable, "SESSION_MOVING", "stream %s is moving with its session", rs.id)
			}
			return upstreamStatus(rs.backend, err)
		}
		if resume < st.DownStart() {
			st.Detach()
			return rpcerr.New(codes.InvalidArgument, "RESUME_BEFORE_ACK", "resume offset %d is before the acknowledged offset %d", resume, st.DownStart())
		}
	}
	defer st.Detach()
	ss.mu.Lock()
	rs.active = true
	leaving := ss.leavingLocked()
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		rs.active = false
		ss.mu.Unlock()
	}()

	down := max(resume, st.DownStart())
	if err := ds.Send(&mwsv1.StreamResponse{Msg: &mwsv1.StreamResponse_Opened{Opened: &mwsv1.StreamOpened{
		StreamId: rs.id, DownOffset: down, UpOffset: st.UpStart(),
	}}}); err != nil {
		return err
	}

	cur := &downCursor{}
	cur.delivered.Store(down)
	cur.mux.Store(st.DownStart())
	upErr := make(chan error, 1)
	go func() { upErr <- relayUp(ds, st, cur) }()
	// Goodput, while server bytes wait for the device.
	defer s.netmeter.sendingStream(ctx, principalFrom(ctx).device, func() bool { return len(st.Messages()) > 0 })()

	for {
		select {
		case err := <-upErr:
			if err != nil {
				return err
			}
			upErr = nil // the device closed its send side; keep relaying down
		case m, ok := <-st.Messages():
			if !ok {
				if err := st.RecvErr(); err != nil {
					return upstreamStatus(rs.backend, err)
				}
				return nil
			}
			out, end := relayDown(m, cur)
			_ = cur.flush(st.Commit) // an error ends the channel: the next message says why
			if end {
				ss.mu.Lock()
				delete(ss.streams, rs.id)
				ss.mu.Unlock()
			}
			if m.GetCut() != nil {
				if t := ss.moveTarget(false); t != nil {
					// The session is moving: the device follows it there.
					return streamMoved(rs.id, t)
				}
				return rpcerr.New(codes.Aborted, "STREAM_MOVED", "stream %s moved to %s", rs.id, m.GetCut().Owner)
			}
			if out != nil {
				if err := ds.Send(out); err != nil {
					return err
				}
			}
			if end {
				return nil
			}
		case <-leaving:
			// The session froze for a move: the device follows it now,
			// while the mux hands the stream over; bytes not acknowledged
			// here go again from there.
			if t := ss.moveTarget(true); t != nil {
				return streamMoved(rs.id, t)
			}
			ss.mu.Lock()
			leaving = ss.leavingLocked()
			ss.mu.Unlock()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// moveTarget is where the session is moving (nil when it is not, or when
// frozen is set and it has not frozen yet).
func (ss *session) moveTarget(frozen bool) *mwsv1.MoveTarget {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.move == nil || frozen && !ss.move.frozen {
		return nil
	}
	return ss.move.target
}

// streamMoved tells a device that its stream moves with its session to t.
func streamMoved(id string, t *mwsv1.MoveTarget) error {
	return rpcerr.NewWithMeta(codes.Aborted, "STREAM_MOVED", moveMeta(t), "stream %s moved to %s", id, t.GetMws().GetName())
}

// openStreams counts the session's streams. When the count reaches the
// limit it first forgets the streams the mux no longer holds: a stream that
// ended while no device was attached (its orphan timeout expired at the mux)
// must not keep its place.
func (s *Server) openStreams(ctx context.Context, ss *session) int {
	ss.mu.Lock()
	n := len(ss.streams)
	var idle []*relayState
	for _, r := range ss.streams {
		if !r.active {
			idle = append(idle, r)
		}
	}
	ss.mu.Unlock()
	if n < s.cfg.MaxStreamsPerSession {
		return n
	}
	for _, r := range idle {
		if _, err := s.mux.API().GetStream(ctx, &muxv1.GetStreamRequest{StreamId: r.id}); rpcerr.Code(err) == codes.NotFound {
			ss.forgetStream(r)
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.streams)
}

// forgetStream removes r from the session, unless it was replaced.
func (ss *session) forgetStream(r *relayState) {
	ss.mu.Lock()
	if ss.streams[r.id] == r {
		delete(ss.streams, r.id)
	}
	ss.mu.Unlock()
}

// downCursor is what a relay knows of the down offsets: how far the device
// has the bytes (a resuming device holds those before its resume offset),
// and how far the mux has delivered them on this attachment. A commit may
// not pass the mux's point: after a handover the mux sends again from its
// last commit, so a device's acknowledgement of bytes it received through
// another MWS waits until the mux has sent them here too.
type downCursor struct {
	delivered atomic.Uint64 // to the device
	mux       atomic.Uint64 // by the mux
	pending   atomic.Uint64 // an acknowledgement waiting for mux
}

// ack commits off at the mux now, or once the mux has delivered that far.
func (c *downCursor) ack(commit func(uint64) error, off uint64) error {
	if off <= c.mux.Load() {
		return commit(off)
	}
	for {
		p := c.pending.Load()
		if p >= off || c.pending.CompareAndSwap(p, off) {
			break
		}
	}
	return c.flush(commit) // the mux may have passed it meanwhile
}

// flush commits a waiting acknowledgement the mux has now delivered past.
func (c *downCursor) flush(commit func(uint64) error) error {
	p := c.pending.Load()
	if p == 0 || p > c.mux.Load() || !c.pending.CompareAndSwap(p, 0) {
		return nil
	}
	return commit(p)
}

// relayDown translates one mux message for the device; end reports that the
// stream is over.
func relayDown(m *muxv1.AttachResponse, cur *downCursor) (out *mwsv1.StreamResponse, end bool) {
	delivered := &cur.delivered
	switch m := m.Msg.(type) {
	case *muxv1.AttachResponse_Data:
		off, b := m.Data.Offset, m.Data.Data
		cur.mux.Store(max(cur.mux.Load(), off+uint64(len(b))))
		from := delivered.Load()
		if off+uint64(len(b)) <= from {
			return nil, false // the device already has these bytes
		}
		if off < from {
			b = b[from-off:]
			off = from
		}
		delivered.Store(off + uint64(len(b)))
		return &mwsv1.StreamResponse{Msg: &mwsv1.StreamResponse_Data{Data: &mwsv1.StreamData{Offset: off, Data: b}}}, false
	case *muxv1.AttachResponse_UpAck:
		return &mwsv1.StreamResponse{Msg: &mwsv1.StreamResponse_UpAck{UpAck: &mwsv1.StreamAck{Offset: m.UpAck.Offset}}}, false
	case *muxv1.AttachResponse_Eof:
		return &mwsv1.StreamResponse{Msg: &mwsv1.StreamResponse_Eof{Eof: &mwsv1.StreamEof{Offset: m.Eof.Offset, Error: m.Eof.Error}}}, false
	case *muxv1.AttachResponse_Closed:
		return &mwsv1.StreamResponse{Msg: &mwsv1.StreamResponse_Closed{Closed: &mwsv1.StreamClosed{Reason: m.Closed.Reason.String()}}}, true
	}
	return nil, false
}

// relayUp passes the device's bytes, acknowledgements and half-close to the
// mux. It returns nil when the device closes its send side.
func relayUp(ds mwsv1.Device_StreamServer, st *muxlink.Stream, cur *downCursor) error {
	delivered := &cur.delivered
	for {
		m, err := ds.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch m := m.Msg.(type) {
		case *mwsv1.StreamRequest_Data:
			if len(m.Data.Data) > muxlink.MaxChunk {
				return rpcerr.New(codes.InvalidArgument, "CHUNK_TOO_LARGE", "chunk of %d bytes exceeds %d", len(m.Data.Data), muxlink.MaxChunk)
			}
			err = st.SendAt(m.Data.Offset, m.Data.Data)
		case *mwsv1.StreamRequest_Ack:
			if m.Ack.Offset > delivered.Load() {
				return rpcerr.New(codes.InvalidArgument, "ACK_BEYOND_DELIVERED", "ack at %d: only %d bytes were delivered", m.Ack.Offset, delivered.Load())
			}
			err = cur.ack(st.Commit, m.Ack.Offset)
		case *mwsv1.StreamRequest_CloseWrite:
			err = st.CloseWrite(m.CloseWrite.Offset)
		case *mwsv1.StreamRequest_Close:
			// The mux answers Closed on the channel, which ends the relay.
			ctx, cancel := context.WithTimeout(ds.Context(), 10*time.Second)
			err = st.Close(ctx)
			cancel()
		default:
			return rpcerr.New(codes.InvalidArgument, "UNEXPECTED_MESSAGE", "only Data, Ack and CloseWrite may follow Open")
		}
		if err != nil {
			// The mux channel is gone; the down loop reports why.
			return nil
		}
	}
}
