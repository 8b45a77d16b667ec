package mws

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

func (d *deviceService) ListDevices(ctx context.Context, _ *mwsv1.ListDevicesRequest) (*mwsv1.ListDevicesResponse, error) {
	p := principalFrom(ctx)
	s := d.s
	devs := s.registry.list(p.user, s.cfg.Name, s.cfg.Policy.Class)
	// Devices on other MWSs are handoff targets too (FASH).
	if m := s.cfg.Cluster.Membership; m != nil {
		for _, loc := range m.Devices(p.user) {
			if loc.MWS == s.cfg.Name {
				continue
			}
			i := slices.IndexFunc(devs, func(d *mwsv1.DeviceInfo) bool { return d.Name == loc.Name })
			switch {
			case i < 0:
				devs = append(devs, &mwsv1.DeviceInfo{Name: loc.Name, DeviceClass: s.cfg.Policy.Class(loc.Name), Online: loc.Online,
					Mws: loc.MWS, LastSeenUnixNano: loc.Updated.UnixNano()})
			case loc.Online && !devs[i].Online:
				devs[i].Online, devs[i].Mws = true, loc.MWS
				devs[i].LastSeenUnixNano = max(devs[i].LastSeenUnixNano, loc.Updated.UnixNano())
			}
		}
		slices.SortFunc(devs, func(a, b *mwsv1.DeviceInfo) int { return strings.Compare(a.Name, b.Name) })
	}
	return &mwsv1.ListDevicesResponse{Devices: devs}, nil
}

// Handoff runs a CASH for its source device; see the proto for the order.
func (d *deviceService) Handoff(hs mwsv1.Device_HandoffServer) error {
	s := d.s
	ctx := hs.Context()
	p := principalFrom(ctx)
	first, err := hs.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return rpcerr.New(codes.InvalidArgument, "START_REQUIRED", "the first message of Handoff must be a HandoffStart")
	}
	ss, err := s.session(ctx, start.GetSessionId())
	if err != nil {
		return err
	}
	target := start.GetTargetDevice()
	if target == p.device {
		return rpcerr.New(codes.InvalidArgument, "SAME_DEVICE", "the session is already on %q", target)
	}
	known, online := s.registry.known(p.user, target)
	// A target served by another MWS makes this a FASH.
	var remote PeerInfo
	fash := false
	if !online {
		remote, fash = s.deviceElsewhere(p.user, target)
	}
	if !known && !fash {
		return rpcerr.New(codes.NotFound, "UNKNOWN_DEVICE", "%q is not one of user %q's devices", target, p.user)
	}
	ss.mu.Lock()
	app, labels := ss.app, slices.Clone(ss.labels)
	ss.mu.Unlock()
	if err := s.cfg.Policy.Check(app, labels, s.cfg.Policy.Class(target)); err != nil {
		s.log.Warn("handoff denied by policy", "session", ss.id, "device", target, "error", err)
		return err
	}
	h := newHandoff(ss, p.device, target)
	ss.mu.Lock()
	if ss.handoff != nil {
		ss.mu.Unlock()
		return rpcerr.New(codes.FailedPrecondition, "HANDOFF_IN_PROGRESS", "session %s is already being handed off", ss.id)
	}
	ss.handoff = h
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		if ss.handoff == h {
			ss.handoff = nil
		}
		ss.mu.Unlock()
		s.handoffs.unpark(h)
	}()
	log := s.log.With("handoff", h.id, "session", ss.id, "device", p.device, "target", target)
	if fash {
		log = log.With("target_mws", remote.Name)
		log.Info("handoff requested (FASH)")
		err = s.runFash(ctx, hs, h, start, remote, log)
	} else {
		log.Info("handoff requested")
		err = s.runHandoff(ctx, hs, h, start, online, log)
	}
	if err == nil {
		return nil
	}
	if !h.fail(err) {
		return nil // the target resumed after all
	}
	log.Info("handoff rolled back", "error", err)
	return err
}

// runHandoff drives a handoff for the source until the target resumes.
func (s *Server) runHandoff(ctx context.Context, hs mwsv1.Device_HandoffServer, h *handoff, start *mwsv1.HandoffStart, online bool, log *slog.Logger) error {
	ss := h.ss
	// 1-2: offer to the target, which consents and prepares a skeleton.
	timeout := s.cfg.ConsentTimeout
	if ms := start.GetConsentTimeoutMs(); ms > 0 {
		timeout = min(timeout, time.Duration(ms)*time.Millisecond)
	}
	offerTTL := timeout
	if !online {
		offerTTL = s.cfg.ParkExpiry
	}
	tok, exp := s.handoffs.issue(h, h.target, purposeOffer, offerTTL)
	offer := &mwsv1.HandoffOffer{HandoffId: h.id, Token: tok, User: h.user, App: h.app, Labels: h.labels, FromDevice: h.source, ExpiresUnixNano: exp.UnixNano()}
	ev := &mwsv1.Event{UnixNano: time.Now().UnixNano(), Msg: &mwsv1.Event_Offer{Offer: offer}}
	if !online || !s.events.publish(h.target, ev) {
		timeout = s.cfg.ParkExpiry
		s.handoffs.park(h.target, &parkedOffer{h: h, offer: offer})
		log.Info("target offline: session parked", "expires", exp)
		if err := hs.Send(&mwsv1.HandoffServerMsg{Msg: &mwsv1.HandoffServerMsg_Parked{Parked: &mwsv1.HandoffParked{ExpiresUnixNano: exp.UnixNano()}}}); err != nil {
			return err
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case a := <-h.answer:
		if !a.accept {
			return rpcerr.New(codes.FailedPrecondition, "TARGET_REFUSED", "device %q refused the session: %s", h.target, a.reason)
		}
	case <-timer.C:
		return rpcerr.New(codes.DeadlineExceeded, "TARGET_TIMEOUT", "device %q did not answer within %v", h.target, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	s.handoffs.unpark(h)
	h.mu.Lock()
	h.timings.SkeletonUs = time.Since(h.started).Microseconds()
	h.mu.Unlock()

	// Overlap: adapt the session's objects for the target while the source
	// savepoints.
	ss.mu.Lock()
	digests := make([]string, 0, len(ss.objects))
	for dg := range ss.objects {
		digests = append(digests, dg)
	}
	ss.mu.Unlock()
	prepCtx, cancelPrep := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPrep()
	go h.prepare(prepCtx, s, digests)

	// 3: invite the source to savepoint; store; acknowledge.
	if err := s.takeSavepoint(ctx, hs, h, log); err != nil {
		return err
	}
	h.setState(hoAccepted, hoSavepointed)

	// 4: the summary to the target, which selects and resumes (Resume).
	ss.mu.Lock()
	summary := s.summaryLocked(ss)
	ss.mu.Unlock()
	xmlDoc, _ := SummaryXML(h.id, summary)
	var cause error
	if !s.events.publish(h.target, &mwsv1.Event{UnixNano: time.Now().UnixNano(), Msg: &mwsv1.Event_Summary{Summary: &mwsv1.StateSummary{HandoffId: h.id, Elements: summary, Xml: xmlDoc}}}) {
		cause = rpcerr.New(codes.Unavailable, "TARGET_GONE", "device %q went offline", h.target)
	} else {
		resumeTimer := time.NewTimer(s.cfg.ResumeTimeout)
		defer resumeTimer.Stop()
		select {
		case cause = <-h.finished:
		case <-resumeTimer.C:
			cause = rpcerr.New(codes.DeadlineExceeded, "TARGET_TIMEOUT", "device %q did not resume within %v", h.target, s.cfg.ResumeTimeout)
		case <-s.bgCtx.Done():
			// The source may be gone by now (it dropped its state at the
			// acknowledgement), so only this MWS stopping ends the wait.
			cause = rpcerr.New(codes.Unavailable, "MWS_STOPPING", "MWS %s is stopping", s.cfg.Name)
		}
	}
	if cause != nil {
		if err := s.rollBack(hs, h, cause); err != nil {
			return err
		}
		// The target resumed just before the rollback could happen.
	}
	h.mu.Lock()
	t := h.timings
	h.mu.Unlock()
	log.Info("handoff done", "total_us", t.TotalUs, "skeleton_us", t.SkeletonUs, "state_upload_us", t.StateUploadUs,
		"adaptation_us", t.AdaptationUs, "delivery_us", t.DeliveryUs, "resume_us", t.ResumeUs)
	return hs.Send(&mwsv1.HandoffServerMsg{Msg: &mwsv1.HandoffServerMsg_Done{Done: &mwsv1.HandoffDone{Timings: t.proto()}}})
}

// takeSavepoint invites the source to savepoint, stores the upload in the
// session and acknowledges it (step 3 of a handoff).
func (s *Server) takeSavepoint(ctx context.Context, hs mwsv1.Device_HandoffServer, h *handoff, log *slog.Logger) error {
	ss := h.ss
	tUp := time.Now()
	if err := hs.Send(&mwsv1.HandoffServerMsg{Msg: &mwsv1.HandoffServerMsg_Invite{Invite: &mwsv1.SavepointInvite{HandoffId: h.id}}}); err != nil {
		return err
	}
	els, err := recvSavepoint(ctx, hs, s.cfg.SavepointTimeout, s.cfg.MaxSavepointElements)
	if err != nil {
		return err
	}
	if err := s.checkSavepoint(ss, els); err != nil {
		return err
	}
	ss.mu.Lock()
	before := maps.Clone(ss.savepoint)
	n, bytes := mergeSavepointLocked(ss, els)
	ss.mu.Unlock()
	// Acknowledged only once a peer holds it too.
	if err := s.replicate(ctx, ss); err != nil {
		ss.mu.Lock()
		ss.savepoint = before
		ss.mu.Unlock()
		return err
	}
	h.mu.Lock()
	h.timings.StateUploadUs = time.Since(tUp).Microseconds()
	h.mu.Unlock()
	if err := hs.Send(&mwsv1.HandoffServerMsg{Msg: &mwsv1.HandoffServerMsg_Ack{Ack: &mwsv1.SavepointAck{Elements: int32(n), Bytes: bytes}}}); err != nil {
		return err
	}
	log.Info("savepoint stored", "elements", n, "bytes", bytes)
	return nil
}

// rollBack fails h after the savepoint was acknowledged: the session stays
// with the source, which gets a token to take its state back with Resume.
func (s *Server) rollBack(hs mwsv1.Device_HandoffServer, h *handoff, cause error) error {
	if !h.fail(cause) {
		return nil // the target resumed after all
	}
	tok := s.restoreToken(h.ss, h.source)
	_ = hs.Send(&mwsv1.HandoffServerMsg{Msg: &mwsv1.HandoffServerMsg_RolledBack{RolledBack: &mwsv1.HandoffRolledBack{Token: tok, Reason: cause.Error()}}})
	return cause
}

// restoreToken issues a resume token with which device, which holds ss,
// takes its stored state back (after a rollback, or with Reclaim). Nothing
// is adapted: the device gets what it had.
func (s *Server) restoreToken(ss *session, device string) string {
	back := newHandoff(ss, device, device)
	back.rollback = true
	back.state = hoSavepointed
	close(back.prepDone)
	tok, _ := s.handoffs.issue(back, device, purposeResume, s.cfg.ConsentTimeout+s.cfg.ResumeTimeout)
	return tok
}

// recvSavepoint reads SavepointUpload messages until one is final.
func recvSavepoint(ctx context.Context, hs mwsv1.Device_HandoffServer, timeout time.Duration, maxElements int) ([]*mwsv1.Element, error) {
	type res struct {
		els []*mwsv1.Element
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var els []*mwsv1.Element
		for {
			m, err := hs.Recv()
			if errors.Is(err, io.EOF) {
				ch <- res{err: rpcerr.New(codes.Aborted, "SOURCE_GONE", "the source closed the call before its savepoint was complete")}
				return
			}
			if err != nil {
				ch <- res{err: err}
				return
			}
			up := m.GetSavepoint()
			if up == nil {
				ch <- res{err: rpcerr.New(codes.InvalidArgument, "SAVEPOINT_EXPECTED", "expected a SavepointUpload")}
				return
			}
			els = append(els, up.GetElements()...)
			if len(els) > maxElements {
				ch <- res{err: rpcerr.New(codes.InvalidArgument, "SAVEPOINT_TOO_LARGE", "more than %d elements", maxElements)}
				return
			}
			if up.GetFinal() {
				ch <- res{els: els}
				return
			}
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.els, r.err
	case <-timer.C:
		return nil, rpcerr.New(codes.DeadlineExceeded, "SAVEPOINT_TIMEOUT", "no complete savepoint within %v", timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// AnswerOffer records the target's consent or refusal.
func (d *deviceService) AnswerOffer(ctx context.Context, req *mwsv1.AnswerOfferRequest) (*mwsv1.AnswerOfferResponse, error) {
	p := principalFrom(ctx)
	h, err := d.s.handoffs.use(req.GetToken(), p.device, purposeOffer)
	if err != nil {
		return nil, err
	}
	if len(req.GetReason()) > 1024 {
		return nil, rpcerr.New(codes.InvalidArgument, "FIELD_TOO_LONG", "reason too long")
	}
	if !req.GetAccept() {
		select {
		case h.answer <- offerAnswer{accept: false, reason: req.GetReason()}:
		default:
		}
		return &mwsv1.AnswerOfferResponse{}, nil
	}
	if !h.setState(hoOffered, hoAccepted) {
		return nil, rpcerr.New(codes.FailedPrecondition, "HANDOFF_OVER", "the handoff is no longer waiting for consent")
	}
	tok, _ := d.s.handoffs.issue(h, p.device, purposeResume, d.s.cfg.SavepointTimeout+d.s.cfg.ResumeTimeout)
	h.answer <- offerAnswer{accept: true}
	return &mwsv1.AnswerOfferResponse{ResumeToken: tok}, nil
}

// Resume delivers the selected elements to the target and makes the
// session its own.
func (d *deviceService) Resume(req *mwsv1.ResumeRequest, out mwsv1.Device_ResumeServer) error {
	s := d.s
	ctx := out.Context()
	p := principalFrom(ctx)
	h, err := s.handoffs.use(req.GetToken(), p.device, purposeResume)
	if err != nil {
		return err
	}
	err = s.resume(ctx, req, out, h, p)
	if !h.rollback {
		select {
		case h.finished <- err:
		default:
		}
	}
	return err
}

func (s *Server) resume(ctx context.Context, req *mwsv1.ResumeRequest, out mwsv1.Device_ResumeServer, h *handoff, p principal) error {
	h.mu.Lock()
	ss := h.ss // a FASH target's MWS learns it when the state arrives
	h.mu.Unlock()
	if h.rollback {
		ss.mu.Lock()
		dev := ss.device
		ss.mu.Unlock()
		if dev != p.device {
			return rpcerr.New(codes.FailedPrecondition, "HANDOFF_OVER", "the session is no longer on this device")
		}
	} else {
		h.mu.Lock()
		st := h.state
		h.mu.Unlock()
		if st != hoSavepointed {
			return rpcerr.New(codes.FailedPrecondition, "NOT_READY", "the handoff has no stored savepoint to resume (state %d)", st)
		}
	}
	select {
	case <-h.prepDone:
	case <-ctx.Done():
		return ctx.Err()
	}

	ss.mu.Lock()
	var els []*storedElement
	if len(req.GetSelect()) == 0 {
		for _, e := range ss.savepoint {
			els = append(els, e)
		}
	} else {
		for _, name := range req.GetSelect() {
			e := ss.savepoint[name]
			if e == nil {
				ss.mu.Unlock()
				return rpcerr.New(codes.InvalidArgument, "UNKNOWN_ELEMENT", "the savepoint has no element %q", name)
			}
			els = append(els, e)
		}
	}
	app, labels := ss.app, slices.Clone(ss.labels)
	ss.mu.Unlock()
	slices.SortFunc(els, func(a, b *storedElement) int { return strings.Compare(a.name, b.name) })

	tDel := time.Now()
	for _, e := range els {
		de := &mwsv1.DeliveredElement{Name: e.name, Kind: e.kind, ContentType: e.contentType, StreamId: e.streamID, StreamOffset: e.streamOffset}
		switch e.kind {
		case mwsv1.ElementKind_ELEMENT_KIND_SERVER_OBJECT:
			v, ok := s.objectVariant(ctx, h, e.digest)
			if !ok {
				return rpcerr.New(codes.FailedPrecondition, "OBJECT_EVICTED", "object %q of element %q is no longer cached", e.digest, e.name)
			}
			if v.err != nil {
				return rpcerr.New(codes.Internal, "ADAPTATION_FAILED", "element %q: %v", e.name, v.err)
			}
			de.Data, de.ContentType, de.Adapted, de.Digest = v.data, v.contentType, v.adapted, e.digest
		case mwsv1.ElementKind_ELEMENT_KIND_APP_OBJECT, mwsv1.ElementKind_ELEMENT_KIND_PROGRESS:
			de.Data = e.data
		}
		if err := out.Send(&mwsv1.ResumeResponse{Msg: &mwsv1.ResumeResponse_Element{Element: de}}); err != nil {
			return err
		}
	}
	tRes := time.Now()

	// Commit: the session becomes the target's, with a new key, unless the
	// handoff was rolled back meanwhile.
	ss.mu.Lock()
	h.mu.Lock()
	if !h.rollback && h.state != hoSavepointed {
		h.mu.Unlock()
		ss.mu.Unlock()
		return rpcerr.New(codes.Aborted, "HANDOFF_ABORTED", "the handoff was rolled back")
	}
	oldDevice, oldKey := ss.device, ss.keyHash
	ss.device = p.device
	key := ss.rotateKeyLocked()
	if !h.rollback {
		h.state = hoDone
	}
	h.timings.DeliveryUs = tRes.Sub(tDel).Microseconds()
	h.timings.ResumeUs = time.Since(tRes).Microseconds()
	h.timings.TotalUs = time.Since(h.started).Microseconds()
	t := h.timings
	h.mu.Unlock()
	ss.mu.Unlock()

	err := out.Send(&mwsv1.ResumeResponse{Msg: &mwsv1.ResumeResponse_Resumed{Resumed: &mwsv1.Resumed{
		SessionId: ss.id, SessionKey: key, App: app, Labels: labels, Timings: t.proto(),
	}}})
	if err != nil {
		// The target never got the new key: undo, so the source keeps the
		// session.
		ss.mu.Lock()
		h.mu.Lock()
		if ss.device == p.device && ss.keyHash == sha256Of(key) {
			ss.device, ss.keyHash = oldDevice, oldKey
			if !h.rollback {
				h.state = hoSavepointed
			}
		}
		h.mu.Unlock()
		ss.mu.Unlock()
		return err
	}
	// The replica learns the new key and device before this call ends: an
	// MWS that stops gracefully waits for it, so the device finds its
	// session with the key it was just given.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Cluster.MoveTimeout)
	if err := s.replicate(rctx, ss); err != nil {
		s.log.Warn("replicating a resumed session", "session", ss.id, "error", err)
	}
	cancel()
	s.log.Info("session resumed", "handoff", h.id, "session", ss.id, "device", p.device, "elements", len(els), "rollback", h.rollback)
	return nil
}

// Reclaim issues a resume token for a session bound to the calling device,
// so that it can take its stored state back without the session key.
func (d *deviceService) Reclaim(ctx context.Context, req *mwsv1.ReclaimRequest) (*mwsv1.ReclaimResponse, error) {
	s := d.s
	p := principalFrom(ctx)
	ss, err := s.sessions.owned(p, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	busy := ss.handoff != nil
	ss.mu.Unlock()
	if busy {
		return nil, rpcerr.New(codes.FailedPrecondition, "HANDOFF_IN_PROGRESS", "session %s is being handed off", ss.id)
	}
	tok := s.restoreToken(ss, p.device)
	s.log.Info("session reclaimed", "session", ss.id, "device", p.device)
	return &mwsv1.ReclaimResponse{ResumeToken: tok}, nil
}
