package clientlib

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"

	"github.com/imashproject/imash/internal/grpcbuf"
	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// route is the device's connection to one MWS, with its login credential
// there.
type route struct {
	addr string
	cc   *grpc.ClientConn
	api  mwsv1.DeviceClient

	mu   sync.RWMutex
	mws  string
	cred string
}

func (r *route) name() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.mws
}

func (r *route) setName(n string) {
	r.mu.Lock()
	r.mws = n
	r.mu.Unlock()
}

func (r *route) credential() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cred
}

func (r *route) setCred(c string) {
	r.mu.Lock()
	r.cred = c
	r.mu.Unlock()
}

// GetRequestMetadata attaches the route's credential to every call.
func (r *route) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if c := r.credential(); c != "" {
		return map[string]string{"authorization": "Bearer " + c}, nil
	}
	return nil, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (*route) RequireTransportSecurity() bool { return true }

// dialRoute returns the route to addr, connecting if needed (through
// Config.Dialer when there is one).
func (c *Client) dialRoute(addr string) (*route, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.routes[addr]; r != nil {
		return r, nil
	}
	r := &route{addr: addr}
	opts := append(grpcbuf.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(c.tls)),
		grpc.WithPerRPCCredentials(r),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	if c.cfg.Dialer != nil {
		opts = append(opts, grpc.WithContextDialer(c.cfg.Dialer))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("clientlib: dial %s: %w", addr, err)
	}
	r.cc, r.api = cc, mwsv1.NewDeviceClient(cc)
	c.routes[addr] = r
	return r, nil
}

func (c *Client) homeRoute() *route {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.home
}

func (c *Client) track(s *Session) {
	c.mu.Lock()
	c.sessions[s.id] = s
	c.mu.Unlock()
}

func (c *Client) untrackSession(s *Session) {
	c.mu.Lock()
	if c.sessions[s.id] == s {
		delete(c.sessions, s.id)
	}
	c.mu.Unlock()
}

func (c *Client) sessionByID(id string) *Session {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.sessions[id]
}

// MoveStats counts the moves this client followed.
type MoveStats struct {
	// Followed counts sessions that moved to another MWS; TLSResumed those
	// moves whose new connection resumed TLS without a full handshake.
	Followed, TLSResumed int
	// LastFollow is how long the last follow took (MoveIn round trip).
	LastFollow time.Duration
}

// MoveStats returns the counters.
func (c *Client) MoveStats() MoveStats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.stats
}

// moveTarget reads where a session went from a SESSION_MOVED or
// STREAM_MOVED error; nil when err says nothing of it.
func moveTarget(err error) *mwsv1.MoveTarget {
	switch rpcerr.Reason(err) {
	case "SESSION_MOVED", "STREAM_MOVED":
	default:
		return nil
	}
	m := rpcerr.Meta(err)
	if m["addr"] == "" {
		return nil
	}
	exp, _ := strconv.ParseInt(m["expires_unix_nano"], 10, 64)
	return &mwsv1.MoveTarget{SessionId: m["session_id"], Mws: &mwsv1.MWSAddr{Name: m["mws"], Addr: m["addr"]}, Token: m["token"], ExpiresUnixNano: exp}
}

// follow moves the session to the MWS of t, if it is still on from: it
// presents the move token there (or, when the token is spent or expired,
// the session key), and takes the credential and the new session key.
func (s *Session) follow(ctx context.Context, t *mwsv1.MoveTarget, from *route) error {
	return s.followTo(ctx, t, from, false)
}

// followTo is follow; with here, it asks from's MWS too (by key: it may
// keep the replica of the MWS the session moved on to).
func (s *Session) followTo(ctx context.Context, t *mwsv1.MoveTarget, from *route, here bool) error {
	s.followMu.Lock()
	defer s.followMu.Unlock()
	if cur := s.route(); cur != from || cur.addr == t.GetMws().GetAddr() && !here {
		return nil // another call followed already
	}
	c := s.c
	t0 := time.Now()
	var p peer.Peer
	var r *route
	var resp *mwsv1.MoveInResponse
	for i := 0; ; i++ {
		var err error
		if r, err = c.dialRoute(t.GetMws().GetAddr()); err != nil {
			return err
		}
		// The token if there is one; the session key when there is none (the
		// old MWS is gone) or it is spent or expired.
		key, prev := s.keys()
		byKey := &mwsv1.MoveInRequest{SessionId: s.id, SessionKey: key}
		req := byKey
		if t.GetToken() != "" {
			req = &mwsv1.MoveInRequest{Token: t.GetToken()}
		}
		resp, err = r.api.MoveIn(ctx, req, grpc.Peer(&p))
		if req != byKey && (rpcerr.Reason(err) == "BAD_MOVE_TOKEN" || rpcerr.Reason(err) == "TOKEN_EXPIRED") {
			resp, err = r.api.MoveIn(ctx, byKey, grpc.Peer(&p))
		}
		if req == byKey && prev != "" && rpcerr.Reason(err) == "BAD_SESSION_KEY" {
			// The MWS the session last moved to rotated its key and died
			// before its replica heard of the new one: the replica knows
			// the key before. Anywhere else that key no longer works.
			resp, err = r.api.MoveIn(ctx, &mwsv1.MoveInRequest{SessionId: s.id, SessionKey: prev}, grpc.Peer(&p))
		}
		if next := moveTarget(err); next != nil && i < maxFollows {
			t = next // it moved on before this device followed
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	s.movedIn(r, from, resp, time.Since(t0), &p)
	return nil
}

// movedIn makes r, where the session moved in with resp, its route. p is
// the peer of the call, for whether it resumed TLS.
func (s *Session) movedIn(r, from *route, resp *mwsv1.MoveInResponse, took time.Duration, p *peer.Peer) {
	c := s.c
	r.setCred(resp.Credential)
	r.setName(resp.Mws)
	s.mu.Lock()
	if s.key != resp.SessionKey {
		s.prevKey = s.key
	}
	s.r, s.key = r, resp.SessionKey
	s.mu.Unlock()
	resumed := false
	if p == nil {
		p = &peer.Peer{}
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		resumed = ti.State.DidResume
	}
	c.mu.Lock()
	if c.home == from {
		c.home = r
	}
	if len(resp.Peers) > 0 {
		c.peers = resp.Peers
	}
	c.stats.Followed++
	if resumed {
		c.stats.TLSResumed++
	}
	c.stats.LastFollow = took
	c.mu.Unlock()
	c.log.Info("session followed to another MWS", "session", s.id, "mws", resp.Mws, "tls_resumed", resumed, "took", took)
}

func (s *Session) currentKey() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.key
}

// keys returns the session's key and the one before the last move.
func (s *Session) keys() (key, prev string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.key, s.prevKey
}

// recover follows the session after err, when err says it moved, or when
// its MWS is unreachable or no longer knows it (it restarted: then the
// session is looked for, with its key, on the cluster's other MWSs). It
// reports whether the call may be retried.
func (s *Session) recover(ctx context.Context, err error, from *route) bool {
	var skip string
	if t := moveTarget(err); t != nil {
		ferr := s.follow(ctx, t, from)
		if ferr == nil || !unreachable(ferr) {
			return ferr == nil
		}
		// The MWS it moved to is gone: its replica is elsewhere.
		skip = t.GetMws().GetAddr()
		s.c.log.Warn("the MWS the session moved to is unreachable: looking for it elsewhere", "session", s.id, "mws", t.GetMws().GetName(), "error", ferr)
	}
	switch {
	case skip != "":
	case unreachable(err):
	case rpcerr.Reason(err) == "BAD_CREDENTIAL" || rpcerr.Reason(err) == "UNKNOWN_SESSION":
		// Its MWS restarted: the session went elsewhere meanwhile (a
		// drain), or lives on as a replica.
	default:
		return false
	}
	s.c.mu.RLock()
	peers := s.c.peers
	s.c.mu.RUnlock()
	tried := map[string]bool{skip: skip != ""}
	for range 2 {
		for _, p := range peers {
			if tried[p.GetAddr()] {
				continue
			}
			tried[p.GetAddr()] = true
			// The MWS it left too, by key: it may keep the replica of the
			// MWS the session moved on to.
			if s.followTo(ctx, &mwsv1.MoveTarget{SessionId: s.id, Mws: p}, from, true) == nil {
				return true
			}
		}
		// MWSs may have joined since the list was made: ask for it again.
		if peers = s.c.refreshPeers(ctx, peers); peers == nil {
			break
		}
	}
	return false
}

// refreshPeers asks the MWSs of known, one after the other, and then the
// address the client was dialled with, for the cluster's live MWSs, keeps
// the first answer as the device's list and returns it (nil when none
// answered).
func (c *Client) refreshPeers(ctx context.Context, known []*mwsv1.MWSAddr) []*mwsv1.MWSAddr {
	if !slices.ContainsFunc(known, func(p *mwsv1.MWSAddr) bool { return p.GetAddr() == c.seed }) {
		known = append(slices.Clip(known), &mwsv1.MWSAddr{Addr: c.seed})
	}
	for _, p := range known {
		r, err := c.dialRoute(p.GetAddr())
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := r.api.Ping(pctx, &mwsv1.PingRequest{})
		cancel()
		if err != nil || len(resp.GetPeers()) == 0 {
			continue
		}
		c.mu.Lock()
		c.peers = resp.GetPeers()
		c.mu.Unlock()
		return resp.GetPeers()
	}
	return nil
}

// maxFollows bounds how many moves one call follows.
const maxFollows = 4

// retry runs call on the session's MWS, following the session when it
// moved and trying again.
func (s *Session) retry(ctx context.Context, call func(*route) error) error {
	for i := 0; ; i++ {
		r := s.route()
		key := s.currentKey()
		err := call(r)
		if err != nil && i < maxFollows && rpcerr.Reason(err) == "BAD_SESSION_KEY" {
			s.followMu.Lock() // a follow in progress ends first
			s.followMu.Unlock()
			if s.currentKey() != key {
				continue // the session moved and its key rotated while the call was made
			}
		}
		if err == nil || i == maxFollows || ctx.Err() != nil || !s.recover(ctx, err, r) {
			return err
		}
	}
}

// eventLoop runs the device's event channel at its home MWS, calling f for
// each event, and moves the channel when the home moves. Probes are
// answered and Moved events followed here.
func (c *Client) eventLoop(ctx context.Context, f func(*mwsv1.Event) error) error {
	for {
		home := c.homeRoute()
		err := c.eventsAt(ctx, home, f)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.homeRoute() != home {
			continue // the device moved: listen at its new MWS
		}
		return err
	}
}

// errHomeMoved ends an event channel whose MWS is no longer home.
var errHomeMoved = errors.New("clientlib: home MWS moved")

func (c *Client) eventsAt(ctx context.Context, home *route, f func(*mwsv1.Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := home.api.Events(ctx, &mwsv1.EventsRequest{})
	if err != nil {
		return err
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			return err
		}
		switch m := ev.Msg.(type) {
		case *mwsv1.Event_Probe:
			go func() {
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				defer pcancel()
				_, _ = home.api.ProbeReply(pctx, &mwsv1.ProbeReplyRequest{Seq: m.Probe.Seq})
			}()
			continue
		case *mwsv1.Event_Moved:
			if s := c.sessionByID(m.Moved.GetSessionId()); s != nil {
				if err := s.follow(ctx, m.Moved, s.route()); err != nil {
					c.log.Warn("following a moved session", "session", s.id, "error", err)
				}
			}
			if c.homeRoute() != home {
				return errHomeMoved
			}
			continue
		}
		if err := f(ev); err != nil {
			return err
		}
	}
}

// unreachable reports whether err says the MWS could not be reached (it
// is down or gone), as opposed to an answer from it.
func unreachable(err error) bool {
	return rpcerr.Code(err) == codes.Unavailable && rpcerr.Reason(err) == ""
}
