package mws

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// session is one application session: its user, device, streams and the
// server objects it has fetched (which a savepoint may refer to).
type session struct {
	id      string
	user    string
	app     string
	labels  []string
	created time.Time
	// lastUsed is when a call last touched the session (Unix nanoseconds).
	lastUsed atomic.Int64

	mu      sync.Mutex
	device  string
	keyHash [32]byte // SHA-256 of the session key; rotates at every handoff
	streams map[string]*relayState
	objects map[string]struct{}
	// savepoint is the merged semantic savepoint, by element name.
	savepoint map[string]*storedElement
	// handoff is the handoff in progress, if any.
	handoff *handoff
	// move is the MASH moving the session away, if any: calls on the
	// session wait for it to end.
	move *moveOut
	// inflight counts Gets being served; quiet is closed when it drops to
	// zero while a move waits for it.
	inflight int
	quiet    chan struct{}
	// leaving is closed when the session freezes for a move its device
	// follows: the relays end then, telling the device where to go, so that
	// it is on its way while the streams are handed over (nil until a relay
	// asks for it).
	leaving chan struct{}

	// repl is the session's replication to its peers (replica.go).
	repl replState
}

// endCall ends a call counted by Server.sessionCall.
func (ss *session) endCall() {
	ss.mu.Lock()
	ss.inflight--
	if ss.inflight == 0 && ss.quiet != nil {
		close(ss.quiet)
		ss.quiet = nil
	}
	ss.mu.Unlock()
}

// waitQuiet waits until no counted call is being served, or ctx ends.
func (ss *session) waitQuiet(ctx context.Context) {
	ss.mu.Lock()
	if ss.inflight == 0 {
		ss.mu.Unlock()
		return
	}
	if ss.quiet == nil {
		ss.quiet = make(chan struct{})
	}
	ch := ss.quiet
	ss.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// rotateKeyLocked gives the session a new key and returns it; the old key
// no longer works.
func (ss *session) rotateKeyLocked() string {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	key := base64.RawURLEncoding.EncodeToString(raw[:])
	ss.keyHash = sha256.Sum256([]byte(key))
	return key
}

// relayState is what the session remembers of a raw stream between device
// connections: enough to attach to it again at the mux.
type relayState struct {
	id      string
	backend string
	epoch   uint64
	active  bool // a device Stream call is relaying it now
	// pre is the channel a move's target opened ahead at the mux, for the
	// stream's first relay here.
	pre *standby
}

func (ss *session) info() *mwsv1.SessionInfo {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return &mwsv1.SessionInfo{
		SessionId: ss.id, User: ss.user, App: ss.app, Labels: slices.Clone(ss.labels), Device: ss.device,
		CreatedUnixNano: ss.created.UnixNano(), Streams: int32(len(ss.streams)), Objects: int32(len(ss.objects)),
	}
}

func (ss *session) addObject(digest string) {
	ss.mu.Lock()
	ss.objects[digest] = struct{}{}
	ss.mu.Unlock()
}

// sessionTable is the session manager's index.
type sessionTable struct {
	mu      sync.Mutex
	byID    map[string]*session
	moved   map[string]*forward // sessions that moved away, by id
	pending int                 // places reserved for incoming moves
	// loadChanged is signalled (never blocking) when the number of
	// sessions changes, for the load published to the cluster.
	loadChanged chan struct{}
	// installed is closed, and replaced, whenever a moved session is
	// installed (changed).
	installed  chan struct{}
	perUser    map[string]int
	max        int
	maxPerUser int
}

func newSessionTable(max, maxPerUser int) *sessionTable {
	return &sessionTable{byID: map[string]*session{}, moved: map[string]*forward{}, perUser: map[string]int{}, max: max, maxPerUser: maxPerUser,
		loadChanged: make(chan struct{}, 1), installed: make(chan struct{})}
}

// changed returns a channel closed when the next moved session is
// installed.
func (t *sessionTable) changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.installed
}

func (t *sessionTable) loadChangedLocked() {
	select {
	case t.loadChanged <- struct{}{}:
	default:
	}
}

func (t *sessionTable) open(user, device, app string, labels []string) (*session, string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID)+t.pending >= t.max {
		return nil, "", rpcerr.New(codes.ResourceExhausted, "TOO_MANY_SESSIONS", "this MWS holds its limit of %d sessions", t.max)
	}
	if t.perUser[user] >= t.maxPerUser {
		return nil, "", rpcerr.New(codes.ResourceExhausted, "TOO_MANY_USER_SESSIONS", "user %q holds the limit of %d sessions", user, t.maxPerUser)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	ss := &session{
		id: hex.EncodeToString(b[:]), user: user, device: device, app: app, labels: labels, created: time.Now(),
		streams: map[string]*relayState{}, objects: map[string]struct{}{}, savepoint: map[string]*storedElement{},
	}
	key := ss.rotateKeyLocked()
	ss.lastUsed.Store(ss.created.UnixNano())
	t.byID[ss.id] = ss
	t.perUser[user]++
	t.loadChangedLocked()
	return ss, key, nil
}

// get returns the session if the principal may use it with key. A
// session of another user is reported as not found, so ids cannot be
// probed.
func (t *sessionTable) get(p principal, id, key string) (*session, error) {
	ss, err := t.owned(p, id)
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	kh := ss.keyHash
	ss.mu.Unlock()
	if h := sha256.Sum256([]byte(key)); subtle.ConstantTimeCompare(h[:], kh[:]) != 1 {
		return nil, rpcerr.New(codes.Unauthenticated, "BAD_SESSION_KEY", "session key missing, wrong or revoked (it rotates at every handoff)")
	}
	return ss, nil
}

// owned returns the session if it belongs to the principal's user and is
// bound to the principal's device, without asking for its key; it counts
// as a use of the session.
func (t *sessionTable) owned(p principal, id string) (*session, error) {
	t.mu.Lock()
	ss := t.byID[id]
	fw := t.moved[id]
	t.mu.Unlock()
	if ss == nil && fw != nil && fw.user == p.user && fw.device == p.device {
		return nil, fw.redirect()
	}
	if ss == nil || ss.user != p.user {
		return nil, rpcerr.New(codes.NotFound, "UNKNOWN_SESSION", "no session %q for user %q", id, p.user)
	}
	ss.mu.Lock()
	dev := ss.device
	ss.mu.Unlock()
	if dev != p.device {
		return nil, rpcerr.New(codes.PermissionDenied, "SESSION_ON_OTHER_DEVICE", "session %q is on device %q", id, dev)
	}
	ss.lastUsed.Store(time.Now().UnixNano())
	return ss, nil
}

// leavingLocked returns the channel closed when the session next freezes
// for a move its device follows.
func (ss *session) leavingLocked() <-chan struct{} {
	if ss.leaving == nil {
		ss.leaving = make(chan struct{})
	}
	return ss.leaving
}

// streamsSnapshot returns the session's streams.
func (ss *session) streamsSnapshot() []*relayState {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*relayState, 0, len(ss.streams))
	for _, r := range ss.streams {
		out = append(out, r)
	}
	return out
}

func (t *sessionTable) remove(id string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	ss := t.byID[id]
	if ss == nil {
		return nil
	}
	t.dropLocked(ss)
	return ss
}

// dropLocked forgets ss and frees its place in its user's count.
func (t *sessionTable) dropLocked(ss *session) {
	t.loadChangedLocked()
	delete(t.byID, ss.id)
	if t.perUser[ss.user]--; t.perUser[ss.user] <= 0 {
		delete(t.perUser, ss.user)
	}
}

func (t *sessionTable) list(user string) []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*session
	for _, ss := range t.byID {
		if user == "" || ss.user == user {
			out = append(out, ss)
		}
	}
	slices.SortFunc(out, func(a, b *session) int { return a.created.Compare(b.created) })
	return out
}

// idle removes and returns the sessions untouched since before cutoff that
// have no handoff in progress and no stream a device is relaying.
func (t *sessionTable) idle(cutoff time.Time) []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*session
	for _, ss := range t.byID {
		if ss.lastUsed.Load() >= cutoff.UnixNano() {
			continue
		}
		ss.mu.Lock()
		busy := ss.handoff != nil || ss.move != nil
		for _, r := range ss.streams {
			busy = busy || r.active
		}
		ss.mu.Unlock()
		if busy {
			continue
		}
		t.dropLocked(ss)
		out = append(out, ss)
	}
	return out
}

func (t *sessionTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

func sha256Of(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// lookup returns the session id, whoever it belongs to.
func (t *sessionTable) lookup(id string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

// holds reports whether ss is in the table.
func (t *sessionTable) holds(ss *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[ss.id] == ss
}

// forward removes ss, which moved to another MWS, and keeps fw to redirect
// its device. Expired forwarding records are dropped on the way.
func (t *sessionTable) forward(ss *session, fw *forward) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for id, f := range t.moved {
		if now.After(f.expires) {
			delete(t.moved, id)
		}
	}
	if t.byID[ss.id] == ss {
		t.dropLocked(ss)
	}
	t.moved[ss.id] = fw
}

// reserve holds a place for an incoming session; release gives it back.
func (t *sessionTable) reserve(user string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID)+t.pending >= t.max {
		return rpcerr.New(codes.ResourceExhausted, "TOO_MANY_SESSIONS", "this MWS holds its limit of %d sessions", t.max)
	}
	if t.perUser[user] >= t.maxPerUser {
		return rpcerr.New(codes.ResourceExhausted, "TOO_MANY_USER_SESSIONS", "user %q holds the limit of %d sessions", user, t.maxPerUser)
	}
	t.pending++
	t.loadChangedLocked()
	return nil
}

func (t *sessionTable) release() {
	t.mu.Lock()
	t.pending--
	t.loadChangedLocked()
	t.mu.Unlock()
}

// install adds a session that moved here, using a place reserved for it.
func (t *sessionTable) install(ss *session) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[ss.id] != nil {
		return rpcerr.New(codes.AlreadyExists, "SESSION_EXISTS", "session %s is already here", ss.id)
	}
	t.pending--
	t.byID[ss.id] = ss
	t.perUser[ss.user]++
	delete(t.moved, ss.id)
	close(t.installed)
	t.installed = make(chan struct{})
	return nil
}

// loadNow returns the sessions held and reserved.
func (t *sessionTable) loadNow() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID) + t.pending
}

// forwardOf returns the forwarding record of a session that moved away.
func (t *sessionTable) forwardOf(id string) *forward {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.moved[id]
}

// notHere is the error for device asking for a session this MWS does not
// hold: where it went, if it moved away from here with that device.
func (t *sessionTable) notHere(id, device string) error {
	if fw := t.forwardOf(id); fw != nil && fw.device == device {
		return fw.redirect()
	}
	return rpcerr.New(codes.NotFound, "UNKNOWN_SESSION", "no session %q here", id)
}

// forwardedDevices lists the devices of sessions that moved away (and whose
// records have not expired).
func (t *sessionTable) forwardedDevices() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	var out []string
	for _, f := range t.moved {
		if now.Before(f.expires) && !slices.Contains(out, f.device) {
			out = append(out, f.device)
		}
	}
	return out
}
