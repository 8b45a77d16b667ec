package mws

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/imashproject/imash/internal/grpcbuf"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// peerPool holds one gRPC connection per peer MWS.
type peerPool struct {
	tls *tls.Config
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]*peerConn
}

type peerConn struct {
	addr string
	cc   *grpc.ClientConn
	api  mwsv1.PeerClient
}

func newPeerPool(tlsConf *tls.Config, log *slog.Logger) *peerPool {
	return &peerPool{tls: tlsConf, log: log, conns: map[string]*peerConn{}}
}

// client returns the peer API of p, dialling (again, if its address
// changed) as needed.
func (pp *peerPool) client(p PeerInfo) (mwsv1.PeerClient, error) {
	if pp.tls == nil {
		return nil, rpcerr.New(codes.FailedPrecondition, "NO_PEERS", "this MWS has no peer TLS configuration")
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if c := pp.conns[p.Name]; c != nil && c.addr == p.Addr {
		return c.api, nil
	} else if c != nil {
		c.cc.Close()
	}
	opts := append(grpcbuf.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(pp.tls)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	cc, err := grpc.NewClient(p.Addr, opts...)
	if err != nil {
		return nil, rpcerr.New(codes.Unavailable, "PEER_UNAVAILABLE", "MWS %s at %s: %v", p.Name, p.Addr, err)
	}
	c := &peerConn{addr: p.Addr, cc: cc, api: mwsv1.NewPeerClient(cc)}
	pp.conns[p.Name] = c
	return c.api, nil
}

func (pp *peerPool) close() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for n, c := range pp.conns {
		c.cc.Close()
		delete(pp.conns, n)
	}
}

// incoming is a move this MWS accepted: a skeleton until the state
// arrives.
type incoming struct {
	id      string
	from    string // the source MWS
	rec     *mwsv1.SessionRecord
	docs    [][]byte
	reason  string
	expires time.Time

	once sync.Once
	done chan struct{} // closed when completed or aborted
	ss   *session      // set when completed
	err  error         // set when aborted
	used bool          // the device moved in (under moveTable.mu)
	// standbys are the channels opened ahead to the session's streams,
	// by stream id.
	standbys map[string]*standby
}

type moveToken struct {
	in      *incoming
	device  string
	expires time.Time
}

// moveTable holds incoming moves and their device tokens.
type moveTable struct {
	mu     sync.Mutex
	byID   map[string]*incoming
	tokens map[[32]byte]*moveToken
}

func newMoveTable() *moveTable {
	return &moveTable{byID: map[string]*incoming{}, tokens: map[[32]byte]*moveToken{}}
}

// add records in and issues its device's token.
func (t *moveTable) add(in *incoming, ttl time.Duration) (string, time.Time) {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	exp := time.Now().Add(ttl)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for k, e := range t.tokens {
		if now.After(e.expires) {
			delete(t.tokens, k)
		}
	}
	t.byID[in.id] = in
	t.tokens[sha256.Sum256([]byte(tok))] = &moveToken{in: in, device: in.rec.GetDevice(), expires: exp}
	return tok, exp
}

func (t *moveTable) get(id string) *incoming {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (t *moveTable) remove(in *incoming) {
	t.mu.Lock()
	if t.byID[in.id] == in {
		delete(t.byID, in.id)
	}
	t.mu.Unlock()
}

// revoke takes back the device token of a completed incoming move the
// device has not used: false when it has.
func (t *moveTable) revoke(in *incoming) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if in.used {
		return false
	}
	t.forgetTokensLocked(in)
	return true
}

// claim takes a completed incoming move for this MWS's own use (a FASH):
// it is forgotten, and its device token with it.
func (t *moveTable) claim(in *incoming) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, in.id)
	t.forgetTokensLocked(in)
	in.used = true
}

// forgetTokensLocked deletes the device tokens of in.
func (t *moveTable) forgetTokensLocked(in *incoming) {
	for k, e := range t.tokens {
		if e.in == in {
			delete(t.tokens, k)
		}
	}
}

// use consumes a move token presented by device: single use, unexpired,
// bound to that device. A token shown by another device is burnt. With
// session set, a token for another session is refused and stays.
func (t *moveTable) use(tok, device, session string) (*incoming, error) {
	k := sha256.Sum256([]byte(tok))
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.tokens[k]
	if e == nil {
		return nil, rpcerr.New(codes.Unauthenticated, "BAD_MOVE_TOKEN", "move token unknown, already used, or not issued by this MWS")
	}
	if e.device != device {
		delete(t.tokens, k)
		return nil, rpcerr.New(codes.PermissionDenied, "TOKEN_NOT_FOR_DEVICE", "move token is not for this device")
	}
	if session != "" && e.in.rec.GetSessionId() != session {
		return nil, rpcerr.New(codes.InvalidArgument, "SESSION_MISMATCH", "the move token is not for session %q", session)
	}
	delete(t.tokens, k)
	if time.Now().After(e.expires) {
		return nil, rpcerr.New(codes.Unauthenticated, "TOKEN_EXPIRED", "move token expired")
	}
	e.in.used = true
	return e.in, nil
}

// peerService is the Peer API (callers hold MWS certificates).
type peerService struct {
	mwsv1.UnimplementedPeerServer
	s *Server
}

func (p *peerService) Load(context.Context, *mwsv1.LoadRequest) (*mwsv1.LoadResponse, error) {
	s := p.s
	return &mwsv1.LoadResponse{Mws: s.cfg.Name, Sessions: int32(s.sessions.loadNow()), MaxSessions: int32(s.cfg.MaxSessions), Draining: s.draining.Load()}, nil
}

// checkRecord validates a session record from a peer like any other input.
func (s *Server) checkRecord(rec *mwsv1.SessionRecord, docs [][]byte) error {
	cfg := s.cfg
	var errs []error
	if rec == nil {
		return rpcerr.New(codes.InvalidArgument, "BAD_SESSION_RECORD", "no session record")
	}
	if len(rec.GetSessionId()) != 32 {
		errs = append(errs, fmt.Errorf("session id %q: want 32 hex digits", rec.GetSessionId()))
	} else if _, err := hex.DecodeString(rec.GetSessionId()); err != nil {
		errs = append(errs, fmt.Errorf("session id %q: want 32 hex digits", rec.GetSessionId()))
	}
	if rec.GetUser() == "" || len(rec.GetUser()) > 64 {
		errs = append(errs, errors.New("user: want 1-64 bytes"))
	}
	if !nameRE.MatchString(rec.GetDevice()) {
		errs = append(errs, fmt.Errorf("device %q: not a device name", rec.GetDevice()))
	}
	errs = append(errs, cfg.checkAppLabels(rec.GetApp(), rec.GetLabels())...)
	if len(rec.GetKeyHash()) != sha256.Size {
		errs = append(errs, fmt.Errorf("key hash: %d bytes, want %d", len(rec.GetKeyHash()), sha256.Size))
	}
	if len(rec.GetObjects()) > cfg.Cluster.MaxMoveObjects {
		errs = append(errs, fmt.Errorf("%d objects exceed %d", len(rec.GetObjects()), cfg.Cluster.MaxMoveObjects))
	}
	if len(docs) > cfg.MaxProfiles {
		errs = append(errs, fmt.Errorf("%d profiles exceed %d", len(docs), cfg.MaxProfiles))
	}
	if err := errors.Join(errs...); err != nil {
		return rpcerr.New(codes.InvalidArgument, "BAD_SESSION_RECORD", "%v", err)
	}
	return nil
}

// PrepareMove accepts (or denies) a session and prepares its skeleton.
func (p *peerService) PrepareMove(ctx context.Context, req *mwsv1.PrepareMoveRequest) (*mwsv1.PrepareMoveResponse, error) {
	s := p.s
	from, _ := pki.IdentityFrom(ctx)
	rec := req.GetSession()
	if err := s.checkRecord(rec, req.GetProfiles()); err != nil {
		return nil, err
	}
	if len(req.GetReason()) > 64 {
		return nil, rpcerr.New(codes.InvalidArgument, "FIELD_TOO_LONG", "reason too long")
	}
	if s.draining.Load() {
		return nil, rpcerr.New(codes.Unavailable, "DRAINING", "MWS %s is draining", s.cfg.Name)
	}
	if n, limit := s.sessions.loadNow(), s.cfg.Cluster.DenyAbove*float64(s.cfg.MaxSessions); float64(n+1) > limit {
		return nil, rpcerr.New(codes.ResourceExhausted, "OVERLOADED", "MWS %s holds %d of %d sessions", s.cfg.Name, n, s.cfg.MaxSessions)
	}
	if s.sessions.lookup(rec.GetSessionId()) != nil {
		return nil, rpcerr.New(codes.AlreadyExists, "SESSION_EXISTS", "session %s is already here", rec.GetSessionId())
	}
	if len(req.GetStreams()) > s.cfg.MaxStreamsPerSession {
		return nil, rpcerr.New(codes.InvalidArgument, "TOO_MANY_STREAMS", "%d streams exceed %d", len(req.GetStreams()), s.cfg.MaxStreamsPerSession)
	}
	for _, m := range req.GetStreams() {
		if err := checkMovedStream(m); err != nil {
			return nil, err
		}
	}
	if err := s.sessions.reserve(rec.GetUser()); err != nil {
		return nil, err
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	in := &incoming{id: hex.EncodeToString(b[:]), from: from.Name, rec: rec, docs: req.GetProfiles(), reason: req.GetReason(),
		expires: time.Now().Add(s.cfg.Cluster.MoveTimeout), done: make(chan struct{})}
	// The streams' channels here open ahead, to be ready at the handover.
	in.standbys = s.startStandbys(req.GetStreams())
	tok, exp := s.moves.add(in, s.cfg.Cluster.MoveTokenTTL)
	// A skeleton the source never completes goes away by itself.
	time.AfterFunc(s.cfg.Cluster.MoveTimeout, func() {
		s.dropIncoming(in, rpcerr.New(codes.Aborted, "MOVE_ABORTED", "the move of session %s was not completed in time", rec.GetSessionId()))
	})
	s.log.Info("move prepared", "session", rec.GetSessionId(), "from", from.Name, "device", rec.GetDevice(), "reason", req.GetReason())
	return &mwsv1.PrepareMoveResponse{MoveId: in.id, Token: tok, TokenExpiresUnixNano: exp.UnixNano()}, nil
}

// forgetMove ends an incoming move here: its standbys are released and
// its id no longer names it.
func (s *Server) forgetMove(in *incoming) {
	releaseStandbys(in.standbys)
	s.moves.remove(in)
}

// undoMoveIn drops a session that moved in here but that its device has
// not taken (the source keeps it): its token is revoked first, so that the
// device cannot take it meanwhile. It reports false when the device took
// it already.
func (s *Server) undoMoveIn(in *incoming) bool {
	if !s.moves.revoke(in) {
		return false
	}
	s.forgetMove(in)
	if s.sessions.remove(in.ss.id) != nil {
		s.dropReplicas(in.ss)
	}
	return true
}

// dropIncoming ends an incoming move that did not complete.
func (s *Server) dropIncoming(in *incoming, why error) {
	s.forgetMove(in)
	dropped := false
	in.once.Do(func() {
		in.err = why
		close(in.done)
		dropped = true
	})
	if dropped {
		s.sessions.release()
	}
}

// AbortMove forgets a prepared move.
func (p *peerService) AbortMove(ctx context.Context, req *mwsv1.AbortMoveRequest) (*mwsv1.AbortMoveResponse, error) {
	s := p.s
	from, _ := pki.IdentityFrom(ctx)
	in := s.moves.get(req.GetMoveId())
	if in == nil {
		return &mwsv1.AbortMoveResponse{}, nil
	}
	if in.from != from.Name {
		return nil, rpcerr.New(codes.PermissionDenied, "FOREIGN_MOVE", "move %s was not prepared by %s", in.id, from.Name)
	}
	select {
	case <-in.done:
		// Completed but not yet claimed: the source keeps the session.
		if in.ss != nil && !s.undoMoveIn(in) {
			return nil, rpcerr.New(codes.FailedPrecondition, "MOVE_COMPLETED", "the device already moved in")
		}
	default:
		s.dropIncoming(in, rpcerr.New(codes.Aborted, "MOVE_ABORTED", "the source aborted the move: %s", req.GetReason()))
	}
	s.log.Info("move aborted", "session", in.rec.GetSessionId(), "from", from.Name, "reason", req.GetReason())
	return &mwsv1.AbortMoveResponse{}, nil
}

// ShipObjects receives a prepared move's objects ahead of its state: they
// go into the cache, checked like those CompleteMove brings.
func (p *peerService) ShipObjects(st mwsv1.Peer_ShipObjectsServer) error {
	s := p.s
	from, _ := pki.IdentityFrom(st.Context())
	first, err := st.Recv()
	if err != nil {
		return err
	}
	id := first.GetMoveId()
	if id == "" {
		return rpcerr.New(codes.InvalidArgument, "MOVE_ID_REQUIRED", "the first message of ShipObjects must name the move")
	}
	in := s.moves.get(id)
	if in == nil {
		return rpcerr.New(codes.NotFound, "UNKNOWN_MOVE", "no prepared move %q (expired or aborted)", id)
	}
	if in.from != from.Name {
		return rpcerr.New(codes.PermissionDenied, "FOREIGN_MOVE", "move %s was not prepared by %s", in.id, from.Name)
	}
	n, err := s.receiveObjects(func() (*mwsv1.ShippedObject, error) {
		m, err := st.Recv()
		if err != nil {
			return nil, err
		}
		if m.GetObject() == nil {
			return nil, rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "only objects may follow the move id")
		}
		return m.GetObject(), nil
	}, in.rec.GetObjects())
	if err != nil {
		return err
	}
	return st.SendAndClose(&mwsv1.ShipObjectsResponse{Objects: int32(n)})
}

// sessionFromRecord makes the session a peer described (checked by
// checkRecord), with its key hash as it is now and no streams yet.
func sessionFromRecord(rec *mwsv1.SessionRecord, keyHash []byte) *session {
	ss := &session{id: rec.GetSessionId(), user: rec.GetUser(), app: rec.GetApp(), labels: rec.GetLabels(),
		created: time.Unix(0, rec.GetCreatedUnixNano()), device: rec.GetDevice(),
		streams: map[string]*relayState{}, objects: map[string]struct{}{}, savepoint: map[string]*storedElement{}}
	copy(ss.keyHash[:], keyHash)
	ss.lastUsed.Store(time.Now().UnixNano())
	for _, d := range rec.GetObjects() {
		ss.objects[d] = struct{}{}
	}
	return ss
}

// CompleteMove receives a prepared session's state and installs it.
func (p *peerService) CompleteMove(st mwsv1.Peer_CompleteMoveServer) error {
	s := p.s
	from, _ := pki.IdentityFrom(st.Context())
	first, err := st.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return rpcerr.New(codes.InvalidArgument, "HEADER_REQUIRED", "the first message of CompleteMove must be the header")
	}
	in := s.moves.get(hdr.GetMoveId())
	if in == nil {
		return rpcerr.New(codes.NotFound, "UNKNOWN_MOVE", "no prepared move %q (expired or aborted)", hdr.GetMoveId())
	}
	if in.from != from.Name {
		return rpcerr.New(codes.PermissionDenied, "FOREIGN_MOVE", "move %s was not prepared by %s", in.id, from.Name)
	}
	if len(hdr.GetKeyHash()) != sha256.Size || len(hdr.GetStreams()) > s.cfg.MaxStreamsPerSession || len(hdr.GetSavepoint()) > s.cfg.MaxSavepointElements {
		return rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "key hash, streams or savepoint out of bounds")
	}
	if len(hdr.GetObjects()) > s.cfg.Cluster.MaxMoveObjects {
		return rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "%d objects exceed %d", len(hdr.GetObjects()), s.cfg.Cluster.MaxMoveObjects)
	}
	// The objects the session fetched since it was prepared (the prepared
	// record itself is shared with other calls of the move: not changed).
	announced := append(slices.Clone(in.rec.GetObjects()), hdr.GetObjects()...)
	for _, m := range hdr.GetStreams() {
		if err := checkMovedStream(m); err != nil {
			return err
		}
	}
	stateEnd := false
	objs, err := s.receiveObjects(func() (*mwsv1.ShippedObject, error) {
		m, err := st.Recv()
		if err != nil {
			return nil, err
		}
		if m.GetStateEnd() != nil {
			stateEnd = true
			return nil, io.EOF
		}
		if m.GetObject() == nil {
			return nil, rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "only objects, then the state's end, may follow the header")
		}
		return m.GetObject(), nil
	}, announced)
	if err != nil {
		return err
	}
	if !stateEnd {
		return rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "the state ended without its end message")
	}
	// The streams' new epochs: from the mux, as soon as it has handed every
	// stream of the header to this MWS's standby attaches, or else from the
	// source's last message, which is read meanwhile.
	var handed []*mwsv1.MovedStream
	var handedErr error
	handedIn := make(chan struct{})
	go func() {
		defer close(handedIn)
		handed, handedErr = readHanded(st, s.cfg.MaxStreamsPerSession)
	}()
	streams, early := handedByMux(hdr.GetStreams(), in.standbys, handedIn)
	if !early {
		<-handedIn
		if handedErr != nil {
			return handedErr
		}
		streams = handed
	}
	rec := in.rec
	ss := sessionFromRecord(rec, hdr.GetKeyHash())
	for _, d := range hdr.GetObjects() {
		ss.objects[d] = struct{}{}
	}
	for _, m := range streams {
		ss.streams[m.GetStreamId()] = &relayState{id: m.GetStreamId(), backend: m.GetBackend(), epoch: m.GetEpoch(),
			pre: in.standbys[m.GetStreamId()]}
	}
	if err := s.checkSavepoint(ss, hdr.GetSavepoint()); err != nil {
		return err
	}
	mergeSavepointLocked(ss, hdr.GetSavepoint())
	if len(in.docs) > 0 {
		if _, known := s.profiles.get(rec.GetDevice()); !known {
			if c, err := mergeLoginProfiles(in.docs, s.cfg.MaxProfiles); err == nil {
				s.profiles.set(rec.GetDevice(), c)
				s.docs.set(rec.GetDevice(), in.docs)
			}
		}
	}
	var installErr error
	ran := false
	in.once.Do(func() {
		ran = true
		if installErr = s.sessions.install(ss); installErr != nil {
			in.err = installErr
			s.sessions.release()
		} else {
			in.ss = ss
		}
		close(in.done)
	})
	if !ran {
		return rpcerr.New(codes.Aborted, "MOVE_ABORTED", "the move of session %s was aborted", ss.id)
	}
	if installErr != nil {
		s.forgetMove(in)
		return installErr
	}
	if early {
		// The source's word on the streams comes after the mux's.
		<-handedIn
		if handedErr == nil {
			handedErr = s.mergeHanded(ss, handed)
		}
		if handedErr != nil {
			s.answerLost(in, from.Name, handedErr)
			return handedErr
		}
	}
	// A standby of a stream that did not come, and one whose device does
	// not come in time, ends.
	ss.mu.Lock()
	for id, sb := range in.standbys {
		if ss.streams[id] == nil {
			sb.release()
		}
	}
	ss.mu.Unlock()
	time.AfterFunc(s.cfg.Cluster.MoveTokenTTL, func() { releaseStandbys(in.standbys) })
	s.registry.seen(rec.GetUser(), rec.GetDevice())
	s.replicas.drop(ss.id, 0)
	// The source drops its replicas once it hears the session is here: a
	// replica of this MWS's is placed first, so that the session survives
	// this MWS from the moment it is its own (the source marks it moving
	// here, so it may keep the replica itself).
	if err := s.replicate(st.Context(), ss); err != nil {
		s.log.Warn("replicating a session moved in", "session", ss.id, "error", err)
	}
	// The session is live here: its device may be using it already.
	ss.mu.Lock()
	nstreams, device := len(ss.streams), ss.device
	ss.mu.Unlock()
	if err := st.SendAndClose(&mwsv1.CompleteMoveResponse{Streams: int32(nstreams), Objects: int32(objs)}); err != nil {
		s.answerLost(in, from.Name, err)
		return err
	}
	s.log.Info("session moved in", "session", ss.id, "from", from.Name, "device", device,
		"streams", nstreams, "objects", objs, "reason", in.reason)
	return nil
}

// answerLost handles a move whose source will not hear that the session
// is here (err says why): the source keeps it, so this copy goes unless its
// device already took it.
func (s *Server) answerLost(in *incoming, from string, err error) {
	if s.undoMoveIn(in) {
		s.log.Warn("move answer lost: the session stays at the source", "session", in.ss.id, "from", from, "error", err)
	}
}

// checkMovedStream checks a stream a move names.
func checkMovedStream(m *mwsv1.MovedStream) error {
	if m.GetStreamId() == "" || len(m.GetStreamId()) > 64 || !nameRE.MatchString(m.GetBackend()) {
		return rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "stream %q of backend %q", m.GetStreamId(), m.GetBackend())
	}
	return nil
}

// readHanded reads a move's last message, the handed streams, and the
// call's end.
func readHanded(st mwsv1.Peer_CompleteMoveServer, limit int) ([]*mwsv1.MovedStream, error) {
	m, err := st.Recv()
	if errors.Is(err, io.EOF) {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "the move ended without its handed streams")
	}
	if err != nil {
		return nil, err
	}
	h := m.GetHanded()
	if h == nil {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "the handed streams must follow the state's end")
	}
	if len(h.GetStreams()) > limit {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "%d streams exceed %d", len(h.GetStreams()), limit)
	}
	for _, m := range h.GetStreams() {
		if err := checkMovedStream(m); err != nil {
			return nil, err
		}
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "the handed streams must be the last message")
		}
		return nil, err
	}
	return h.GetStreams(), nil
}

// handedByMux waits until the mux has handed every stream of want to this
// MWS (its standby attach got it) and returns them at their new epochs. It
// reports false at once when one cannot be known so (it has no standby,
// or its attach failed), or when stop closes.
func handedByMux(want []*mwsv1.MovedStream, standbys map[string]*standby, stop <-chan struct{}) ([]*mwsv1.MovedStream, bool) {
	out := make([]*mwsv1.MovedStream, 0, len(want))
	for _, m := range want {
		sb := standbys[m.GetStreamId()]
		if sb == nil {
			return nil, false
		}
		select {
		case <-sb.done:
		case <-stop:
			return nil, false
		}
		if sb.st == nil || sb.st.Epoch() != m.GetEpoch()+1 {
			return nil, false
		}
		out = append(out, &mwsv1.MovedStream{StreamId: m.GetStreamId(), Backend: m.GetBackend(), Epoch: sb.st.Epoch()})
	}
	return out, true
}

// mergeHanded takes the source's list of handed streams into ss, installed
// on the mux's word: a stream the source handed over that the header did
// not name (it opened as the move began) joins the session. An epoch that
// differs from the mux's is an error.
func (s *Server) mergeHanded(ss *session, handed []*mwsv1.MovedStream) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, m := range handed {
		r := ss.streams[m.GetStreamId()]
		switch {
		case r == nil && len(ss.streams) < s.cfg.MaxStreamsPerSession:
			ss.streams[m.GetStreamId()] = &relayState{id: m.GetStreamId(), backend: m.GetBackend(), epoch: m.GetEpoch()}
		case r == nil:
			return rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "stream %s exceeds %d streams", m.GetStreamId(), s.cfg.MaxStreamsPerSession)
		case r.epoch != m.GetEpoch():
			return rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "stream %s: handed at epoch %d, the mux says %d", m.GetStreamId(), m.GetEpoch(), r.epoch)
		}
	}
	return nil
}

// receiveObjects stores the original objects a move or a replica ships
// (next returns io.EOF after the last), checking each against its digest,
// the digests announced and the configured bounds.
func (s *Server) receiveObjects(next func() (*mwsv1.ShippedObject, error), announced []string) (int, error) {
	allowed := map[string]bool{}
	for _, d := range announced {
		allowed[d] = true
	}
	var total int64
	n := 0
	var cur *mwsv1.ShippedObject
	var body []byte
	for {
		o, err := next()
		if errors.Is(err, io.EOF) {
			if cur != nil {
				return n, rpcerr.New(codes.InvalidArgument, "BAD_MOVE_STATE", "object %s ends without its last chunk", cur.GetDigest())
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if cur == nil {
			if !allowed[o.GetDigest()] {
				return n, rpcerr.New(codes.InvalidArgument, "UNKNOWN_OBJECT_REF", "object %q is not one of the session's", o.GetDigest())
			}
			cur, body = o, nil
		}
		total += int64(len(o.GetChunk()))
		if total > s.cfg.Cluster.MaxMoveBytes {
			return n, rpcerr.New(codes.ResourceExhausted, "MOVE_TOO_LARGE", "shipped objects exceed %d bytes", s.cfg.Cluster.MaxMoveBytes)
		}
		body = append(body, o.GetChunk()...)
		if !o.GetLast() {
			continue
		}
		h := http.Header{}
		for k, v := range cur.GetHeader() {
			h.Set(k, v)
		}
		if _, _, err := s.cache.Insert(cur.GetDigest(), body, int(cur.GetStatus()), h); err != nil {
			return n, rpcerr.New(codes.InvalidArgument, "DIGEST_MISMATCH", "%v", err)
		}
		n++
		cur, body = nil, nil
	}
}
