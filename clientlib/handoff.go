package clientlib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// ElementKind is the kind of a savepoint element.
type ElementKind = mwsv1.ElementKind

// The kinds of savepoint elements.
const (
	ServerObject = mwsv1.ElementKind_ELEMENT_KIND_SERVER_OBJECT
	AppObject    = mwsv1.ElementKind_ELEMENT_KIND_APP_OBJECT
	Progress     = mwsv1.ElementKind_ELEMENT_KIND_PROGRESS
	StreamState  = mwsv1.ElementKind_ELEMENT_KIND_STREAM
)

// Element is one piece of a semantic savepoint.
type Element struct {
	// Name is unique within the session (1-128 of [A-Za-z0-9._/-]).
	Name string
	Kind ElementKind
	// ContentType of an application object, e.g. "text/plain" or
	// "application/xml".
	ContentType string
	// Digest names a server object the session fetched (Object.Digest):
	// the MWS delivers it from its own copy; it is never uploaded.
	Digest string
	// Data is an application object's content.
	Data []byte
	// Private elements never leave the device.
	Private bool
}

// SavepointFunc returns the session's semantic state when the MWS asks for
// a savepoint. Open streams (Conns) are added by the library.
type SavepointFunc func(ctx context.Context) ([]Element, error)

// SetSavepointProvider registers the app's savepoint callback.
func (s *Session) SetSavepointProvider(f SavepointFunc) {
	s.mu.Lock()
	s.provider = f
	s.mu.Unlock()
}

// Timings decompose a handoff's latency (the paper's Fig. 6).
type Timings struct {
	Skeleton, StateUpload, Adaptation, Delivery, Resume, Total time.Duration
	// Move is, in a FASH (the target device is served by another MWS), the
	// move of the session's state and streams to that MWS; 0 otherwise.
	Move time.Duration
}

func timingsFrom(t *mwsv1.HandoffTimings) Timings {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Timings{Skeleton: us(t.GetSkeletonUs()), StateUpload: us(t.GetStateUploadUs()), Adaptation: us(t.GetAdaptationUs()),
		Delivery: us(t.GetDeliveryUs()), Resume: us(t.GetResumeUs()), Total: us(t.GetTotalUs()), Move: us(t.GetMoveUs())}
}

// ErrRolledBack wraps the cause of a handoff that failed after the
// savepoint was stored; Handoff has restored the session on this device.
var ErrRolledBack = errors.New("clientlib: handoff rolled back")

// HandoffOption adjusts a Handoff.
type HandoffOption func(*handoffOptions)

type handoffOptions struct {
	onParked func(expires time.Time)
}

// OnParked is called when the target is offline and the session waits for
// it (until expires); Handoff goes on waiting.
func OnParked(f func(expires time.Time)) HandoffOption {
	return func(o *handoffOptions) { o.onParked = f }
}

// HandoffResult is what the source learns of a completed handoff.
type HandoffResult struct {
	Timings Timings
	// Parked reports that the target was offline when asked.
	Parked bool
	// Restored is the state taken back from the MWS when the handoff was
	// rolled back after the savepoint was stored (the error then wraps
	// ErrRolledBack); the session is this device's again.
	Restored *Resumed
}

// Handoff moves this session to the user's device named target (CASH).
// On success the session belongs to the target and this Session (and its
// Conns) no longer work. On failure before the savepoint was stored the
// session is untouched; after it, the library takes the state back from the
// MWS (the result's Restored holds it) and the error wraps ErrRolledBack.
func (s *Session) Handoff(ctx context.Context, target string, opts ...HandoffOption) (*HandoffResult, error) {
	var o handoffOptions
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hs, err := s.route().api.Handoff(s.ctx(ctx))
	if err != nil {
		return nil, err
	}
	// io.EOF means the MWS already ended the call: Recv returns its status.
	if err := hs.Send(&mwsv1.HandoffClientMsg{Msg: &mwsv1.HandoffClientMsg_Start{Start: &mwsv1.HandoffStart{SessionId: s.id, TargetDevice: target}}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	res := &HandoffResult{}
	var frozen []*Conn
	// Until the MWS has stored the savepoint, a failure gives the streams
	// back to the app.
	stored := false
	defer func() {
		if !stored {
			for _, c := range frozen {
				c.thaw()
			}
		}
	}()
	from := s.route()
	for {
		m, err := hs.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("clientlib: handoff ended without an outcome")
			}
			if stored {
				// The MWS holding the savepoint failed: the cluster's
				// replica of the session takes it back.
				if r, rerr := s.reclaimLost(ctx, err, from); rerr == nil {
					res.Restored = r
					return res, fmt.Errorf("%w: %v", ErrRolledBack, err)
				}
			}
			return nil, err
		}
		switch m := m.Msg.(type) {
		case *mwsv1.HandoffServerMsg_Parked:
			res.Parked = true
			if o.onParked != nil {
				o.onParked(time.Unix(0, m.Parked.ExpiresUnixNano))
			}
		case *mwsv1.HandoffServerMsg_Invite:
			els, conns, err := s.savepoint(ctx)
			frozen = conns
			if err != nil {
				return nil, fmt.Errorf("clientlib: savepoint: %w", err)
			}
			if err := uploadSavepoint(hs, els); err != nil {
				return nil, err
			}
		case *mwsv1.HandoffServerMsg_Ack:
			// The MWS (and its replica) holds the state now: drop all
			// session knowledge but the key, which finds the replica
			// should this MWS fail before the target takes the session.
			stored = true
			for _, c := range frozen {
				c.release()
			}
			s.mu.Lock()
			s.handedOff = true
			s.mu.Unlock()
		case *mwsv1.HandoffServerMsg_Done:
			res.Timings = timingsFrom(m.Done.Timings)
			s.mu.Lock()
			s.key, s.prevKey = "", ""
			s.mu.Unlock()
			return res, nil
		case *mwsv1.HandoffServerMsg_RolledBack:
			cause := errors.New(m.RolledBack.Reason)
			r, err := s.c.resumeAt(ctx, s.route(), m.RolledBack.Token, nil)
			if err != nil {
				// The MWS stopped meanwhile: the replica takes over.
				if r2, rerr := s.reclaimLost(ctx, err, from); rerr == nil {
					r, err = r2, nil
				}
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %v; taking the state back failed: %v", ErrRolledBack, cause, err)
			}
			// Should this MWS fail before the replica heard of the new
			// key, the replica knows the one before.
			s.mu.Lock()
			old := s.key
			s.key, s.prevKey, s.handedOff = r.Session.key, old, false
			s.mu.Unlock()
			r.Session.mu.Lock()
			r.Session.prevKey = old
			r.Session.mu.Unlock()
			res.Restored = r
			return res, fmt.Errorf("%w: %v", ErrRolledBack, cause)
		}
	}
}

// reclaimLost takes the session back after the MWS that stored its
// savepoint failed (cause): the session is looked for with its key on the
// cluster's other MWSs, where its replica is taken up, and reclaimed there.
func (s *Session) reclaimLost(ctx context.Context, cause error, from *route) (*Resumed, error) {
	if !s.recover(ctx, cause, from) {
		return nil, cause
	}
	r := s.route()
	rc, err := r.api.Reclaim(ctx, &mwsv1.ReclaimRequest{SessionId: s.id})
	if err != nil {
		return nil, err
	}
	return s.c.resumeAt(ctx, r, rc.ResumeToken, nil)
}

// savepoint collects the app's elements and freezes open streams; it
// returns the frozen streams even on error, for the caller to thaw.
func (s *Session) savepoint(ctx context.Context) ([]*mwsv1.Element, []*Conn, error) {
	s.mu.RLock()
	provider := s.provider
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.RUnlock()
	var out []*mwsv1.Element
	if provider != nil {
		els, err := provider(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range els {
			if e.Private {
				continue
			}
			out = append(out, &mwsv1.Element{Name: e.Name, Kind: e.Kind, ContentType: e.ContentType, Digest: e.Digest, Data: e.Data})
		}
	}
	var frozen []*Conn
	for _, c := range conns {
		if c.ended() {
			s.untrack(c) // nothing left to move
			continue
		}
		off, err := c.freeze(ctx)
		frozen = append(frozen, c)
		if err != nil {
			return nil, frozen, err
		}
		out = append(out, &mwsv1.Element{Name: "stream/" + c.streamID, Kind: StreamState, StreamId: c.streamID, StreamOffset: off, ContentType: c.backend})
	}
	return out, frozen, nil
}

// uploadSavepoint sends elements in messages of at most ~2 MiB.
func uploadSavepoint(hs mwsv1.Device_HandoffClient, els []*mwsv1.Element) error {
	const budget = 2 << 20
	var batch []*mwsv1.Element
	size := 0
	flush := func(final bool) error {
		err := hs.Send(&mwsv1.HandoffClientMsg{Msg: &mwsv1.HandoffClientMsg_Savepoint{Savepoint: &mwsv1.SavepointUpload{Elements: batch, Final: final}}})
		batch, size = nil, 0
		return err
	}
	for _, e := range els {
		if size > 0 && size+len(e.Data) > budget {
			if err := flush(false); err != nil {
				return err
			}
		}
		batch = append(batch, e)
		size += len(e.Data) + len(e.Name) + 64
	}
	return flush(true)
}
