package clientlib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// maxChunk is the largest data message a Conn sends.
const maxChunk = 64 << 10

// ackEvery is how many received bytes a Conn lets pass before it
// acknowledges them (it also acknowledges whenever its buffer runs dry).
const ackEvery = 128 << 10

// Conn is a byte stream to a legacy server through the MWS. It implements
// net.Conn plus CloseWrite. Bytes the application has read are acknowledged
// to the MWS, which only then lets the mux forget them: a byte the app has
// not read is never lost, whatever happens to the session's route.
type Conn struct {
	s        *Session
	backend  string
	streamID string
	// base is the context of the Conn's calls, for as long as it lives
	// (Close and Detach cancel it); a call made again after a move uses it.
	base   context.Context
	cancel context.CancelFunc

	writeMu sync.Mutex // orders Writes

	sendMu    sync.Mutex
	st        mwsv1.Device_StreamClient
	upNext    uint64
	closeWrOn bool   // CloseWrite was sent: sent again after a move
	lastAck   uint64 // the last acknowledgement sent: sent again after a move

	// retained are the written bytes the mux has not yet accepted: they
	// are sent again when the stream moves to another MWS.
	retMu    sync.Mutex
	retained []upChunk
	retBytes int
	stopped  bool // Close, Detach or release: no more moves

	ackMu   sync.Mutex
	upAcked uint64        // up bytes the mux has accepted
	ackWake chan struct{} // closed and replaced when upAcked grows

	// The receive queue is not bounded here: the bytes in it are bounded
	// by the mux's retention window, since the MWS lets the mux forget a
	// byte only once this Conn acknowledged it. A bounded queue would let
	// data hold back the UpAcks queued behind it (a handoff waits for
	// them while the app is paused).
	qMu      sync.Mutex
	queue    []*mwsv1.StreamResponse
	qWake    chan struct{} // closed and replaced when the queue grows or ends
	recvDone chan struct{}
	recvErr  error  // valid after recvDone
	recvNext uint64 // end of the down bytes received (recvLoop only)

	readMu  sync.Mutex
	buf     []byte
	next    uint64 // offset of buf[0]
	acked   uint64
	readErr error

	dlMu     sync.Mutex
	deadline time.Time
	dlChange chan struct{} // closed and replaced when the deadline or pause changes
	paused   bool          // a handoff is taking a savepoint: Read and Write wait
	released bool          // the session was handed off: Read and Write fail
	unpause  chan struct{} // closed and replaced when paused is cleared or released is set

	closeOnce sync.Once
}

// Dial opens a byte stream to the named backend.
func (s *Session) Dial(ctx context.Context, backend string) (*Conn, error) {
	return s.openStream(ctx, &mwsv1.StreamOpen{SessionId: s.id, Backend: backend}, backend)
}

// Resume attaches again to an open stream of the session, e.g. after the
// device lost its connection, receiving server bytes from offset on.
func (s *Session) Resume(ctx context.Context, streamID string, offset uint64) (*Conn, error) {
	return s.openStream(ctx, &mwsv1.StreamOpen{SessionId: s.id, StreamId: streamID, ResumeOffset: offset}, "")
}

// upChunk is written bytes at an up offset.
type upChunk struct {
	off  uint64
	data []byte
}

// maxRetained bounds the written bytes a Conn keeps until the mux accepts
// them: Write waits beyond it.
const maxRetained = 4 << 20

func (s *Session) openStream(ctx context.Context, open *mwsv1.StreamOpen, backend string) (*Conn, error) {
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	var st mwsv1.Device_StreamClient
	var op *mwsv1.StreamOpened
	err := s.retry(ctx, func(r *route) error {
		var err error
		st, op, err = s.openAt(sctx, r, open)
		return err
	})
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		cancel()
		return nil, err
	}
	c := &Conn{
		s: s, backend: backend, streamID: op.StreamId, base: sctx, cancel: cancel, st: st, recvNext: op.DownOffset,
		upNext: op.UpOffset, upAcked: op.UpOffset, ackWake: make(chan struct{}), next: op.DownOffset, acked: op.DownOffset,
		qWake: make(chan struct{}), recvDone: make(chan struct{}), dlChange: make(chan struct{}), unpause: make(chan struct{}),
	}
	go c.recvLoop(st)
	s.track(c)
	return c, nil
}

// openAt opens (or attaches again to) a stream at the MWS of r.
func (s *Session) openAt(ctx context.Context, r *route, open *mwsv1.StreamOpen) (mwsv1.Device_StreamClient, *mwsv1.StreamOpened, error) {
	// The call lives as long as ctx (the Conn's base context); a call that
	// fails here has ended already.
	st, first, err := startStream(s.ctx(ctx), r, open)
	if err != nil {
		return nil, nil, err
	}
	op := first.GetOpened()
	if op == nil {
		return nil, nil, errors.New("clientlib: stream: first message is not Opened")
	}
	return st, op, nil
}

// startStream begins a Stream call at r's MWS with open and returns its
// first answer.
func startStream(ctx context.Context, r *route, open *mwsv1.StreamOpen) (mwsv1.Device_StreamClient, *mwsv1.StreamResponse, error) {
	st, err := r.api.Stream(ctx)
	if err == nil {
		err = st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Open{Open: open}})
		if errors.Is(err, io.EOF) {
			err = nil // the MWS ended the call: Recv returns its status
		}
	}
	var first *mwsv1.StreamResponse
	if err == nil {
		first, err = st.Recv()
	}
	if err != nil {
		return nil, nil, err
	}
	return st, first, nil
}

// followOpen follows the session to the MWS of t and attaches the stream
// there in one call: the Stream call carries the move token, and that MWS
// moves the session in (answering MovedIn) before it opens the stream.
// It returns no call and no error when there is nothing to follow (another
// call followed already), and an error when the stream did not attach:
// the session may have moved in all the same, and then its route is the
// new MWS.
func (c *Conn) followOpen(t *mwsv1.MoveTarget, from *route) (mwsv1.Device_StreamClient, *mwsv1.StreamOpened, error) {
	s := c.s
	s.followMu.Lock()
	defer s.followMu.Unlock()
	if s.route() != from || from.addr == t.GetMws().GetAddr() {
		return nil, nil, nil
	}
	r, err := s.c.dialRoute(t.GetMws().GetAddr())
	if err != nil {
		return nil, nil, err
	}
	t0 := time.Now()
	ctx, cancel := context.WithCancel(c.base)
	st, m, err := startStream(metadata.AppendToOutgoingContext(s.ctx(ctx), "imash-move-token", t.GetToken()), r,
		&mwsv1.StreamOpen{SessionId: s.id, StreamId: c.streamID, ResumeOffset: c.recvNext})
	if err == nil && m.GetMovedIn() == nil {
		err = fmt.Errorf("clientlib: %s answered a move-in stream without MovedIn", t.GetMws().GetName())
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	// The call's peer tells whether TLS was resumed (grpc.Peer fills in
	// only when a stream ends).
	p, _ := peer.FromContext(st.Context())
	s.movedIn(r, from, m.GetMovedIn(), time.Since(t0), p)
	if m, err = st.Recv(); err == nil && m.GetOpened() == nil {
		err = fmt.Errorf("clientlib: %s answered MovedIn without Opened", t.GetMws().GetName())
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	go func() {
		<-st.Context().Done()
		cancel()
	}()
	return st, m.GetOpened(), nil
}

// movable reports whether err ends a stream that goes on elsewhere: the
// session or the stream moved, or the MWS went away.
func movable(err error) bool {
	switch rpcerr.Reason(err) {
	case "STREAM_MOVED", "SESSION_MOVED", "SESSION_MOVING",
		// A key that rotated while the call was made (reattach tries a
		// bounded number of times).
		"BAD_SESSION_KEY":
		return true
	case "":
		return rpcerr.Code(err) == codes.Unavailable
	}
	return false
}

// reattach continues the stream after cause ended its call: it follows the
// session if it moved, attaches again from the last byte received, and
// sends again the written bytes the mux has not accepted. It returns the
// new call, or nil when the stream cannot go on.
func (c *Conn) reattach(cause error) mwsv1.Device_StreamClient {
	backoff := 10 * time.Millisecond
	for attempt := 0; attempt < 8 && movable(cause); attempt++ {
		if c.isStopped() {
			return nil
		}
		r := c.s.route()
		if t := moveTarget(cause); t != nil && t.GetToken() != "" {
			// Follow and attach in one call.
			st, op, err := c.followOpen(t, r)
			if st != nil {
				return c.attached(st, op, t.GetMws().GetName())
			}
			if err != nil && !unreachable(err) {
				// Why it did not attach there (an unreachable MWS is
				// looked for elsewhere as the move's).
				cause = err
				if moveTarget(err) != nil {
					continue // it moved on: follow it there
				}
			}
		}
		if cur := c.s.route(); cur != r {
			r = cur // followed meanwhile, by this call or another
		} else if c.s.recover(c.base, cause, r) {
			r = c.s.route()
		}
		st, op, err := c.s.openAt(c.base, r, &mwsv1.StreamOpen{SessionId: c.s.id, StreamId: c.streamID, ResumeOffset: c.recvNext})
		if err == nil {
			return c.attached(st, op, r.name())
		}
		cause = err
		if moveTarget(err) != nil {
			continue // follow at once
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.base.Done():
			t.Stop()
			return nil
		}
		backoff = min(2*backoff, time.Second)
	}
	return nil
}

// attached makes st, which opened with op at the MWS named mws, the Conn's
// call, and sends again what the mux has not accepted.
func (c *Conn) attached(st mwsv1.Device_StreamClient, op *mwsv1.StreamOpened, mws string) mwsv1.Device_StreamClient {
	c.resend(st, op.UpOffset)
	c.s.c.log.Info("stream attached again", "session", c.s.id, "stream", c.streamID, "mws", mws, "down_offset", c.recvNext, "up_offset", op.UpOffset)
	return st
}

// resend makes st the Conn's call and sends on it the retained bytes from
// the mux's accepted offset up on, and the half-close if one was asked.
func (c *Conn) resend(st mwsv1.Device_StreamClient, accepted uint64) {
	c.sendMu.Lock()
	c.st = st
	// The sends may wait for flow control, which needs recvLoop to go on
	// reading: they run on their own, holding sendMu so that later writes
	// follow them.
	go c.resendLocked(st, accepted)
}

func (c *Conn) resendLocked(st mwsv1.Device_StreamClient, accepted uint64) {
	defer c.sendMu.Unlock()
	// The last acknowledgement may have gone down with the old call: the
	// mux would then hold its retention window full of bytes the app has
	// read, and send nothing more. Acknowledge again first.
	if a := c.lastAck; a > 0 {
		if err := st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Ack{Ack: &mwsv1.StreamAck{Offset: a}}}); err != nil {
			return
		}
	}
	c.noteUpAck(accepted)
	c.retMu.Lock()
	chunks := slices.Clone(c.retained)
	c.retMu.Unlock()
	for _, ch := range chunks {
		if ch.off+uint64(len(ch.data)) <= accepted {
			continue
		}
		data, off := ch.data, ch.off
		if off < accepted {
			data, off = data[accepted-off:], accepted
		}
		if err := st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Data{Data: &mwsv1.StreamData{Offset: off, Data: data}}}); err != nil {
			return // the new call failed too: recvLoop sees why
		}
	}
	if c.closeWrOn {
		_ = st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_CloseWrite{CloseWrite: &mwsv1.StreamCloseWrite{Offset: c.upNext}}})
	}
}

// noteUpAck records that the mux accepted every up byte before off and
// drops them from the retained bytes.
func (c *Conn) noteUpAck(off uint64) {
	c.ackMu.Lock()
	if off > c.upAcked {
		c.upAcked = off
		close(c.ackWake)
		c.ackWake = make(chan struct{})
	}
	c.ackMu.Unlock()
	c.retMu.Lock()
	i := 0
	for i < len(c.retained) && c.retained[i].off+uint64(len(c.retained[i].data)) <= off {
		c.retBytes -= len(c.retained[i].data)
		c.retained[i] = upChunk{}
		i++
	}
	c.retained = c.retained[i:]
	c.retMu.Unlock()
}

func (c *Conn) isStopped() bool {
	c.retMu.Lock()
	defer c.retMu.Unlock()
	return c.stopped
}

func (c *Conn) stop() {
	c.retMu.Lock()
	c.stopped = true
	c.retMu.Unlock()
}

// StreamID identifies the stream within its session (for Resume).
func (c *Conn) StreamID() string { return c.streamID }

// Offsets returns how many bytes the app has read and written so far.
func (c *Conn) Offsets() (read, written uint64) {
	c.readMu.Lock()
	read = c.next
	c.readMu.Unlock()
	c.sendMu.Lock()
	written = c.upNext
	c.sendMu.Unlock()
	return read, written
}

func (c *Conn) recvLoop(st mwsv1.Device_StreamClient) {
	defer func() {
		c.qMu.Lock()
		close(c.recvDone)
		close(c.qWake)
		c.qWake = nil
		c.qMu.Unlock()
	}()
	for {
		m, err := st.Recv()
		if err != nil {
			if movable(err) && !c.isStopped() {
				if nst := c.reattach(err); nst != nil {
					st = nst
					continue
				}
			}
			if !errors.Is(err, io.EOF) {
				c.recvErr = err
			}
			return
		}
		if a := m.GetUpAck(); a != nil {
			c.noteUpAck(a.Offset)
			continue
		}
		if d := m.GetData(); d != nil {
			c.recvNext = d.Offset + uint64(len(d.Data))
		}
		c.qMu.Lock()
		c.queue = append(c.queue, m)
		close(c.qWake)
		c.qWake = make(chan struct{})
		c.qMu.Unlock()
	}
}

// pop takes the next queued message; wake is non-nil when the queue is
// empty but may grow, and ended reports that nothing more will come.
func (c *Conn) pop() (m *mwsv1.StreamResponse, wake <-chan struct{}, ended bool) {
	c.qMu.Lock()
	defer c.qMu.Unlock()
	if len(c.queue) > 0 {
		m = c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		return m, nil, false
	}
	if c.qWake == nil {
		return nil, nil, true
	}
	return nil, c.qWake, false
}

func (c *Conn) send(m *mwsv1.StreamRequest) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.st.Send(m)
}

// errPaused makes readLocked give the lock back while a handoff freezes
// the stream.
var errPaused = errors.New("clientlib: paused")

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if err := c.waitRunning(); err != nil {
			return 0, err
		}
		c.readMu.Lock()
		n, err := c.readLocked(p)
		c.readMu.Unlock()
		if !errors.Is(err, errPaused) {
			return n, err
		}
	}
}

// waitRunning blocks while a handoff freezes the stream.
func (c *Conn) waitRunning() error {
	for {
		c.dlMu.Lock()
		paused, released, wake := c.paused, c.released, c.unpause
		c.dlMu.Unlock()
		if released {
			return ErrHandedOff
		}
		if !paused {
			return nil
		}
		<-wake
	}
}

func (c *Conn) isPaused() bool {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	return c.paused || c.released
}

func (c *Conn) readLocked(p []byte) (int, error) {
	if c.isPaused() {
		return 0, errPaused
	}
	for len(c.buf) == 0 {
		if c.next > c.acked {
			c.ackLocked()
		}
		if c.readErr != nil {
			return 0, c.readErr
		}
		m, err := c.recv()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, errPaused) {
				return 0, err
			}
			c.readErr = err
			return 0, err
		}
		switch m := m.Msg.(type) {
		case *mwsv1.StreamResponse_Data:
			if m.Data.Offset != c.next {
				c.readErr = fmt.Errorf("clientlib: stream data at offset %d, want %d", m.Data.Offset, c.next)
				return 0, c.readErr
			}
			c.buf = m.Data.Data
		case *mwsv1.StreamResponse_Eof:
			if m.Eof.Error != "" {
				c.readErr = fmt.Errorf("clientlib: legacy server: %s", m.Eof.Error)
			} else {
				c.readErr = io.EOF
			}
		case *mwsv1.StreamResponse_Closed:
			if c.readErr == nil {
				c.readErr = io.EOF
			}
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	c.next += uint64(n)
	if c.next-c.acked >= ackEvery {
		c.ackLocked()
	}
	return n, nil
}

func (c *Conn) ackLocked() {
	if err := c.sendAck(c.next); err == nil {
		c.acked = c.next
	}
}

// sendAck acknowledges the down bytes before off on the current call. The
// offset is recorded under sendMu with the send, so that a move, which
// takes sendMu to switch calls, acknowledges it again on the new call if
// this one went down with the old.
func (c *Conn) sendAck(off uint64) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.lastAck = off
	return c.st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Ack{Ack: &mwsv1.StreamAck{Offset: off}}})
}

func (c *Conn) recv() (*mwsv1.StreamResponse, error) {
	for {
		c.dlMu.Lock()
		dl, change, paused := c.deadline, c.dlChange, c.paused || c.released
		c.dlMu.Unlock()
		if paused {
			return nil, errPaused
		}
		var timeout <-chan time.Time
		var timer *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		m, wake, ended := c.pop()
		if m != nil || ended {
			if timer != nil {
				timer.Stop()
			}
			if m != nil {
				return m, nil
			}
			if c.recvErr != nil {
				return nil, c.recvErr
			}
			return nil, io.EOF
		}
		select {
		case <-wake:
			if timer != nil {
				timer.Stop()
			}
		case <-timeout:
			return nil, os.ErrDeadlineExceeded
		case <-change:
			if timer != nil {
				timer.Stop()
			}
		}
	}
}

// Write implements net.Conn.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.waitRunning(); err != nil {
		return 0, err
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	written := 0
	for written < len(p) {
		n := min(len(p)-written, maxChunk)
		if err := c.waitRoom(n); err != nil {
			return written, err
		}
		data := slices.Clone(p[written : written+n])
		c.sendMu.Lock()
		off := c.upNext
		c.retMu.Lock()
		c.retained = append(c.retained, upChunk{off: off, data: data})
		c.retBytes += n
		c.retMu.Unlock()
		// A failed send is not the caller's error: the bytes are retained
		// and sent again when the stream goes on (recvLoop decides).
		_ = c.st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Data{Data: &mwsv1.StreamData{Offset: off, Data: data}}})
		c.upNext += uint64(n)
		c.sendMu.Unlock()
		written += n
	}
	return written, nil
}

// CloseWrite half-closes towards the legacy server after every byte
// written so far; reading goes on.
func (c *Conn) CloseWrite() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.closeWrOn = true
	// Like Write: a failed send is repeated when the stream goes on.
	_ = c.st.Send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_CloseWrite{CloseWrite: &mwsv1.StreamCloseWrite{Offset: c.upNext}}})
	select {
	case <-c.recvDone:
		if c.recvErr != nil {
			return c.recvErr
		}
	default:
	}
	return nil
}

// Close closes the legacy connection and waits (up to 10 s) for the MWS to
// confirm.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.stop()
		defer c.s.untrack(c)
		defer c.cancel()
		if err = c.send(&mwsv1.StreamRequest{Msg: &mwsv1.StreamRequest_Close{Close: &mwsv1.StreamClose{}}}); err != nil {
			if errors.Is(err, io.EOF) {
				err = nil // the MWS already ended the stream: it is closed
			}
			return
		}
		timer := time.NewTimer(10 * time.Second)
		defer timer.Stop()
		for {
			m, wake, ended := c.pop()
			if ended || (m != nil && m.GetClosed() != nil) {
				return
			}
			if m != nil {
				continue
			}
			select {
			case <-wake:
			case <-timer.C:
				err = errors.New("clientlib: close: no confirmation from the MWS")
				return
			}
		}
	})
	return err
}

// Detach ends this connection to the stream without closing the legacy
// connection; Resume attaches again.
func (c *Conn) Detach() {
	c.stop()
	c.cancel()
	c.s.untrack(c)
}

// setPause changes the pause state and wakes readers and writers.
func (c *Conn) setPause(paused, released bool) {
	c.dlMu.Lock()
	c.paused, c.released = paused, released
	close(c.dlChange)
	c.dlChange = make(chan struct{})
	close(c.unpause)
	c.unpause = make(chan struct{})
	c.dlMu.Unlock()
}

// freeze prepares the stream for a handoff's savepoint: reads and writes
// pause, every byte the app wrote is awaited until the mux has accepted it,
// and every byte the app has read is acknowledged (bytes received but not
// read will be delivered again to whoever resumes). It returns the offset
// the app has read to. The stream stays attached: thaw resumes it if the
// handoff fails, release ends it once the savepoint is stored.
func (c *Conn) freeze(ctx context.Context) (uint64, error) {
	c.setPause(true, false)
	c.sendMu.Lock()
	want := c.upNext
	c.sendMu.Unlock()
	for {
		c.ackMu.Lock()
		got, wake := c.upAcked, c.ackWake
		c.ackMu.Unlock()
		if got >= want {
			break
		}
		select {
		case <-wake:
		case <-c.recvDone:
			return 0, fmt.Errorf("clientlib: stream %s ended before its bytes were accepted", c.streamID)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	c.readMu.Lock()
	read := c.next
	err := c.sendAck(read)
	if err == nil {
		c.acked = read
	}
	c.readMu.Unlock()
	return read, err
}

// ended reports that the MWS has ended the stream (it was closed or
// finished): there is nothing left to hand off.
func (c *Conn) ended() bool {
	select {
	case <-c.recvDone:
		return true
	default:
		return false
	}
}

// thaw resumes a frozen stream (the handoff failed before its savepoint
// was stored).
func (c *Conn) thaw() { c.setPause(false, false) }

// release ends a frozen stream on this device: the savepoint is stored and
// whoever resumes the session continues it.
func (c *Conn) release() {
	c.setPause(false, true)
	c.Detach()
}

// ErrHandedOff is returned by a Conn whose session was handed to another
// device.
var ErrHandedOff = errors.New("clientlib: the session was handed off")

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return streamAddr("device") }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return streamAddr(c.backend + "/" + c.streamID) }

// SetDeadline implements net.Conn; it sets the read deadline.
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	c.deadline = t
	close(c.dlChange)
	c.dlChange = make(chan struct{})
	c.dlMu.Unlock()
	return nil
}

// SetWriteDeadline implements net.Conn. Writes are paced by flow control
// and no write deadline is kept.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

type streamAddr string

func (a streamAddr) Network() string { return "imash" }
func (a streamAddr) String() string  { return string(a) }

// waitRoom waits until n more bytes may be retained, or the stream ended.
func (c *Conn) waitRoom(n int) error {
	for {
		c.ackMu.Lock()
		wake := c.ackWake
		c.ackMu.Unlock()
		c.retMu.Lock()
		room := c.retBytes == 0 || c.retBytes+n <= maxRetained
		c.retMu.Unlock()
		if room {
			return nil
		}
		select {
		case <-wake:
		case <-c.recvDone:
			if c.recvErr != nil {
				return c.recvErr
			}
			return io.ErrClosedPipe
		}
	}
}
