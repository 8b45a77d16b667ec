package mws

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// Replication keeps every session recoverable when its MWS fails
// (DESIGN invariant 2). Each session has a replica on ClusterConfig.Replicas
// peers, chosen by rendezvous hashing of the session id over the live
// peers, so that every MWS picks the same ones. The replica holds the
// session's record (user, device, current key hash), its streams and its
// stored savepoint, and the original server objects the savepoint refers
// to.
//
// A savepoint is replicated before it is acknowledged to the device: an
// acknowledged savepoint survives the MWS that acknowledged it. A session
// that moves here is replicated before this MWS answers the move (the
// source drops its own replicas only then), and a handoff's new key and
// device before the Resume call ends. Other changes (a new key after a
// device followed a move, a new stream, a new session) are replicated in
// the background: a device whose new key the replica has not heard of
// presents the key before. When the session closes or moves away its
// replica is dropped.
//
// When the owner is gone (membership no longer lists it alive), the
// session's device finds the replica by asking the cluster's MWSs with
// its session key (clientlib does this by itself); the replica's MWS then
// takes the session up: it installs it, takes its streams over at the mux
// and lets the device in. Streams continue from the device's last byte, as
// after a MASH. Without live peers a session has no replica, and a
// savepoint is acknowledged on the one MWS's word.

// replica is a copy of a session another MWS holds.
type replica struct {
	owner   string // the MWS that sent it
	version uint64
	header  *mwsv1.ReplicaHeader
	objects []string // digests of the savepoint's objects
}

// replicaTable holds the replicas this MWS keeps for its peers.
type replicaTable struct {
	mu   sync.Mutex
	byID map[string]*replica
	max  int
}

func newReplicaTable(max int) *replicaTable {
	return &replicaTable{byID: map[string]*replica{}, max: max}
}

// put stores r unless a newer replica of the session is here.
func (t *replicaTable) put(id string, r *replica) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.byID[id]
	if old != nil && old.version > r.version {
		return nil
	}
	if old == nil && len(t.byID) >= t.max {
		return rpcerr.New(codes.ResourceExhausted, "TOO_MANY_REPLICAS", "this MWS holds its limit of %d replicas", t.max)
	}
	t.byID[id] = r
	return nil
}

// drop forgets the replica of id at or below version (0: any).
func (t *replicaTable) drop(id string, version uint64) {
	t.mu.Lock()
	if r := t.byID[id]; r != nil && (version == 0 || r.version <= version) {
		delete(t.byID, id)
	}
	t.mu.Unlock()
}

// take removes and returns the replica of id.
func (t *replicaTable) take(id string) *replica {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.byID[id]
	delete(t.byID, id)
	return r
}

func (t *replicaTable) has(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id] != nil
}

// putBack returns a replica that could not be taken up.
func (t *replicaTable) putBack(id string, r *replica) {
	t.mu.Lock()
	if t.byID[id] == nil {
		t.byID[id] = r
	}
	t.mu.Unlock()
}

// replState is a session's replication at its owner.
type replState struct {
	mu      sync.Mutex // one replication of the session at a time
	peers   []string   // where the replica is now
	version uint64
}

// replicaPeers orders the live peers for a session (rendezvous hashing)
// and returns the first n.
func replicaPeers(id string, peers []PeerInfo, n int) []PeerInfo {
	var live []PeerInfo
	for _, p := range peers {
		if p.Alive && !p.Draining {
			live = append(live, p)
		}
	}
	score := func(p PeerInfo) uint64 {
		h := sha256.Sum256([]byte(id + "\x00" + p.Name))
		return binary.BigEndian.Uint64(h[:8])
	}
	slices.SortFunc(live, func(a, b PeerInfo) int {
		sa, sb := score(a), score(b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return live[:min(n, len(live))]
}

// replicate sends ss's replica to its replica peers and waits for them.
// It fails only when no replica could be stored while peers exist.
func (s *Server) replicate(ctx context.Context, ss *session) error {
	m := s.cfg.Cluster.Membership
	if m == nil || s.cfg.Cluster.Replicas == 0 {
		return nil
	}
	ss.repl.mu.Lock()
	defer ss.repl.mu.Unlock()
	peers := m.Peers()
	order := replicaPeers(ss.id, peers, len(peers))
	if len(order) == 0 {
		return nil
	}
	ss.repl.version = max(ss.repl.version+1, uint64(time.Now().UnixNano()))
	hdr := s.replicaHeader(ss, ss.repl.version)
	var stored []string
	var errs []error
	for _, p := range order {
		if len(stored) == s.cfg.Cluster.Replicas {
			break
		}
		if err := s.sendReplica(ctx, p, hdr); err != nil {
			errs = append(errs, err)
			continue
		}
		stored = append(stored, p.Name)
	}
	// Replicas left on peers no longer chosen are dropped.
	for _, old := range ss.repl.peers {
		if !slices.Contains(stored, old) {
			s.dropReplicaAt(old, ss.id, ss.repl.version)
		}
	}
	ss.repl.peers = stored
	if len(stored) == 0 {
		return rpcerr.New(codes.Unavailable, "REPLICATION_FAILED", "no peer stored a replica of session %s: %v", ss.id, errors.Join(errs...))
	}
	return nil
}

// replicaHeader describes ss for its replica.
func (s *Server) replicaHeader(ss *session, version uint64) *mwsv1.ReplicaHeader {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	hdr := &mwsv1.ReplicaHeader{Session: recordLocked(ss), Version: version}
	for _, r := range ss.streams {
		hdr.Streams = append(hdr.Streams, &mwsv1.MovedStream{StreamId: r.id, Backend: r.backend, Epoch: r.epoch})
	}
	slices.SortFunc(hdr.Streams, func(a, b *mwsv1.MovedStream) int { return strings.Compare(a.StreamId, b.StreamId) })
	for _, e := range ss.savepoint {
		hdr.Savepoint = append(hdr.Savepoint, &mwsv1.Element{Name: e.name, Kind: e.kind, ContentType: e.contentType,
			Digest: e.digest, Data: e.data, StreamId: e.streamID, StreamOffset: e.streamOffset})
	}
	slices.SortFunc(hdr.Savepoint, func(a, b *mwsv1.Element) int { return strings.Compare(a.Name, b.Name) })
	return hdr
}

// sendReplica stores hdr at peer with the objects in digests it lacks.
// Objects are not sent blindly: a first call with the header alone asks
// which the peer lacks (it often holds them already: it may be where the
// session came from), and a second call sends those.
func (s *Server) sendReplica(ctx context.Context, p PeerInfo, hdr *mwsv1.ReplicaHeader) error {
	api, err := s.peers.client(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Cluster.MoveTimeout)
	defer cancel()
	var ship []string // what this call sends
	for attempt := 0; attempt < 3; attempt++ {
		st, err := api.Replicate(ctx)
		if err != nil {
			return peerStatus(p.Name, err)
		}
		if err := st.Send(&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Header{Header: hdr}}); err != nil {
			_, rerr := st.CloseAndRecv()
			return peerStatus(p.Name, errors.Join(err, rerr))
		}
		for _, d := range ship {
			obj, ok := s.cache.Lookup(d)
			if !ok {
				continue // evicted here: the replica keeps the reference only
			}
			err := sendObject(obj, func(m *mwsv1.ShippedObject) error {
				return st.Send(&mwsv1.ReplicaMsg{Msg: &mwsv1.ReplicaMsg_Object{Object: m}})
			})
			if err != nil {
				_, rerr := st.CloseAndRecv()
				return peerStatus(p.Name, errors.Join(err, rerr))
			}
		}
		resp, err := st.CloseAndRecv()
		if err != nil {
			return peerStatus(p.Name, err)
		}
		missing := resp.GetMissing()
		// What is still missing after it was sent is not cached here
		// either: nothing more to send.
		ship = slices.DeleteFunc(slices.Clone(missing), func(d string) bool { return slices.Contains(ship, d) })
		if len(ship) == 0 {
			return nil
		}
	}
	return nil
}

// maxReplaced bounds the sessions whose replicas one balancing round
// places again.
const maxReplaced = 256

// placeReplicas replicates again, in the background, the sessions that
// have fewer replicas on live peers than configured while live peers
// exist: their replica's MWS left or died, or no peer was there before.
func (s *Server) placeReplicas() {
	m := s.cfg.Cluster.Membership
	if m == nil || s.cfg.Cluster.Replicas == 0 || s.draining.Load() || !s.replacing.CompareAndSwap(false, true) {
		return
	}
	live := map[string]bool{}
	for _, p := range m.Peers() {
		if p.Alive && !p.Draining {
			live[p.Name] = true
		}
	}
	want := min(s.cfg.Cluster.Replicas, len(live))
	var todo []*session
	for _, ss := range s.sessions.list("") {
		ss.repl.mu.Lock()
		n := 0
		for _, p := range ss.repl.peers {
			if live[p] {
				n++
			}
		}
		ss.repl.mu.Unlock()
		if n < want {
			todo = append(todo, ss)
			if len(todo) == maxReplaced {
				break
			}
		}
	}
	if len(todo) == 0 {
		s.replacing.Store(false)
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer s.replacing.Store(false)
		placed := 0
		for _, ss := range todo {
			ctx, cancel := context.WithTimeout(s.bgCtx, s.cfg.Cluster.MoveTimeout)
			if s.sessions.holds(ss) && s.replicate(ctx, ss) == nil {
				placed++
			}
			cancel()
			if s.bgCtx.Err() != nil {
				return
			}
		}
		s.log.Info("replicas placed again", "sessions", placed, "of", len(todo))
	}()
}

// replicateLater replicates ss in the background.
func (s *Server) replicateLater(ss *session) {
	if s.cfg.Cluster.Membership == nil || s.cfg.Cluster.Replicas == 0 {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(s.bgCtx, s.cfg.Cluster.MoveTimeout)
		defer cancel()
		if !s.sessions.holds(ss) {
			return
		}
		if err := s.replicate(ctx, ss); err != nil {
			s.log.Warn("replicating a session", "session", ss.id, "error", err)
		}
	}()
}

// dropReplicas forgets ss's replicas, after it closed or moved away.
func (s *Server) dropReplicas(ss *session) {
	ss.repl.mu.Lock()
	peers, version := ss.repl.peers, ss.repl.version
	ss.repl.peers = nil
	ss.repl.mu.Unlock()
	for _, p := range peers {
		s.dropReplicaAt(p, ss.id, version)
	}
}

// dropReplicaAt tells peer to forget a replica, in the background.
func (s *Server) dropReplicaAt(peer, id string, version uint64) {
	m := s.cfg.Cluster.Membership
	if m == nil {
		return
	}
	i := slices.IndexFunc(m.Peers(), func(p PeerInfo) bool { return p.Name == peer })
	if i < 0 {
		return
	}
	p := m.Peers()[i]
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		api, err := s.peers.client(p)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(s.bgCtx, 5*time.Second)
		defer cancel()
		if _, err := api.DropReplica(ctx, &mwsv1.DropReplicaRequest{SessionId: id, Version: version}); err != nil {
			s.log.Debug("dropping a replica", "session", id, "peer", peer, "error", err)
		}
	}()
}

// Replicate stores a peer's replica of one of its sessions.
func (p *peerService) Replicate(st mwsv1.Peer_ReplicateServer) error {
	s := p.s
	from, _ := pki.IdentityFrom(st.Context())
	first, err := st.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return rpcerr.New(codes.InvalidArgument, "HEADER_REQUIRED", "the first message of Replicate must be the header")
	}
	rec := hdr.GetSession()
	if err := s.checkRecord(rec, nil); err != nil {
		return err
	}
	if len(hdr.GetStreams()) > s.cfg.MaxStreamsPerSession || len(hdr.GetSavepoint()) > s.cfg.MaxSavepointElements {
		return rpcerr.New(codes.InvalidArgument, "BAD_REPLICA", "%d streams, %d savepoint elements: over the limits", len(hdr.GetStreams()), len(hdr.GetSavepoint()))
	}
	for _, m := range hdr.GetStreams() {
		if m.GetStreamId() == "" || len(m.GetStreamId()) > 64 || !nameRE.MatchString(m.GetBackend()) {
			return rpcerr.New(codes.InvalidArgument, "BAD_REPLICA", "stream %q of backend %q", m.GetStreamId(), m.GetBackend())
		}
	}
	probe := &session{id: rec.GetSessionId(), objects: map[string]struct{}{}, streams: map[string]*relayState{}}
	for _, d := range rec.GetObjects() {
		probe.objects[d] = struct{}{}
	}
	for _, m := range hdr.GetStreams() {
		probe.streams[m.GetStreamId()] = &relayState{id: m.GetStreamId()}
	}
	if err := s.checkElements(probe, hdr.GetSavepoint(), false); err != nil {
		return err
	}
	var digests []string
	for _, e := range hdr.GetSavepoint() {
		if e.GetDigest() != "" {
			digests = append(digests, e.GetDigest())
		}
	}
	if _, err := s.receiveObjects(func() (*mwsv1.ShippedObject, error) {
		m, err := st.Recv()
		if err != nil {
			return nil, err
		}
		if m.GetObject() == nil {
			return nil, rpcerr.New(codes.InvalidArgument, "BAD_REPLICA", "only objects may follow the header")
		}
		return m.GetObject(), nil
	}, digests); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if cur := s.sessions.lookup(rec.GetSessionId()); cur != nil && !cur.movingTo(from.Name) {
		// It is this MWS's own session now; a late replica is stale.
		return st.SendAndClose(&mwsv1.ReplicateResponse{})
	}
	if err := s.replicas.put(rec.GetSessionId(), &replica{owner: from.Name, version: hdr.GetVersion(), header: hdr, objects: digests}); err != nil {
		return err
	}
	var missing []string
	for _, d := range digests {
		if _, ok := s.cache.Lookup(d); !ok {
			missing = append(missing, d)
		}
	}
	return st.SendAndClose(&mwsv1.ReplicateResponse{Missing: missing})
}

// movingTo reports whether ss is being moved to the MWS named peer and
// has reached it: the peer, which installed it, replicates it before it
// answers, possibly here.
func (ss *session) movingTo(peer string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.move != nil && ss.move.frozen && ss.move.target.GetMws().GetName() == peer
}

// DropReplica forgets a replica its owner no longer needs.
func (p *peerService) DropReplica(ctx context.Context, req *mwsv1.DropReplicaRequest) (*mwsv1.DropReplicaResponse, error) {
	s := p.s
	from, _ := pki.IdentityFrom(ctx)
	s.replicas.mu.Lock()
	r := s.replicas.byID[req.GetSessionId()]
	s.replicas.mu.Unlock()
	if r != nil && r.owner != from.Name {
		// Another MWS holds the session now; its replica stays.
		return &mwsv1.DropReplicaResponse{}, nil
	}
	s.replicas.drop(req.GetSessionId(), req.GetVersion())
	return &mwsv1.DropReplicaResponse{}, nil
}

// peerAnswers reports whether the MWS named name is alive: membership
// lists it so and it answers a Load call within a second (a device that
// cannot reach its MWS may come here before membership has noticed).
func (s *Server) peerAnswers(ctx context.Context, name string) bool {
	m := s.cfg.Cluster.Membership
	if m == nil {
		return false
	}
	peers := m.Peers()
	i := slices.IndexFunc(peers, func(p PeerInfo) bool { return p.Name == name && p.Alive })
	if i < 0 {
		return false
	}
	api, err := s.peers.client(peers[i])
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = api.Load(ctx, &mwsv1.LoadRequest{})
	return err == nil
}

// takeUp makes the replica of session id this MWS's session, when the MWS
// that held it is gone and its device asks for it with the session's
// current key: the session is installed and its streams taken over at the
// mux. It returns nil when there is no replica to take up.
func (s *Server) takeUp(ctx context.Context, id, device, key string) (*session, error) {
	if !s.replicas.has(id) {
		return nil, nil
	}
	r := s.replicas.take(id)
	if r == nil {
		return nil, nil
	}
	h := sha256.Sum256([]byte(key))
	if rec := r.header.GetSession(); rec.GetDevice() != device || subtle.ConstantTimeCompare(h[:], rec.GetKeyHash()) != 1 {
		s.replicas.putBack(id, r)
		return nil, rpcerr.New(codes.Unauthenticated, "BAD_SESSION_KEY", "session key missing, wrong or revoked")
	}
	if s.peerAnswers(ctx, r.owner) {
		// The owner still holds the session: the device must go there.
		s.replicas.putBack(id, r)
		return nil, nil
	}
	rec := r.header.GetSession()
	if err := s.sessions.reserve(rec.GetUser()); err != nil {
		s.replicas.putBack(id, r)
		return nil, err
	}
	ss := sessionFromRecord(rec, rec.GetKeyHash())
	mergeSavepointLocked(ss, r.header.GetSavepoint())
	// The streams the gone owner held are taken over; one that moved on
	// or ended meanwhile is left alone.
	for _, m := range r.header.GetStreams() {
		info, err := s.mux.API().GetStream(ctx, &muxv1.GetStreamRequest{StreamId: m.GetStreamId()})
		if err != nil || info.GetOwner() != r.owner {
			continue
		}
		resp, err := s.mux.API().Takeover(ctx, &muxv1.TakeoverRequest{StreamId: m.GetStreamId(), ExpectEpoch: info.GetEpoch(), Force: true})
		if err != nil {
			s.log.Warn("taking a stream over from a gone MWS", "session", id, "stream", m.GetStreamId(), "error", err)
			continue
		}
		ss.streams[m.GetStreamId()] = &relayState{id: m.GetStreamId(), backend: m.GetBackend(), epoch: resp.GetEpoch()}
	}
	// Once installed the session is live: what the log says is read before.
	nstreams, nsaved := len(ss.streams), len(ss.savepoint)
	if err := s.sessions.install(ss); err != nil {
		s.sessions.release()
		return nil, err
	}
	s.registry.seen(rec.GetUser(), rec.GetDevice())
	s.log.Warn("session taken up from its replica: its MWS is gone", "session", id, "owner", r.owner,
		"streams", nstreams, "savepoint_elements", nsaved)
	s.replicateLater(ss)
	return ss, nil
}
