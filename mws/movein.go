package mws

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// MoveIn lets a device follow its session here: with the move token, or
// with the session's current key. Either proves the device to this MWS
// without a login: the token was issued here to the source MWS (an
// authenticated peer) for this device certificate, and the key only the
// device holds.
func (d *deviceService) MoveIn(ctx context.Context, req *mwsv1.MoveInRequest) (*mwsv1.MoveInResponse, error) {
	resp, _, err := d.s.moveIn(ctx, req)
	return resp, err
}

// moveIn is MoveIn; it also returns the session moved in.
func (s *Server) moveIn(ctx context.Context, req *mwsv1.MoveInRequest) (*mwsv1.MoveInResponse, *session, error) {
	id, _ := pki.IdentityFrom(ctx)
	if len(req.GetToken()) > 256 || len(req.GetSessionId()) > 64 || len(req.GetSessionKey()) > 256 {
		return nil, nil, rpcerr.New(codes.InvalidArgument, "FIELD_TOO_LONG", "token, session id or key too long")
	}
	var ss *session
	if req.GetToken() != "" {
		in, err := s.moves.use(req.GetToken(), id.Name, req.GetSessionId())
		if err != nil {
			s.log.Warn("move-in refused", "device", id.Name, "error", err)
			return nil, nil, err
		}
		// The device may arrive while the state is still on its way.
		wait := time.NewTimer(s.cfg.Cluster.MoveTimeout)
		defer wait.Stop()
		select {
		case <-in.done:
		case <-wait.C:
			return nil, nil, rpcerr.New(codes.DeadlineExceeded, "MOVE_TIMEOUT", "the session's state did not arrive in time")
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		if in.err != nil {
			return nil, nil, rpcerr.New(codes.Aborted, "MOVE_ABORTED", "the move failed: %v; the session stays where it was", in.err)
		}
		s.moves.remove(in)
		ss = in.ss
		if !s.sessions.holds(ss) {
			// It moved on before the device followed: point it further.
			return nil, nil, s.sessions.notHere(ss.id, id.Name)
		}
	} else {
		ss = s.sessions.lookup(req.GetSessionId())
		if ss == nil {
			// Its MWS may be gone, with a replica here.
			var err error
			if ss, err = s.takeUp(ctx, req.GetSessionId(), id.Name, req.GetSessionKey()); err != nil {
				return nil, nil, err
			}
		}
		if ss == nil {
			return nil, nil, s.sessions.notHere(req.GetSessionId(), id.Name)
		}
		ss.mu.Lock()
		kh := ss.keyHash
		ss.mu.Unlock()
		if h := sha256.Sum256([]byte(req.GetSessionKey())); subtle.ConstantTimeCompare(h[:], kh[:]) != 1 {
			return nil, nil, rpcerr.New(codes.Unauthenticated, "BAD_SESSION_KEY", "session key missing, wrong or revoked")
		}
	}
	// A session that is moving on gets its new key where it lands.
	for {
		ss.mu.Lock()
		mv := ss.move
		ss.mu.Unlock()
		if mv == nil {
			break
		}
		select {
		case <-mv.done:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if !s.sessions.holds(ss) {
		return nil, nil, s.sessions.notHere(ss.id, id.Name)
	}
	ss.mu.Lock()
	if ss.move != nil {
		ss.mu.Unlock()
		return nil, nil, rpcerr.New(codes.Unavailable, "SESSION_MOVING", "session %s is being moved", ss.id)
	}
	if ss.device != id.Name {
		dev := ss.device
		ss.mu.Unlock()
		return nil, nil, rpcerr.New(codes.PermissionDenied, "SESSION_ON_OTHER_DEVICE", "session %q is on device %q", ss.id, dev)
	}
	key := ss.rotateKeyLocked()
	user := ss.user
	ss.mu.Unlock()
	ss.lastUsed.Store(time.Now().UnixNano())
	tok, exp := s.creds.issue(user, id.Name)
	s.registry.seen(user, id.Name)
	s.log.Info("device moved in", "session", ss.id, "device", id.Name, "user", user)
	s.replicateLater(ss)
	return &mwsv1.MoveInResponse{Credential: tok, ExpiresUnixNano: exp.UnixNano(), Mws: s.cfg.Name,
		SessionId: ss.id, SessionKey: key, Peers: s.peerAddrs()}, ss, nil
}

// peerAddrs lists the cluster's live MWSs, this one included, for devices:
// where to look for a session when the MWS holding it is gone.
func (s *Server) peerAddrs() []*mwsv1.MWSAddr {
	m := s.cfg.Cluster.Membership
	if m == nil {
		return nil
	}
	out := []*mwsv1.MWSAddr{{Name: s.cfg.Name, Addr: s.cfg.Cluster.Addr}}
	for _, p := range m.Peers() {
		if p.Alive {
			out = append(out, &mwsv1.MWSAddr{Name: p.Name, Addr: p.Addr})
		}
	}
	return out
}

// Ping answers at once.
func (d *deviceService) Ping(context.Context, *mwsv1.PingRequest) (*mwsv1.PingResponse, error) {
	return &mwsv1.PingResponse{Mws: d.s.cfg.Name, UnixNano: time.Now().UnixNano(), Peers: d.s.peerAddrs()}, nil
}

// maxPathSamples bounds one path report.
const maxPathSamples = 64

// ReportPaths takes a device's round-trip times to the MWSs; a better path
// moves its sessions there.
func (d *deviceService) ReportPaths(ctx context.Context, req *mwsv1.ReportPathsRequest) (*mwsv1.ReportPathsResponse, error) {
	s := d.s
	p := principalFrom(ctx)
	if len(req.GetSamples()) > maxPathSamples {
		return nil, rpcerr.New(codes.InvalidArgument, "TOO_MANY_SAMPLES", "%d samples exceed %d", len(req.GetSamples()), maxPathSamples)
	}
	rtts := map[string]time.Duration{}
	for _, smp := range req.GetSamples() {
		if smp.GetRttUs() < 0 || !nameRE.MatchString(smp.GetMws()) {
			return nil, rpcerr.New(codes.InvalidArgument, "BAD_SAMPLE", "sample %q %dus", smp.GetMws(), smp.GetRttUs())
		}
		rtts[smp.GetMws()] = time.Duration(smp.GetRttUs()) * time.Microsecond
	}
	policy := s.cfg.Cluster.BetterPath
	if policy == nil || s.cfg.Cluster.Membership == nil {
		return &mwsv1.ReportPathsResponse{}, nil
	}
	to, ok := policy(s.cfg.Name, rtts)
	if !ok || !s.paths.due(p.device) {
		return &mwsv1.ReportPathsResponse{}, nil
	}
	peer, err := s.pickPeer(to)
	if err != nil {
		return &mwsv1.ReportPathsResponse{}, nil
	}
	go func() {
		for _, ss := range s.sessions.list(p.user) {
			ss.mu.Lock()
			mine := ss.device == p.device
			ss.mu.Unlock()
			if mine {
				_, _ = s.moveSession(context.Background(), ss, peer, moveOpts{reason: "path"})
			}
		}
	}()
	return &mwsv1.ReportPathsResponse{}, nil
}

// pathMoves rate-limits better-path moves per device.
type pathMoves struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether device may be moved for a better path now (once a
// minute at most), and records that it is.
func (p *pathMoves) due(device string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		p.last = map[string]time.Time{}
	}
	now := time.Now()
	if now.Sub(p.last[device]) < time.Minute {
		return false
	}
	for d, t := range p.last {
		if now.Sub(t) > time.Minute {
			delete(p.last, d)
		}
	}
	p.last[device] = now
	return true
}

// profileDocs keeps each device's profile documents from its login, to
// give them to the MWS its sessions move to.
type profileDocs struct {
	mu sync.Mutex
	m  map[string][][]byte
}

func (p *profileDocs) set(device string, docs [][]byte) {
	p.mu.Lock()
	if p.m == nil {
		p.m = map[string][][]byte{}
	}
	p.m[device] = slices.Clone(docs)
	p.mu.Unlock()
}

func (s *Server) deviceDocs(device string) [][]byte {
	s.docs.mu.Lock()
	defer s.docs.mu.Unlock()
	return s.docs.m[device]
}
