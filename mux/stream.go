package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

// errCut ends an attachment's receive loop quietly: the channel was cut or
// the stream closed, and the sender reports why.
var errCut = errors.New("mux: attachment cut")

// stream is one legacy stream: the TCP connection to the legacy server, its
// byte offsets both ways, its owner and epoch. All fields below mu are
// guarded by it; every change of them is announced by closing changed.
type stream struct {
	id, backend, label string
	addr               string
	conn               *net.TCPConn
	cfg                *Config
	log                *slog.Logger
	created            time.Time
	onClose            func(*stream)

	mu      sync.Mutex
	changed chan struct{}

	epoch       uint64
	owner       string
	att         *attachment
	orphanSince time.Time
	orphanTimer *time.Timer
	orphanGen   uint64
	// delivered is the highest down offset sent to the current epoch's
	// owner; a commit may not pass it.
	delivered uint64
	// standbys counts standby attaches begun: a newer one ends an older.
	standbys uint64

	// Down: legacy server -> MWS. buf holds [committed, read).
	buf        retainBuf
	read       uint64
	committed  uint64
	peak       int
	downEOF    bool
	downErr    string
	readerDone chan struct{}

	// Up: MWS -> legacy server. Bytes before accepted are queued or written.
	accepted   uint64
	written    uint64
	queue      [][]byte
	queued     int
	closeReq   bool
	closeAt    uint64
	upClosed   bool
	writerDone chan struct{}

	closed      bool
	closeReason muxv1.CloseReason
	closeDetail string
}

// attachment is one Attach channel of the owner.
type attachment struct {
	epoch     uint64
	owner     string
	next      uint64 // next down offset to send
	upAckSent uint64
	eofSent   bool
	cut       *muxv1.Cut
	recvErr   error
}

func newStream(id string, b Backend, label string, conn *net.TCPConn, owner string, cfg *Config, log *slog.Logger, onClose func(*stream)) *stream {
	s := &stream{
		id: id, backend: b.Name, addr: b.Addr, label: label, conn: conn, cfg: cfg,
		created: time.Now(), onClose: onClose,
		changed: make(chan struct{}),
		epoch:   1, owner: owner,
		readerDone: make(chan struct{}), writerDone: make(chan struct{}),
	}
	s.log = log.With("stream", id, "backend", b.Name)
	s.mu.Lock()
	s.startOrphanTimerLocked()
	s.mu.Unlock()
	go s.readLoop()
	go s.writeLoop()
	return s
}

// notifyLocked wakes every goroutine waiting for a change.
func (s *stream) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// readLoop reads the legacy server while retention allows.
func (s *stream) readLoop() {
	defer close(s.readerDone)
	rbuf := make([]byte, s.cfg.MaxChunk)
	for {
		s.mu.Lock()
		for !s.closed && s.buf.size >= s.cfg.Retention {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		n := min(s.cfg.Retention-s.buf.size, s.cfg.MaxChunk)
		s.mu.Unlock()

		got, err := s.conn.Read(rbuf[:n])

		s.mu.Lock()
		if got > 0 && !s.closed {
			// Retain an exact copy: a short read must not pin a whole read
			// buffer, or memory would outgrow the retention limit.
			s.buf.append(s.read, bytes.Clone(rbuf[:got]))
			s.read += uint64(got)
			s.peak = max(s.peak, s.buf.size)
			s.notifyLocked()
		}
		if err != nil {
			if !s.closed {
				s.downEOF = true
				if !errors.Is(err, io.EOF) {
					s.downErr = err.Error()
				}
				s.log.Info("legacy server finished sending", "offset", s.read, "error", s.downErr)
				s.notifyLocked()
				s.maybeFinishLocked()
			}
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// writeLoop writes accepted up bytes to the legacy server, in order, once.
func (s *stream) writeLoop() {
	defer close(s.writerDone)
	for {
		s.mu.Lock()
		for !s.closed && len(s.queue) == 0 && !(s.closeReq && !s.upClosed && s.written == s.closeAt) {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		if len(s.queue) == 0 {
			// Every byte before closeAt is written: half-close.
			s.mu.Unlock()
			err := s.conn.CloseWrite()
			s.mu.Lock()
			if err != nil {
				s.closeLocked(muxv1.CloseReason_CLOSE_REASON_BACKEND_ERROR, "half-close: "+err.Error())
				s.mu.Unlock()
				return
			}
			s.upClosed = true
			s.log.Info("half-closed towards legacy server", "offset", s.written)
			s.notifyLocked()
			s.maybeFinishLocked()
			s.mu.Unlock()
			return
		}
		b := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()

		_, err := s.conn.Write(b)

		s.mu.Lock()
		if err != nil {
			if !s.closed {
				s.closeLocked(muxv1.CloseReason_CLOSE_REASON_BACKEND_ERROR, "write: "+err.Error())
			}
			s.mu.Unlock()
			return
		}
		s.written += uint64(len(b))
		s.queued -= len(b)
		s.notifyLocked()
		s.mu.Unlock()
	}
}

// maybeFinishLocked closes the stream once both directions are done and
// every down byte is committed.
func (s *stream) maybeFinishLocked() {
	if !s.closed && s.downEOF && s.committed == s.read && s.upClosed {
		s.closeLocked(muxv1.CloseReason_CLOSE_REASON_FINISHED, "")
	}
}

// closeLocked closes the legacy connection and ends every attachment.
func (s *stream) closeLocked(reason muxv1.CloseReason, detail string) {
	if s.closed {
		return
	}
	s.closed = true
	s.closeReason = reason
	s.closeDetail = detail
	s.stopOrphanTimerLocked()
	_ = s.conn.Close()
	s.buf = retainBuf{}
	s.queue = nil
	s.notifyLocked()
	s.log.Info("stream closed", "reason", reason.String(), "detail", detail, "epoch", s.epoch,
		"owner", s.owner, "down_read", s.read, "down_committed", s.committed, "up_written", s.written)
	go s.onClose(s)
}

func (s *stream) close(reason muxv1.CloseReason, detail string) {
	s.mu.Lock()
	s.closeLocked(reason, detail)
	s.mu.Unlock()
}

// startOrphanTimerLocked (re)starts the clock of a stream without an
// attached owner.
func (s *stream) startOrphanTimerLocked() {
	s.stopOrphanTimerLocked()
	s.orphanSince = time.Now()
	gen := s.orphanGen
	s.orphanTimer = time.AfterFunc(s.cfg.OrphanTimeout, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.orphanGen == gen && s.att == nil && !s.closed {
			s.closeLocked(muxv1.CloseReason_CLOSE_REASON_ORPHAN_EXPIRED, "no owner attached for "+s.cfg.OrphanTimeout.String())
		}
	})
}

// stopOrphanTimerLocked stops the clock; a timer that already fired sees a
// newer generation and does nothing.
func (s *stream) stopOrphanTimerLocked() {
	s.orphanGen++
	s.orphanSince = time.Time{}
	if s.orphanTimer != nil {
		s.orphanTimer.Stop()
		s.orphanTimer = nil
	}
}

// cutLocked ends the current attachment, if any, telling it why.
func (s *stream) cutLocked(reason muxv1.CutReason) {
	if s.att == nil {
		return
	}
	s.att.cut = &muxv1.Cut{
		Reason: reason, Epoch: s.epoch, Owner: s.owner,
		Delivered: s.att.next, Committed: s.committed, UpOffset: s.accepted,
	}
	s.att = nil
	s.notifyLocked()
}

// checkOwnerLocked verifies that caller owns the stream at epoch.
func (s *stream) checkOwnerLocked(caller string, epoch uint64) error {
	if s.closed {
		return rpcerr.New(codes.NotFound, "STREAM_CLOSED", "stream %s is closed (%s)", s.id, s.closeReason)
	}
	if epoch != s.epoch {
		return rpcerr.New(codes.FailedPrecondition, "STALE_EPOCH", "stream %s: epoch %d is not the current epoch %d", s.id, epoch, s.epoch)
	}
	if caller != s.owner {
		return rpcerr.New(codes.FailedPrecondition, "NOT_OWNER", "stream %s: epoch %d belongs to %q, not %q", s.id, epoch, s.owner, caller)
	}
	return nil
}

// attach makes a new attachment for the owner at epoch, replacing any
// attachment of the same epoch.
func (s *stream) attach(caller string, epoch uint64) (*attachment, *muxv1.Attached, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOwnerLocked(caller, epoch); err != nil {
		return nil, nil, err
	}
	a, att := s.attachLocked(caller, epoch)
	return a, att, nil
}

// attachStandby is the attach of an MWS about to be handed the stream,
// which is at epoch now: it waits until the owner hands the stream to
// caller and attaches caller at the new epoch at once, so that the new
// owner's channel is open when the handover is done. It fails when the
// stream goes to someone else, closes, a newer standby begins, ctx ends or
// the configured standby limit passes.
func (s *stream) attachStandby(ctx context.Context, caller string, epoch uint64) (*attachment, *muxv1.Attached, error) {
	limit := time.NewTimer(s.cfg.StandbyTimeout)
	defer limit.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.standbys++
	mine := s.standbys
	s.notifyLocked() // an older standby ends
	for {
		switch {
		case s.closed:
			return nil, nil, rpcerr.New(codes.NotFound, "STREAM_CLOSED", "stream %s is closed (%s)", s.id, s.closeReason)
		case s.epoch == epoch+1 && s.owner == caller:
			a, att := s.attachLocked(caller, s.epoch)
			return a, att, nil
		case s.epoch != epoch:
			return nil, nil, rpcerr.New(codes.FailedPrecondition, "STALE_EPOCH", "stream %s: standby at epoch %d, the stream is at epoch %d of %q", s.id, epoch, s.epoch, s.owner)
		case s.owner == caller:
			return nil, nil, rpcerr.New(codes.FailedPrecondition, "ALREADY_OWNER", "stream %s is %q's already: attach without standby", s.id, caller)
		case s.standbys != mine:
			return nil, nil, rpcerr.New(codes.Aborted, "STANDBY_REPLACED", "a newer standby attach to stream %s began", s.id)
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.mu.Lock()
			return nil, nil, rpcerr.New(codes.Canceled, "CANCELED", "standby attach to stream %s: %v", s.id, ctx.Err())
		case <-limit.C:
			s.mu.Lock()
			return nil, nil, rpcerr.New(codes.DeadlineExceeded, "STANDBY_TIMEOUT", "stream %s was not handed over within %v", s.id, s.cfg.StandbyTimeout)
		}
		s.mu.Lock()
	}
}

// attachLocked makes a (the owner's) new attachment at epoch, cutting the
// one before.
func (s *stream) attachLocked(caller string, epoch uint64) (*attachment, *muxv1.Attached) {
	s.cutLocked(muxv1.CutReason_CUT_REASON_REATTACHED)
	a := &attachment{epoch: epoch, owner: caller, next: s.committed, upAckSent: s.accepted}
	s.att = a
	s.stopOrphanTimerLocked()
	s.notifyLocked()
	s.log.Info("owner attached", "mws", caller, "epoch", epoch, "down_offset", s.committed, "up_offset", s.accepted)
	return a, &muxv1.Attached{Epoch: epoch, DownOffset: s.committed, UpOffset: s.accepted, UpClosed: s.closeReq, Backend: s.backend}
}

// detach forgets a finished attachment (its channel ended without a cut).
func (s *stream) detach(a *attachment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.att == a {
		s.att = nil
		if !s.closed {
			s.startOrphanTimerLocked()
			s.log.Info("owner detached", "mws", a.owner, "epoch", a.epoch, "delivered", a.next, "committed", s.committed)
		}
		s.notifyLocked()
	}
}

// acceptUp queues up bytes from a. It blocks while the up queue is full.
func (s *stream) acceptUp(ctx context.Context, a *attachment, off uint64, data []byte) error {
	if len(data) > s.cfg.MaxChunk {
		return rpcerr.New(codes.InvalidArgument, "CHUNK_TOO_LARGE", "chunk of %d bytes exceeds the limit of %d", len(data), s.cfg.MaxChunk)
	}
	end := off + uint64(len(data))
	if end < off {
		return rpcerr.New(codes.InvalidArgument, "OFFSET_OVERFLOW", "chunk at offset %d overflows", off)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if a.cut != nil || s.closed {
			return errCut
		}
		if end <= s.accepted {
			return nil // a resend: every byte of it is already accepted
		}
		if off > s.accepted {
			return rpcerr.New(codes.InvalidArgument, "OFFSET_GAP", "chunk at offset %d leaves a gap: the next expected up offset is %d", off, s.accepted)
		}
		if s.closeReq {
			return rpcerr.New(codes.InvalidArgument, "WRITE_AFTER_CLOSE", "chunk at offset %d after half-close at %d", off, s.closeAt)
		}
		tail := data[s.accepted-off:]
		if s.queued == 0 || s.queued+len(tail) <= s.cfg.UpQueue {
			s.queue = append(s.queue, tail)
			s.queued += len(tail)
			s.accepted = end
			s.notifyLocked()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.mu.Lock()
			return errCut
		}
		s.mu.Lock()
	}
}

// commit records that a has processed every down byte before off.
func (s *stream) commit(a *attachment, off uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.cut != nil || s.closed {
		return errCut
	}
	return s.commitLocked(off)
}

func (s *stream) commitLocked(off uint64) error {
	if off > s.delivered {
		return rpcerr.New(codes.InvalidArgument, "COMMIT_BEYOND_DELIVERED", "commit at %d: only %d bytes were delivered", off, s.delivered)
	}
	if off <= s.committed {
		return nil // a repeated or older commit changes nothing
	}
	s.buf.trim(off)
	s.committed = off
	s.notifyLocked()
	s.maybeFinishLocked()
	return nil
}

// closeWrite asks for a half-close towards the legacy server at off.
func (s *stream) closeWrite(a *attachment, off uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.cut != nil || s.closed {
		return errCut
	}
	if s.closeReq {
		if off == s.closeAt {
			return nil
		}
		return rpcerr.New(codes.InvalidArgument, "CLOSE_OFFSET_MISMATCH", "half-close at %d: already half-closed at %d", off, s.closeAt)
	}
	if off != s.accepted {
		return rpcerr.New(codes.InvalidArgument, "CLOSE_OFFSET_MISMATCH", "half-close at %d: %d up bytes are accepted", off, s.accepted)
	}
	s.closeReq = true
	s.closeAt = off
	s.notifyLocked()
	return nil
}

// next collects what the sender of a should send now, or returns wait (a
// channel to wait on) when there is nothing. done reports that the sender
// must stop after sending msgs.
func (s *stream) next(a *attachment, msgs []*muxv1.AttachResponse, budget int) (out []*muxv1.AttachResponse, wait <-chan struct{}, done bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out = msgs
	if a.recvErr != nil {
		return out, nil, true, a.recvErr
	}
	if a.ackDue(s.accepted) {
		out = append(out, &muxv1.AttachResponse{Msg: &muxv1.AttachResponse_UpAck{UpAck: &muxv1.UpAck{Offset: s.accepted}}})
		a.upAckSent = s.accepted
	}
	if a.cut != nil {
		return append(out, &muxv1.AttachResponse{Msg: &muxv1.AttachResponse_Cut{Cut: a.cut}}), nil, true, nil
	}
	for budget > 0 && a.next < s.read {
		b := s.buf.slice(a.next, min(budget, s.cfg.MaxChunk))
		if b == nil {
			break
		}
		out = append(out, &muxv1.AttachResponse{Msg: &muxv1.AttachResponse_Data{Data: &muxv1.Data{Offset: a.next, Data: b}}})
		a.next += uint64(len(b))
		budget -= len(b)
	}
	s.delivered = max(s.delivered, a.next)
	if s.downEOF && !a.eofSent && a.next == s.read {
		out = append(out, &muxv1.AttachResponse{Msg: &muxv1.AttachResponse_Eof{Eof: &muxv1.Eof{Offset: s.read, Error: s.downErr}}})
		a.eofSent = true
	}
	if s.closed {
		return append(out, &muxv1.AttachResponse{Msg: &muxv1.AttachResponse_Closed{Closed: &muxv1.Closed{Reason: s.closeReason, Detail: s.closeDetail}}}), nil, true, nil
	}
	if len(out) > 0 {
		return out, nil, false, nil
	}
	return out, s.changed, false, nil
}

// ackDue reports whether up bytes were accepted since the last UpAck sent
// on this channel.
func (a *attachment) ackDue(accepted uint64) bool { return accepted > a.upAckSent }

// setRecvErr ends a's channel with err (a bad request).
func (s *stream) setRecvErr(a *attachment, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.recvErr == nil {
		a.recvErr = err
	}
	s.notifyLocked()
}

// handover grants the stream to another MWS at the next epoch.
func (s *stream) handover(caller string, req *muxv1.HandoverRequest) (*muxv1.HandoverResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOwnerLocked(caller, req.GetEpoch()); err != nil {
		return nil, err
	}
	if !backendNameRE.MatchString(req.GetTo()) {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_TARGET", "handover target %q is not an MWS name", req.GetTo())
	}
	if req.GetHasCommit() {
		if err := s.commitLocked(req.GetCommitOffset()); err != nil {
			return nil, err
		}
		if s.closed {
			return nil, rpcerr.New(codes.NotFound, "STREAM_CLOSED", "stream %s finished", s.id)
		}
	}
	delivered := s.delivered
	s.epoch++
	s.owner = req.GetTo()
	s.delivered = s.committed
	s.cutLocked(muxv1.CutReason_CUT_REASON_HANDOVER)
	s.notifyLocked() // a standby of the new owner's waits, attached or not
	s.startOrphanTimerLocked()
	s.log.Info("stream handed over", "mws", caller, "to", s.owner, "epoch", s.epoch,
		"delivered", delivered, "committed", s.committed, "up_offset", s.accepted)
	return &muxv1.HandoverResponse{Epoch: s.epoch, Delivered: delivered, Committed: s.committed, UpOffset: s.accepted}, nil
}

// takeover claims the stream for caller without the owner's cooperation.
func (s *stream) takeover(caller string, req *muxv1.TakeoverRequest) (*muxv1.TakeoverResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, rpcerr.New(codes.NotFound, "STREAM_CLOSED", "stream %s is closed (%s)", s.id, s.closeReason)
	}
	if req.GetExpectEpoch() != s.epoch {
		return nil, rpcerr.New(codes.FailedPrecondition, "STALE_EPOCH", "stream %s: expected epoch %d, current epoch is %d", s.id, req.GetExpectEpoch(), s.epoch)
	}
	if s.att != nil && !req.GetForce() {
		return nil, rpcerr.New(codes.FailedPrecondition, "OWNER_ATTACHED", "stream %s: owner %q is attached; use force to cut it", s.id, s.owner)
	}
	prev := s.owner
	s.epoch++
	s.owner = caller
	s.delivered = s.committed
	s.cutLocked(muxv1.CutReason_CUT_REASON_TAKEOVER)
	s.notifyLocked() // a waiting standby ends
	s.startOrphanTimerLocked()
	s.log.Warn("stream taken over", "mws", caller, "previous_owner", prev, "epoch", s.epoch,
		"committed", s.committed, "up_offset", s.accepted, "forced", req.GetForce())
	return &muxv1.TakeoverResponse{Epoch: s.epoch, Committed: s.committed, UpOffset: s.accepted, PreviousOwner: prev}, nil
}

// closeByOwner closes the stream on its owner's request.
func (s *stream) closeByOwner(caller string, epoch uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOwnerLocked(caller, epoch); err != nil {
		return err
	}
	s.closeLocked(muxv1.CloseReason_CLOSE_REASON_CLOSED, "closed by "+caller)
	return nil
}

func (s *stream) info() *muxv1.StreamInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := &muxv1.StreamInfo{
		StreamId: s.id, Backend: s.backend, Label: s.label, Epoch: s.epoch, Owner: s.owner,
		Attached: s.att != nil, LocalAddr: s.conn.LocalAddr().String(),
		DownRead: s.read, DownDelivered: s.delivered, DownCommitted: s.committed,
		DownRetained: uint64(s.buf.size), DownRetainedPeak: uint64(s.peak), DownEof: s.downEOF,
		UpAccepted: s.accepted, UpWritten: s.written, UpClosed: s.upClosed,
		CreatedUnixNano: s.created.UnixNano(),
	}
	if !s.orphanSince.IsZero() {
		in.OrphanSinceUnixNano = s.orphanSince.UnixNano()
	}
	return in
}

// isClosed reports whether the stream has closed.
func (s *stream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
