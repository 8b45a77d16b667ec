package mws

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

type handoffState int

const (
	hoOffered     handoffState = iota // waiting for the target's consent
	hoAccepted                        // consent given; savepoint being uploaded
	hoSavepointed                     // savepoint stored, summary sent: waiting for Resume
	hoDone                            // the target resumed
	hoFailed                          // rolled back
)

// handoff is one CASH in progress.
type handoff struct {
	id             string
	ss             *session
	user, app      string
	labels         []string
	source, target string
	started        time.Time
	rollback       bool // a rollback delivery to the source itself

	mu       sync.Mutex
	state    handoffState
	failErr  error
	timings  timings
	answer   chan offerAnswer // the target's consent, once
	finished chan error       // the target's Resume outcome, once

	prepDone chan struct{} // closed when prepared is complete
	prepared map[string]variant
}

// timings are a handoff's phase durations in microseconds (paper Fig. 6).
type timings struct {
	SkeletonUs, StateUploadUs, AdaptationUs, DeliveryUs, ResumeUs, TotalUs int64
	MoveUs                                                                 int64 // FASH: the MASH to the target's MWS
}

func (t timings) proto() *mwsv1.HandoffTimings {
	return &mwsv1.HandoffTimings{SkeletonUs: t.SkeletonUs, StateUploadUs: t.StateUploadUs, AdaptationUs: t.AdaptationUs,
		DeliveryUs: t.DeliveryUs, ResumeUs: t.ResumeUs, TotalUs: t.TotalUs, MoveUs: t.MoveUs}
}

type offerAnswer struct {
	accept bool
	reason string
}

// variant is a server object prepared (adapted) for the target.
type variant struct {
	data        []byte
	contentType string
	adapted     bool
	err         error
}

func newHandoff(ss *session, source, target string) *handoff {
	var b [12]byte
	_, _ = rand.Read(b[:])
	ss.mu.Lock()
	app, labels := ss.app, slices.Clone(ss.labels)
	ss.mu.Unlock()
	return &handoff{
		id: hex.EncodeToString(b[:]), ss: ss, user: ss.user, app: app, labels: labels,
		source: source, target: target, started: time.Now(),
		answer: make(chan offerAnswer, 1), finished: make(chan error, 1), prepDone: make(chan struct{}),
	}
}

// fail marks the handoff failed unless the target already resumed; it
// reports whether it did.
func (h *handoff) fail(err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state == hoDone || h.state == hoFailed {
		return h.state == hoFailed
	}
	h.state = hoFailed
	h.failErr = err
	return true
}

func (h *handoff) setState(from, to handoffState) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != from {
		return false
	}
	h.state = to
	return true
}

// prepare adapts the session's cached objects for the target, overlapping
// with the source's savepoint upload: it needs only the target's identity.
func (h *handoff) prepare(ctx context.Context, s *Server, digests []string) {
	defer close(h.prepDone)
	t0 := time.Now()
	out := make(map[string]variant, len(digests))
	for _, d := range digests {
		obj, ok := s.cache.Lookup(d)
		if !ok {
			continue
		}
		data, ct, adapted, err := s.cfg.Adapter.Adapt(ctx, obj, h.target)
		out[d] = variant{data: data, contentType: ct, adapted: adapted, err: err}
	}
	h.mu.Lock()
	h.prepared = out
	h.timings.AdaptationUs = time.Since(t0).Microseconds()
	h.mu.Unlock()
}

// tokenPurpose says what a handoff token may be used for.
type tokenPurpose string

const (
	purposeOffer  tokenPurpose = "offer"
	purposeResume tokenPurpose = "resume"
)

type tokenEntry struct {
	h       *handoff
	device  string
	purpose tokenPurpose
	expires time.Time
}

// handoffTable holds handoff tokens and parked offers.
type handoffTable struct {
	mu      sync.Mutex
	tokens  map[[32]byte]*tokenEntry
	parked  map[string][]*parkedOffer // by target device
	tokenTT time.Duration
}

type parkedOffer struct {
	h     *handoff
	offer *mwsv1.HandoffOffer
}

func newHandoffTable(ttl time.Duration) *handoffTable {
	return &handoffTable{tokens: map[[32]byte]*tokenEntry{}, parked: map[string][]*parkedOffer{}, tokenTT: ttl}
}

// issue makes a single-use token for h bound to device.
func (t *handoffTable) issue(h *handoff, device string, purpose tokenPurpose, ttl time.Duration) (string, time.Time) {
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
	t.tokens[sha256.Sum256([]byte(tok))] = &tokenEntry{h: h, device: device, purpose: purpose, expires: exp}
	return tok, exp
}

// use consumes a token: it must exist, be unexpired, be bound to device
// and be for purpose. A token works once.
func (t *handoffTable) use(tok, device string, purpose tokenPurpose) (*handoff, error) {
	k := sha256.Sum256([]byte(tok))
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.tokens[k]
	if e == nil {
		return nil, rpcerr.New(codes.Unauthenticated, "BAD_TOKEN", "handoff token unknown, already used or expired")
	}
	if e.device != device || e.purpose != purpose {
		// A token presented by the wrong device is burnt: it was leaked.
		delete(t.tokens, k)
		return nil, rpcerr.New(codes.PermissionDenied, "TOKEN_NOT_FOR_DEVICE", "handoff token is not for this device or purpose")
	}
	delete(t.tokens, k)
	if time.Now().After(e.expires) {
		return nil, rpcerr.New(codes.Unauthenticated, "TOKEN_EXPIRED", "handoff token expired")
	}
	return e.h, nil
}

func (t *handoffTable) park(device string, p *parkedOffer) {
	t.mu.Lock()
	t.parked[device] = append(t.parked[device], p)
	t.mu.Unlock()
}

func (t *handoffTable) unpark(h *handoff) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.parked[h.target]
	list = slices.DeleteFunc(list, func(p *parkedOffer) bool { return p.h == h })
	if len(list) == 0 {
		delete(t.parked, h.target)
	} else {
		t.parked[h.target] = list
	}
}

func (t *handoffTable) parkedFor(device string) []*parkedOffer {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.parked[device])
}

// deviceOnline re-offers parked handoffs to a device that connected.
func (s *Server) deviceOnline(user, device string) {
	for _, p := range s.handoffs.parkedFor(device) {
		if p.h.user == user {
			s.events.publish(device, &mwsv1.Event{UnixNano: time.Now().UnixNano(), Msg: &mwsv1.Event_Offer{Offer: p.offer}})
		}
	}
}

func sortSummaries(s []*mwsv1.ElementSummary) {
	slices.SortFunc(s, func(a, b *mwsv1.ElementSummary) int { return strings.Compare(a.Name, b.Name) })
}

// objectVariant returns the prepared variant of digest, adapting now if it
// was not prepared.
func (s *Server) objectVariant(ctx context.Context, h *handoff, digest string) (variant, bool) {
	h.mu.Lock()
	v, ok := h.prepared[digest]
	h.mu.Unlock()
	if ok {
		return v, true
	}
	obj, ok := s.cache.Lookup(digest)
	if !ok {
		return variant{}, false
	}
	data, ct, adapted, err := s.cfg.Adapter.Adapt(ctx, obj, h.target)
	return variant{data: data, contentType: ct, adapted: adapted, err: err}, true
}
