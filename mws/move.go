package mws

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws/objcache"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// moveOut is a MASH in progress at the source.
type moveOut struct {
	done chan struct{} // closed when the move is over, either way
	// target is set once the target accepted: relays cut by the handover
	// tell the device where to go.
	target *mwsv1.MoveTarget
	// frozen is set when the session stops serving here (before the
	// handover): from then on every call waits for the move to end.
	frozen bool
}

// forward is what the source keeps of a session that moved away, to
// redirect its device.
type forward struct {
	user, device string
	target       *mwsv1.MoveTarget
	expires      time.Time
}

// moveMeta is the ErrorInfo metadata that tells a device where its session
// went.
func moveMeta(t *mwsv1.MoveTarget) map[string]string {
	return map[string]string{
		"session_id": t.GetSessionId(), "mws": t.GetMws().GetName(), "addr": t.GetMws().GetAddr(),
		"token": t.GetToken(), "expires_unix_nano": strconv.FormatInt(t.GetExpiresUnixNano(), 10),
	}
}

func (f *forward) redirect() error {
	return rpcerr.NewWithMeta(codes.FailedPrecondition, "SESSION_MOVED", moveMeta(f.target),
		"session %s moved to MWS %s", f.target.GetSessionId(), f.target.GetMws().GetName())
}

// MoveResult describes a finished MASH.
type MoveResult struct {
	To         string
	Streams    int
	Objects    int
	StateBytes int64
	// Prepare is the target's answer and skeleton; Precopy sending the
	// session's objects ahead while it still works here; Handover the mux
	// handing the streams over; Ship the state transfer; Total the whole
	// move (the device follows after it). The session's calls and streams
	// wait from the handover to the end of the ship.
	Prepare, Precopy, Handover, Ship, Total time.Duration

	target *mwsv1.MoveTarget // what the device is told
	moveID string            // the target's name for the move
}

// moveOpts qualify a MASH.
type moveOpts struct {
	// reason is why: "operator", "overload", "path", "drain", "admission",
	// "fash".
	reason string
	// fash is the FASH this move is part of: the session may be in that
	// handoff, and its device is not told to follow, since it is handing
	// the session to another device (it may still follow with its key).
	fash *handoff
}

func (r MoveResult) proto() *mwsv1.MoveTimings {
	return &mwsv1.MoveTimings{PrepareUs: r.Prepare.Microseconds(), HandoverUs: r.Handover.Microseconds(),
		ShipUs: r.Ship.Microseconds(), TotalUs: r.Total.Microseconds(), StateBytes: r.StateBytes, PrecopyUs: r.Precopy.Microseconds()}
}

// MoveSession moves the session id to the MWS named to (MASH); an empty
// to picks the least loaded peer. The device follows by itself.
func (s *Server) MoveSession(ctx context.Context, id, to, reason string) (MoveResult, error) {
	ss := s.sessions.lookup(id)
	if ss == nil {
		return MoveResult{}, rpcerr.New(codes.NotFound, "UNKNOWN_SESSION", "no session %q here", id)
	}
	p, err := s.pickPeer(to)
	if err != nil {
		return MoveResult{}, err
	}
	return s.moveSession(ctx, ss, p, moveOpts{reason: reason})
}

// pickPeer returns the named peer, or the least loaded one.
func (s *Server) pickPeer(name string) (PeerInfo, error) {
	m := s.cfg.Cluster.Membership
	if m == nil {
		return PeerInfo{}, rpcerr.New(codes.FailedPrecondition, "NO_PEERS", "this MWS is not in a cluster")
	}
	peers := m.Peers()
	if name == "" {
		p, ok := leastLoaded(peers)
		if !ok {
			return PeerInfo{}, rpcerr.New(codes.Unavailable, "NO_PEERS", "no live peer takes sessions")
		}
		return p, nil
	}
	if name == s.cfg.Name {
		return PeerInfo{}, rpcerr.New(codes.InvalidArgument, "SAME_MWS", "the session is already on %s", name)
	}
	i := slices.IndexFunc(peers, func(p PeerInfo) bool { return p.Name == name })
	if i < 0 || !peers[i].Alive {
		return PeerInfo{}, rpcerr.New(codes.NotFound, "UNKNOWN_PEER", "no live MWS named %q in the cluster", name)
	}
	return peers[i], nil
}

// moveSession runs a MASH of ss to peer, in the paper's order. On any
// failure the session stays here, with its streams taken back at the mux.
func (s *Server) moveSession(ctx context.Context, ss *session, peer PeerInfo, opts moveOpts) (res MoveResult, err error) {
	reason := opts.reason
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Cluster.MoveTimeout)
	defer cancel()
	t0 := time.Now()
	res.To = peer.Name
	mv := &moveOut{done: make(chan struct{})}
	ss.mu.Lock()
	switch {
	case ss.handoff != nil && ss.handoff != opts.fash:
		ss.mu.Unlock()
		return res, rpcerr.New(codes.FailedPrecondition, "HANDOFF_IN_PROGRESS", "session %s is being handed off (CASH)", ss.id)
	case ss.move != nil:
		ss.mu.Unlock()
		return res, rpcerr.New(codes.FailedPrecondition, "MOVE_IN_PROGRESS", "session %s is already being moved", ss.id)
	case !s.sessions.holds(ss):
		ss.mu.Unlock()
		return res, rpcerr.New(codes.NotFound, "UNKNOWN_SESSION", "session %s is no longer here", ss.id)
	}
	ss.move = mv
	rec := recordLocked(ss)
	device := ss.device
	ss.mu.Unlock()
	log := s.log.With("session", ss.id, "to", peer.Name, "reason", reason)
	defer func() {
		ss.mu.Lock()
		ss.move = nil
		ss.mu.Unlock()
		close(mv.done)
		if err != nil {
			log.Warn("move failed: session stays", "error", err)
		}
	}()

	// 1-2: ask the target, which prepares a skeleton.
	api, err := s.peers.client(peer)
	if err != nil {
		return res, err
	}
	prep, err := api.PrepareMove(ctx, &mwsv1.PrepareMoveRequest{Session: rec, Reason: reason, Profiles: s.deviceDocs(device),
		Streams: streamEpochs(ss)})
	if err != nil {
		return res, peerStatus(peer.Name, err)
	}
	target := &mwsv1.MoveTarget{SessionId: ss.id, Mws: &mwsv1.MWSAddr{Name: peer.Name, Addr: peer.Addr},
		Token: prep.GetToken(), ExpiresUnixNano: prep.GetTokenExpiresUnixNano()}
	abort := func(why error) {
		s.abortMove(ctx, peer.Name, api, &mwsv1.AbortMoveRequest{MoveId: prep.GetMoveId(), Reason: why.Error()}, log)
	}
	if opts.fash != nil {
		// The device is not invited; with its key it may still follow.
		target = &mwsv1.MoveTarget{SessionId: ss.id, Mws: target.GetMws()}
	}
	ss.mu.Lock()
	mv.target = target
	ss.mu.Unlock()
	res.Prepare = time.Since(t0)

	// The objects go ahead while the session still works here: they are
	// immutable, and the few fetched meanwhile follow with the state.
	t1 := time.Now()
	plan := &shipPlan{budget: s.cfg.Cluster.MaxMoveBytes, sent: map[string]bool{}}
	if err := s.precopy(ctx, api, ss, prep.GetMoveId(), rec.GetObjects(), plan); err != nil {
		abort(err)
		return res, peerStatus(peer.Name, err)
	}
	res.Precopy = time.Since(t1)

	// Freeze: in-flight Gets finish here first; new calls wait for the
	// move. A CASH that began meanwhile keeps the session.
	ss.mu.Lock()
	if ss.handoff != nil && ss.handoff != opts.fash {
		ss.mu.Unlock()
		err := rpcerr.New(codes.FailedPrecondition, "HANDOFF_IN_PROGRESS", "session %s is being handed off (CASH)", ss.id)
		abort(err)
		return res, err
	}
	mv.frozen = true
	ss.mu.Unlock()
	ss.waitQuiet(ctx)

	// 3 and 4 at once: the mux hands the session's streams to the target
	// while the state travels to it; the streams' new epochs go last, and
	// the target installs the session.
	t1 = time.Now()
	var streams []*mwsv1.MovedStream
	var handErr error
	handedOver := make(chan struct{})
	go func() {
		defer close(handedOver)
		streams, handErr = s.handStreams(ctx, ss, peer.Name)
		res.Handover = time.Since(t1)
	}()
	ss.mu.Lock()
	if opts.fash == nil && ss.leaving != nil {
		// The device follows: its relays end now and tell it where, so
		// that it is on its way while the streams are handed over.
		close(ss.leaving)
		ss.leaving = nil
	}
	ss.mu.Unlock()
	handed := func() ([]*mwsv1.MovedStream, error) {
		<-handedOver
		return streams, handErr
	}
	objects, bytes, err := s.shipState(ctx, api, ss, prep.GetMoveId(), plan, handed)
	<-handedOver
	if err != nil || handErr != nil {
		s.takeBack(ctx, ss, streams)
		if handErr != nil {
			abort(handErr)
			return res, handErr
		}
		abort(err)
		// The target may have replaced the replica with its own before
		// it dropped its copy.
		s.replicateLater(ss)
		return res, peerStatus(peer.Name, err)
	}
	res.Streams = len(streams)
	res.Objects, res.StateBytes, res.Ship = objects, bytes, time.Since(t1)

	// 5: the session is the target's; its device is told to follow.
	s.sessions.forward(ss, &forward{user: ss.user, device: device, target: target,
		expires: time.Now().Add(s.cfg.Cluster.ForwardTTL)})
	s.dropReplicas(ss)
	if opts.fash == nil {
		s.events.publish(device, &mwsv1.Event{UnixNano: time.Now().UnixNano(), Msg: &mwsv1.Event_Moved{Moved: target}})
	}
	res.Total, res.target, res.moveID = time.Since(t0), target, prep.GetMoveId()
	log.Info("session moved", "streams", res.Streams, "objects", res.Objects, "state_bytes", res.StateBytes,
		"prepare_us", res.Prepare.Microseconds(), "precopy_us", res.Precopy.Microseconds(), "handover_us", res.Handover.Microseconds(),
		"ship_us", res.Ship.Microseconds(), "total_us", res.Total.Microseconds())
	return res, nil
}

// abortMove tells the target of a failed move to forget it. The target may
// have installed the session although the source never heard so (the
// answer was lost): until it hears the abort it holds a copy the source
// also holds. So an abort the target does not get is sent again, in the
// background, until it gets through or the move token has expired.
func (s *Server) abortMove(ctx context.Context, peer string, api mwsv1.PeerClient, req *mwsv1.AbortMoveRequest, log *slog.Logger) {
	try := func(api mwsv1.PeerClient, ctx context.Context) bool {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := api.AbortMove(actx, req)
		switch {
		case err == nil:
			return true
		case rpcerr.Reason(err) == "MOVE_COMPLETED":
			// The device took the session there before the abort: the mux
			// streams are back here, so its copy there cannot use them.
			log.Error("a failed move completed at the target anyway: the device holds the session there", "error", err)
			return true
		case rpcerr.Reason(err) != "":
			log.Warn("aborting the move at the target", "error", err)
			return true
		}
		return false
	}
	if try(api, context.WithoutCancel(ctx)) {
		return
	}
	log.Warn("the target did not get the abort; sending it again in the background")
	deadline := time.Now().Add(s.cfg.Cluster.MoveTimeout + s.cfg.Cluster.MoveTokenTTL)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		backoff := 100 * time.Millisecond
		for time.Now().Before(deadline) {
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.bgCtx.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			// The peer's address may have changed meanwhile.
			p, err := s.pickPeer(peer)
			if err != nil {
				continue
			}
			api, err := s.peers.client(p)
			if err == nil && try(api, s.bgCtx) {
				log.Info("the target got the abort", "move", req.GetMoveId())
				return
			}
		}
		log.Error("the target never got the abort of a failed move", "move", req.GetMoveId())
	}()
}

// recordLocked describes ss for a peer.
func recordLocked(ss *session) *mwsv1.SessionRecord {
	rec := &mwsv1.SessionRecord{SessionId: ss.id, User: ss.user, App: ss.app, Labels: slices.Clone(ss.labels),
		Device: ss.device, CreatedUnixNano: ss.created.UnixNano(), KeyHash: slices.Clone(ss.keyHash[:])}
	for d := range ss.objects {
		rec.Objects = append(rec.Objects, d)
	}
	slices.Sort(rec.Objects)
	return rec
}

// handStreams hands every stream of ss to the MWS named to and returns them
// with their new epochs. A stream that ended meanwhile is forgotten.
func (s *Server) handStreams(ctx context.Context, ss *session, to string) ([]*mwsv1.MovedStream, error) {
	streams := ss.streamsSnapshot()
	// The streams go over at once: the target takes the session when it
	// has them all.
	handed := make([]*mwsv1.MovedStream, len(streams))
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i, r := range streams {
		ss.mu.Lock()
		pre, epoch := r.pre, r.epoch
		r.pre = nil
		ss.mu.Unlock()
		if pre != nil {
			pre.release() // no relay took it: the handover would cut it
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := s.mux.API().Handover(ctx, &muxv1.HandoverRequest{StreamId: r.id, Epoch: epoch, To: to})
			switch {
			case rpcerr.Code(err) == codes.NotFound:
				ss.forgetStream(r)
			case err != nil:
				errs[i] = rpcerr.New(codes.Unavailable, "HANDOVER_FAILED", "handing stream %s to %s at the mux: %v", r.id, to, err)
			default:
				handed[i] = &mwsv1.MovedStream{StreamId: r.id, Backend: r.backend, Epoch: resp.GetEpoch()}
			}
		}()
	}
	wg.Wait()
	out := slices.DeleteFunc(handed, func(m *mwsv1.MovedStream) bool { return m == nil })
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// streamEpochs lists the session's streams with their epochs now.
func streamEpochs(ss *session) []*mwsv1.MovedStream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*mwsv1.MovedStream, 0, len(ss.streams))
	for _, r := range ss.streams {
		out = append(out, &mwsv1.MovedStream{StreamId: r.id, Backend: r.backend, Epoch: r.epoch})
	}
	return out
}

// takeBack claims handed streams back for this MWS after a failed move:
// the session keeps working here.
func (s *Server) takeBack(ctx context.Context, ss *session, handed []*mwsv1.MovedStream) {
	ctx = context.WithoutCancel(ctx)
	for _, m := range handed {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := s.mux.API().Takeover(tctx, &muxv1.TakeoverRequest{StreamId: m.StreamId, ExpectEpoch: m.Epoch, Force: true})
		cancel()
		ss.mu.Lock()
		r := ss.streams[m.StreamId]
		if r != nil && err == nil {
			r.epoch = resp.GetEpoch()
		}
		ss.mu.Unlock()
		if err != nil {
			s.log.Warn("taking a stream back after a failed move", "session", ss.id, "stream", m.StreamId, "error", err)
			if r != nil && rpcerr.Code(err) == codes.NotFound {
				ss.forgetStream(r)
			}
		}
	}
}

// shipChunk is the size of the object chunks a move ships.
const shipChunk = 1 << 20

// shipState sends the session's state to the target: the stored savepoint
// and the original server objects (those the savepoint names first),
// within the configured bounds, and last the streams' new epochs, which
// handed waits for. An error of handed's cancels the ship, so that the
// target does not install the session.
func (s *Server) shipState(ctx context.Context, api mwsv1.PeerClient, ss *session, moveID string, plan *shipPlan,
	handed func() ([]*mwsv1.MovedStream, error)) (objects int, bytes int64, err error) {
	hdr := &mwsv1.CompleteMoveHeader{MoveId: moveID, Streams: streamEpochs(ss)}
	ss.mu.Lock()
	hdr.KeyHash = slices.Clone(ss.keyHash[:])
	for _, e := range ss.savepoint {
		hdr.Savepoint = append(hdr.Savepoint, &mwsv1.Element{Name: e.name, Kind: e.kind, ContentType: e.contentType,
			Digest: e.digest, Data: e.data, StreamId: e.streamID, StreamOffset: e.streamOffset})
		bytes += int64(len(e.data))
	}
	for d := range ss.objects {
		hdr.Objects = append(hdr.Objects, d)
	}
	order := shipOrderLocked(ss)
	ss.mu.Unlock()
	slices.Sort(hdr.Objects)
	slices.SortFunc(hdr.Savepoint, func(a, b *mwsv1.Element) int { return strings.Compare(a.Name, b.Name) })

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := api.CompleteMove(ctx)
	if err != nil {
		return 0, 0, err
	}
	if err := st.Send(&mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_Header{Header: hdr}}); err != nil {
		_, rerr := st.CloseAndRecv()
		return 0, 0, errors.Join(err, rerr)
	}
	err = s.shipObjects(order, plan, func(m *mwsv1.ShippedObject) error {
		return st.Send(&mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_Object{Object: m}})
	})
	if err != nil {
		_, rerr := st.CloseAndRecv()
		return 0, 0, errors.Join(err, rerr)
	}
	if err := st.Send(&mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_StateEnd{StateEnd: &mwsv1.StateEnd{}}}); err != nil {
		_, rerr := st.CloseAndRecv()
		return 0, 0, errors.Join(err, rerr)
	}
	streams, err := handed()
	if err != nil {
		return 0, 0, err // cancel ends the call unfinished
	}
	if err := st.Send(&mwsv1.CompleteMoveMsg{Msg: &mwsv1.CompleteMoveMsg_Handed{Handed: &mwsv1.HandedStreams{Streams: streams}}}); err != nil {
		_, rerr := st.CloseAndRecv()
		return 0, 0, errors.Join(err, rerr)
	}
	if _, err := st.CloseAndRecv(); err != nil {
		return 0, 0, err
	}
	return plan.objects, bytes + plan.bytes, nil
}

// shipPlan is what a move has sent of the session's objects, and what it
// may still send.
type shipPlan struct {
	budget  int64
	objects int
	bytes   int64
	sent    map[string]bool
}

// shipOrderLocked lists the session's objects, the savepoint's first.
func shipOrderLocked(ss *session) []string {
	var first, rest []string
	for _, e := range ss.savepoint {
		if e.digest != "" && !slices.Contains(first, e.digest) {
			first = append(first, e.digest)
		}
	}
	for d := range ss.objects {
		if !slices.Contains(first, d) {
			rest = append(rest, d)
		}
	}
	slices.Sort(first)
	slices.Sort(rest)
	return append(first, rest...)
}

// shipObjects sends the objects of order not sent yet, within the plan's
// bounds.
func (s *Server) shipObjects(order []string, plan *shipPlan, send func(*mwsv1.ShippedObject) error) error {
	for _, d := range order {
		if plan.sent[d] {
			continue
		}
		obj, ok := s.cache.Lookup(d)
		if !ok || obj.Size > plan.budget || plan.objects >= s.cfg.Cluster.MaxMoveObjects {
			continue
		}
		if err := sendObject(obj, send); err != nil {
			return err
		}
		plan.sent[d] = true
		plan.budget -= obj.Size
		plan.objects++
		plan.bytes += obj.Size
	}
	return nil
}

// precopy sends the session's objects to the target ahead of the freeze:
// those of announced (sorted), the record the target prepared with. Objects the
// session fetched since go with the state, whose header announces them.
func (s *Server) precopy(ctx context.Context, api mwsv1.PeerClient, ss *session, moveID string, announced []string, plan *shipPlan) error {
	ss.mu.Lock()
	order := shipOrderLocked(ss)
	ss.mu.Unlock()
	order = slices.DeleteFunc(order, func(d string) bool { _, ok := slices.BinarySearch(announced, d); return !ok })
	if len(order) == 0 {
		return nil
	}
	st, err := api.ShipObjects(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&mwsv1.ShipObjectsMsg{Msg: &mwsv1.ShipObjectsMsg_MoveId{MoveId: moveID}}); err != nil {
		_, rerr := st.CloseAndRecv()
		return errors.Join(err, rerr)
	}
	err = s.shipObjects(order, plan, func(m *mwsv1.ShippedObject) error {
		return st.Send(&mwsv1.ShipObjectsMsg{Msg: &mwsv1.ShipObjectsMsg_Object{Object: m}})
	})
	if err != nil {
		_, rerr := st.CloseAndRecv()
		return errors.Join(err, rerr)
	}
	_, err = st.CloseAndRecv()
	return err
}

// sendObject sends an original server object in chunks.
func sendObject(obj *objcache.Object, send func(*mwsv1.ShippedObject) error) error {
	h := map[string]string{}
	for k, vs := range obj.Header {
		if len(vs) > 0 {
			h[k] = vs[0]
		}
	}
	body := obj.Body
	for i := 0; ; i++ {
		n := min(len(body), shipChunk)
		m := &mwsv1.ShippedObject{Chunk: body[:n], Last: n == len(body)}
		if i == 0 {
			m.Digest, m.Status, m.ContentType, m.Header = obj.Digest, int32(obj.Status), obj.ContentType, h
		}
		if err := send(m); err != nil {
			return err
		}
		body = body[n:]
		if len(body) == 0 {
			return nil
		}
	}
}

// peerStatus keeps a peer's typed denial and reports anything else as the
// peer being unavailable.
func peerStatus(peer string, err error) error {
	if rpcerr.Reason(err) != "" {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || rpcerr.Code(err) == codes.DeadlineExceeded {
		return rpcerr.New(codes.DeadlineExceeded, "PEER_TIMEOUT", "MWS %s did not answer in time", peer)
	}
	return rpcerr.New(codes.Unavailable, "PEER_UNAVAILABLE", "MWS %s: %v", peer, err)
}
