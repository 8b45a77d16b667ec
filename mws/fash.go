package mws

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// FASH is a CASH whose target device another MWS serves. The source's MWS
// (here: A) runs the exchange with the source device as in a CASH; the
// target's MWS (B) runs it with the target device, over the Peer Fash call:
//
//  1. A asks B (FashStart); B checks its policy, offers the session to its
//     device (or parks the offer) and relays the answer.
//  2. A stores the source's savepoint and acknowledges it.
//  3. A moves the session to B (MASH, without inviting the source device):
//     the mux hands the streams to B, and the savepoint and the original
//     server objects travel with it; A sends FashState.
//  4. B adapts the objects from the originals for its device, sends it the
//     summary and waits for its Resume, which makes the session the target
//     device's with a new key; B replies FashDone and A tells the source.
//
// If anything fails after step 3, B moves the session back to A before it
// ends the call, and A gives the source a restore token, as after a failed
// CASH: the session is never without an owner.

// deviceElsewhere finds, in the cluster's directory, the live MWS that
// serves user's device while the device is online there.
func (s *Server) deviceElsewhere(user, device string) (PeerInfo, bool) {
	m := s.cfg.Cluster.Membership
	if m == nil {
		return PeerInfo{}, false
	}
	name, online, ok := m.LookupDevice(user, device)
	if !ok || name == s.cfg.Name || !online {
		return PeerInfo{}, false
	}
	peers := m.Peers()
	i := slices.IndexFunc(peers, func(p PeerInfo) bool { return p.Name == name && p.Alive })
	if i < 0 {
		return PeerInfo{}, false
	}
	return peers[i], true
}

// runFash drives a FASH at the source's MWS.
func (s *Server) runFash(ctx context.Context, hs mwsv1.Device_HandoffServer, h *handoff, start *mwsv1.HandoffStart, peer PeerInfo, log *slog.Logger) error {
	api, err := s.peers.client(peer)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fs, err := api.Fash(fctx)
	if err != nil {
		return peerStatus(peer.Name, err)
	}
	timeout := s.cfg.ConsentTimeout
	if ms := start.GetConsentTimeoutMs(); ms > 0 {
		timeout = min(timeout, time.Duration(ms)*time.Millisecond)
	}
	err = fs.Send(&mwsv1.FashMsg{Msg: &mwsv1.FashMsg_Start{Start: &mwsv1.FashStart{
		HandoffId: h.id, User: h.user, App: h.app, Labels: h.labels, FromDevice: h.source, TargetDevice: h.target,
		ConsentTimeoutMs: timeout.Milliseconds()}}})
	if err != nil {
		return fashStatus(peer.Name, fs, err)
	}

	// 1: the target's consent, through its MWS.
	for accepted := false; !accepted; {
		m, err := fs.Recv()
		if err != nil {
			return fashStatus(peer.Name, fs, err)
		}
		switch m := m.Msg.(type) {
		case *mwsv1.FashReply_Parked:
			log.Info("target offline: session parked at its MWS", "expires", time.Unix(0, m.Parked.GetExpiresUnixNano()))
			if err := hs.Send(&mwsv1.HandoffServerMsg{Msg: &mwsv1.HandoffServerMsg_Parked{Parked: &mwsv1.HandoffParked{ExpiresUnixNano: m.Parked.GetExpiresUnixNano()}}}); err != nil {
				return err
			}
		case *mwsv1.FashReply_Answer:
			if !m.Answer.GetAccept() {
				return rpcerr.New(codes.FailedPrecondition, "TARGET_REFUSED", "device %q refused the session: %s", h.target, m.Answer.GetReason())
			}
			accepted = true
		default:
			return rpcerr.New(codes.Internal, "PEER_PROTOCOL", "MWS %s answered a FASH out of order", peer.Name)
		}
	}
	h.setState(hoOffered, hoAccepted)
	h.mu.Lock()
	h.timings.SkeletonUs = time.Since(h.started).Microseconds()
	h.mu.Unlock()

	// 2: the source's savepoint, stored here first.
	if err := s.takeSavepoint(ctx, hs, h, log); err != nil {
		return err
	}
	h.setState(hoAccepted, hoSavepointed)

	// 3: the session moves to the target's MWS.
	res, err := s.moveSession(ctx, h.ss, peer, moveOpts{reason: "fash", fash: h})
	if err != nil {
		// The session stayed here.
		return s.rollBack(hs, h, err)
	}
	h.mu.Lock()
	h.timings.MoveUs = res.Total.Microseconds()
	h.mu.Unlock()
	if err := fs.Send(&mwsv1.FashMsg{Msg: &mwsv1.FashMsg_State{State: &mwsv1.FashState{MoveId: res.moveID}}}); err != nil {
		err = fashStatus(peer.Name, fs, err)
		return s.fashRolledBack(ctx, hs, h, err, log)
	}

	// 4: the target's MWS completes the exchange.
	m, err := fs.Recv()
	if err == nil && m.GetDone() == nil {
		err = rpcerr.New(codes.Internal, "PEER_PROTOCOL", "MWS %s answered a FASH out of order", peer.Name)
	}
	if err != nil {
		return s.fashRolledBack(ctx, hs, h, fashStatus(peer.Name, fs, err), log)
	}
	t := fashTimings(m.GetDone().GetTimings(), h)
	log.Info("handoff done (FASH)", "total_us", t.TotalUs, "skeleton_us", t.SkeletonUs, "state_upload_us", t.StateUploadUs,
		"move_us", t.MoveUs, "adaptation_us", t.AdaptationUs, "delivery_us", t.DeliveryUs, "resume_us", t.ResumeUs)
	return hs.Send(&mwsv1.HandoffServerMsg{Msg: &mwsv1.HandoffServerMsg_Done{Done: &mwsv1.HandoffDone{Timings: t}}})
}

// fashTimings combines this MWS's phases with the target MWS's.
func fashTimings(remote *mwsv1.HandoffTimings, h *handoff) *mwsv1.HandoffTimings {
	h.mu.Lock()
	defer h.mu.Unlock()
	return &mwsv1.HandoffTimings{SkeletonUs: h.timings.SkeletonUs, StateUploadUs: h.timings.StateUploadUs, MoveUs: h.timings.MoveUs,
		AdaptationUs: remote.GetAdaptationUs(), DeliveryUs: remote.GetDeliveryUs(), ResumeUs: remote.GetResumeUs(),
		TotalUs: time.Since(h.started).Microseconds()}
}

// fashRolledBack ends a FASH that failed after the session moved to the
// target's MWS, which moves it back here before it reports the failure.
// The source then gets a restore token for the session as it is here now.
func (s *Server) fashRolledBack(ctx context.Context, hs mwsv1.Device_HandoffServer, h *handoff, cause error, log *slog.Logger) error {
	id := h.ss.id
	// The move back may still be on its way when the call breaks.
	var ss *session
	deadline := time.NewTimer(s.cfg.Cluster.MoveTimeout)
	defer deadline.Stop()
	for ss == nil {
		changed := s.sessions.changed()
		if ss = s.sessions.lookup(id); ss != nil {
			break
		}
		select {
		case <-changed:
		case <-deadline.C:
			log.Error("FASH failed and the session did not come back from the target's MWS", "error", cause)
			return rpcerr.New(codes.Aborted, "FASH_FAILED", "the handoff failed (%v) and the session stayed at the target's MWS", cause)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	h.ss = ss
	h.mu.Unlock()
	return s.rollBack(hs, h, cause)
}

// fashStatus is the peer's typed status for a broken Fash call.
func fashStatus(peer string, fs mwsv1.Peer_FashClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := fs.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
	}
	return peerStatus(peer, err)
}

// Fash runs the target side of a FASH: see the comment at the top.
func (p *peerService) Fash(st mwsv1.Peer_FashServer) error {
	s := p.s
	ctx := st.Context()
	from, _ := pki.IdentityFrom(ctx)
	first, err := st.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return rpcerr.New(codes.InvalidArgument, "START_REQUIRED", "the first message of Fash must be a FashStart")
	}
	if err := s.checkFashStart(start); err != nil {
		return err
	}
	known, online := s.registry.known(start.GetUser(), start.GetTargetDevice())
	if !known {
		return rpcerr.New(codes.NotFound, "UNKNOWN_DEVICE", "%q is not one of user %q's devices here", start.GetTargetDevice(), start.GetUser())
	}
	if err := s.cfg.Policy.Check(start.GetApp(), start.GetLabels(), s.cfg.Policy.Class(start.GetTargetDevice())); err != nil {
		s.log.Warn("FASH denied by policy", "handoff", start.GetHandoffId(), "device", start.GetTargetDevice(), "from", from.Name, "error", err)
		return err
	}
	h := &handoff{id: start.GetHandoffId(), user: start.GetUser(), app: start.GetApp(), labels: slices.Clone(start.GetLabels()),
		source: start.GetFromDevice(), target: start.GetTargetDevice(), started: time.Now(),
		answer: make(chan offerAnswer, 1), finished: make(chan error, 1), prepDone: make(chan struct{})}
	defer s.handoffs.unpark(h)
	log := s.log.With("handoff", h.id, "from", from.Name, "device", h.target)
	log.Info("FASH offered")

	// 1: the offer to the device, parked while it is offline.
	timeout := min(s.cfg.ConsentTimeout, time.Duration(start.GetConsentTimeoutMs())*time.Millisecond)
	offerTTL := timeout
	if !online {
		offerTTL = s.cfg.ParkExpiry
	}
	tok, exp := s.handoffs.issue(h, h.target, purposeOffer, offerTTL)
	offer := &mwsv1.HandoffOffer{HandoffId: h.id, Token: tok, User: h.user, App: h.app, Labels: h.labels, FromDevice: h.source, ExpiresUnixNano: exp.UnixNano()}
	if !online || !s.events.publish(h.target, &mwsv1.Event{UnixNano: time.Now().UnixNano(), Msg: &mwsv1.Event_Offer{Offer: offer}}) {
		timeout = s.cfg.ParkExpiry
		s.handoffs.park(h.target, &parkedOffer{h: h, offer: offer})
		if err := st.Send(&mwsv1.FashReply{Msg: &mwsv1.FashReply_Parked{Parked: &mwsv1.FashParked{ExpiresUnixNano: exp.UnixNano()}}}); err != nil {
			return err
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var a offerAnswer
	select {
	case a = <-h.answer:
	case <-timer.C:
		return rpcerr.New(codes.DeadlineExceeded, "TARGET_TIMEOUT", "device %q did not answer within %v", h.target, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	s.handoffs.unpark(h)
	h.mu.Lock()
	h.timings.SkeletonUs = time.Since(h.started).Microseconds()
	h.mu.Unlock()
	if err := st.Send(&mwsv1.FashReply{Msg: &mwsv1.FashReply_Answer{Answer: &mwsv1.FashAnswer{Accept: a.accept, Reason: a.reason}}}); err != nil || !a.accept {
		return err
	}

	// 3: the session arrives by MASH.
	ss, err := s.fashArrival(ctx, st, from.Name, h)
	if err != nil {
		h.fail(err)
		log.Info("FASH failed before the state arrived", "error", err)
		return err
	}
	defer func() {
		ss.mu.Lock()
		if ss.handoff == h {
			ss.handoff = nil
		}
		ss.mu.Unlock()
	}()

	// 4: adapt from the originals for the device, send it the summary,
	// wait for its Resume.
	ss.mu.Lock()
	digests := make([]string, 0, len(ss.objects))
	for d := range ss.objects {
		digests = append(digests, d)
	}
	summary := s.summaryLocked(ss)
	ss.mu.Unlock()
	prepCtx, cancelPrep := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPrep()
	go h.prepare(prepCtx, s, digests)
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
		case <-ctx.Done():
			cause = rpcerr.New(codes.Canceled, "SOURCE_GONE", "the source's MWS ended the handoff")
		}
	}
	if cause != nil && h.fail(cause) {
		s.fashMoveBack(ss, h, from.Name, log)
		return cause
	}
	h.mu.Lock()
	t := h.timings.proto()
	h.mu.Unlock()
	log.Info("FASH resumed here", "session", ss.id, "adaptation_us", t.AdaptationUs, "delivery_us", t.DeliveryUs)
	return st.Send(&mwsv1.FashReply{Msg: &mwsv1.FashReply_Done{Done: &mwsv1.FashDone{Timings: t}}})
}

// fashArrival waits for FashState and claims the session its move brought.
func (s *Server) fashArrival(ctx context.Context, st mwsv1.Peer_FashServer, from string, h *handoff) (*session, error) {
	type res struct {
		m   *mwsv1.FashMsg
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := st.Recv()
		ch <- res{m, err}
	}()
	timer := time.NewTimer(s.cfg.SavepointTimeout + s.cfg.Cluster.MoveTimeout)
	defer timer.Stop()
	var moveID string
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.m.GetState() == nil {
			return nil, rpcerr.New(codes.InvalidArgument, "STATE_EXPECTED", "expected a FashState")
		}
		moveID = r.m.GetState().GetMoveId()
	case <-timer.C:
		return nil, rpcerr.New(codes.DeadlineExceeded, "STATE_TIMEOUT", "the session's state did not arrive in time")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	in := s.moves.get(moveID)
	if in == nil || in.from != from {
		return nil, rpcerr.New(codes.NotFound, "UNKNOWN_MOVE", "no move %q from %s here", moveID, from)
	}
	select {
	case <-in.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if in.err != nil {
		return nil, in.err
	}
	ss := in.ss
	rec := in.rec
	if rec.GetUser() != h.user || rec.GetDevice() != h.source {
		return nil, rpcerr.New(codes.PermissionDenied, "FOREIGN_MOVE", "move %s is not the session of this handoff", moveID)
	}
	s.moves.claim(in)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.handoff != nil || ss.move != nil || !s.sessions.holds(ss) {
		return nil, rpcerr.New(codes.Aborted, "SESSION_BUSY", "session %s moved on or is busy", ss.id)
	}
	ss.handoff = h
	h.mu.Lock()
	h.ss = ss
	h.state = hoSavepointed
	h.mu.Unlock()
	return ss, nil
}

// fashMoveBack returns a session whose FASH failed to the source's MWS.
func (s *Server) fashMoveBack(ss *session, h *handoff, to string, log *slog.Logger) {
	ss.mu.Lock()
	if ss.handoff == h {
		ss.handoff = nil
	}
	ss.mu.Unlock()
	i := -1
	var peers []PeerInfo
	if m := s.cfg.Cluster.Membership; m != nil {
		peers = m.Peers()
		i = slices.IndexFunc(peers, func(p PeerInfo) bool { return p.Name == to })
	}
	if i < 0 {
		log.Error("FASH failed and the source's MWS is gone: the session stays here", "session", ss.id, "mws", to)
		return
	}
	if _, err := s.moveSession(context.Background(), ss, peers[i], moveOpts{reason: "fash-rollback", fash: h}); err != nil {
		log.Error("FASH failed and moving the session back failed: it stays here", "session", ss.id, "error", err)
		return
	}
	log.Info("FASH rolled back: session moved back", "session", ss.id, "to", to)
}

// checkFashStart validates a FashStart like any other input.
func (s *Server) checkFashStart(st *mwsv1.FashStart) error {
	var errs []error
	if b, err := hex.DecodeString(st.GetHandoffId()); err != nil || len(b) != 12 {
		errs = append(errs, errors.New("handoff id: want 24 hex digits"))
	}
	if st.GetUser() == "" || len(st.GetUser()) > 64 {
		errs = append(errs, errors.New("user: want 1-64 bytes"))
	}
	for _, d := range []string{st.GetFromDevice(), st.GetTargetDevice()} {
		if !nameRE.MatchString(d) {
			errs = append(errs, errors.New("device "+truncateName(d)+": not a device name"))
		}
	}
	if st.GetConsentTimeoutMs() <= 0 {
		errs = append(errs, errors.New("consent timeout: want > 0"))
	}
	errs = append(errs, s.cfg.checkAppLabels(st.GetApp(), st.GetLabels())...)
	if err := errors.Join(errs...); err != nil {
		return rpcerr.New(codes.InvalidArgument, "BAD_FASH_START", "%v", err)
	}
	return nil
}

func truncateName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return "\"" + s + "\""
}
