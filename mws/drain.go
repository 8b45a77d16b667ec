package mws

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// DrainProgress reports a drain.
type DrainProgress struct {
	Moved, Remaining, Failed int
	LastErr                  error
}

// drainParallel is how many sessions a drain moves at once.
const drainParallel = 8

// Drain stops taking sessions and moves every session to peers (MASH),
// each to the least loaded one at the time. It calls progress (if not nil)
// after every session, then waits up to DrainGrace for devices to follow.
// A session that cannot move (a handoff in progress, no peer takes it) is
// tried again until ctx ends. A drain that ends unfinished (ctx ended) lets
// the MWS take sessions again, unless another drain goes on or one
// finished; a finished drain leaves it draining until it stops.
func (s *Server) Drain(ctx context.Context, progress func(DrainProgress)) error {
	return s.drain(ctx, progress, false)
}

// drain is Drain; with keep, an unfinished drain leaves the MWS draining
// too (it is stopping).
func (s *Server) drain(ctx context.Context, progress func(DrainProgress), keep bool) (err error) {
	if s.cfg.Cluster.Membership == nil {
		return rpcerr.New(codes.FailedPrecondition, "NO_PEERS", "this MWS is not in a cluster")
	}
	s.drainMu.Lock()
	s.drains++
	s.draining.Store(true)
	s.drainMu.Unlock()
	defer func() {
		s.drainMu.Lock()
		s.drains--
		s.drained = s.drained || err == nil || keep
		resume := s.drains == 0 && !s.drained
		if resume {
			s.draining.Store(false)
		}
		s.drainMu.Unlock()
		if resume {
			s.publishLoad()
			s.log.Warn("drain ended unfinished: taking sessions again", "error", err, "sessions_left", s.sessions.len())
		}
	}()
	s.publishLoad()
	s.log.Info("drain started", "sessions", s.sessions.len())
	var mu sync.Mutex
	var p DrainProgress
	for round := 0; ; round++ {
		todo := s.sessions.list("")
		if len(todo) == 0 {
			break
		}
		if round > 0 {
			t := time.NewTimer(200 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		sem := make(chan struct{}, drainParallel)
		var wg sync.WaitGroup
		for _, ss := range todo {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				peer, err := s.pickPeer("")
				if err == nil {
					_, err = s.moveSession(ctx, ss, peer, moveOpts{reason: "drain"})
				}
				mu.Lock()
				if err == nil {
					p.Moved++
				} else {
					p.Failed++
					p.LastErr = err
				}
				p.Remaining = s.sessions.len()
				if progress != nil {
					progress(p)
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	s.log.Info("drain moved every session", "moved", p.Moved, "retries", p.Failed)
	s.waitFollowed(ctx)
	return nil
}

// waitFollowed waits up to DrainGrace until no device of a moved session
// still holds an event channel here, so that devices follow while this MWS
// still redirects them.
func (s *Server) waitFollowed(ctx context.Context) {
	deadline := time.NewTimer(s.cfg.Cluster.DrainGrace)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.followersLeft() > 0 {
		select {
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Draining reports whether the MWS is draining.
func (s *Server) Draining() bool { return s.draining.Load() }

// publishLoad gives membership this MWS's load.
func (s *Server) publishLoad() {
	if m := s.cfg.Cluster.Membership; m != nil {
		m.SetLoad(s.sessions.loadNow(), s.cfg.MaxSessions, s.draining.Load())
	}
}

// balancer publishes the load when it changes (admission elsewhere reads
// it) and, every BalanceInterval, above the overload threshold, moves
// sessions to the least loaded peer.
func (s *Server) balancer() {
	defer close(s.balancerDone)
	t := time.NewTicker(s.cfg.Cluster.BalanceInterval)
	defer t.Stop()
	for {
		select {
		case <-s.sessions.loadChanged:
			s.publishLoad()
		case <-t.C:
			s.publishLoad()
			s.relieve(context.Background())
			s.placeReplicas()
		case <-s.stopJanitor:
			return
		}
	}
}

// relieve moves sessions away while this MWS is above its overload
// threshold, each to the least loaded peer that is below it.
func (s *Server) relieve(ctx context.Context) int {
	c := s.cfg.Cluster
	if c.OverloadAbove <= 0 || c.Membership == nil || s.draining.Load() {
		return 0
	}
	max := float64(s.cfg.MaxSessions)
	if float64(s.sessions.len()) <= c.OverloadAbove*max {
		return 0
	}
	moved := 0
	for _, ss := range s.sessions.list("") {
		if float64(s.sessions.len()) <= c.OverloadTarget*max {
			break
		}
		peer, ok := leastLoaded(c.Membership.Peers())
		if !ok || peer.load() >= c.OverloadTarget {
			break
		}
		if _, err := s.moveSession(ctx, ss, peer, moveOpts{reason: "overload"}); err == nil {
			moved++
		} else if rpcerr.Reason(err) == "OVERLOADED" || rpcerr.Reason(err) == "DRAINING" {
			break
		}
	}
	if moved > 0 {
		s.log.Info("overload relieved", "moved", moved, "sessions", s.sessions.len())
		s.publishLoad()
	}
	return moved
}

// admit places a new session: when a peer is lighter by more than
// AdmissionSlack sessions, the session moves there at once.
func (s *Server) admit(ctx context.Context, ss *session) *mwsv1.MoveTarget {
	c := s.cfg.Cluster
	if c.AdmissionSlack <= 0 || c.Membership == nil {
		return nil
	}
	peer, ok := leastLoaded(c.Membership.Peers())
	if !ok || s.sessions.len() <= peer.Sessions+c.AdmissionSlack {
		return nil
	}
	res, err := s.moveSession(ctx, ss, peer, moveOpts{reason: "admission"})
	if err != nil {
		return nil // it stays here
	}
	return res.target
}

// operatorService is the Operator API (operator certificates).
type operatorService struct {
	mwsv1.UnimplementedOperatorServer
	s *Server
}

func (o *operatorService) Move(ctx context.Context, req *mwsv1.MoveRequest) (*mwsv1.MoveResponse, error) {
	r, err := o.s.MoveSession(ctx, req.GetSessionId(), req.GetTo(), "operator")
	if err != nil {
		return nil, err
	}
	return &mwsv1.MoveResponse{To: r.To, Timings: r.proto()}, nil
}

func (o *operatorService) Drain(req *mwsv1.DrainRequest, out mwsv1.Operator_DrainServer) error {
	s := o.s
	err := s.Drain(out.Context(), func(p DrainProgress) {
		m := &mwsv1.DrainProgress{Moved: int32(p.Moved), Remaining: int32(p.Remaining), Failed: int32(p.Failed)}
		if p.LastErr != nil {
			m.LastError = p.LastErr.Error()
		}
		_ = out.Send(m)
	})
	if err != nil {
		return err
	}
	if err := out.Send(&mwsv1.DrainProgress{Remaining: int32(s.sessions.len()), Done: true}); err != nil {
		return err
	}
	if req.GetExit() && s.cfg.Cluster.OnDrained != nil {
		s.cfg.Cluster.OnDrained()
	}
	return nil
}

func (o *operatorService) Members(context.Context, *mwsv1.MembersRequest) (*mwsv1.MembersResponse, error) {
	s := o.s
	out := &mwsv1.MembersResponse{Members: []*mwsv1.Member{{Name: s.cfg.Name, GrpcAddr: s.cfg.Cluster.Addr, State: "alive",
		Sessions: int32(s.sessions.len()), MaxSessions: int32(s.cfg.MaxSessions), Draining: s.draining.Load()}}}
	if m := s.cfg.Cluster.Membership; m != nil {
		for _, p := range m.Peers() {
			state := "alive"
			if !p.Alive {
				state = "gone"
			}
			out.Members = append(out.Members, &mwsv1.Member{Name: p.Name, GrpcAddr: p.Addr, State: state,
				Sessions: int32(p.Sessions), MaxSessions: int32(p.MaxSessions), Draining: p.Draining, Cpu: p.CPU})
		}
	}
	return out, nil
}

// followersLeft counts the devices of moved sessions that still hold an
// event channel here.
func (s *Server) followersLeft() int {
	n := 0
	for _, d := range s.sessions.forwardedDevices() {
		if s.events.has(d) {
			n++
		}
	}
	return n
}

// presence publishes a device's presence here in the cluster's directory.
func (s *Server) presence(user, device string, online bool) {
	if m := s.cfg.Cluster.Membership; m != nil {
		m.SetDevice(user, device, online)
	}
}
