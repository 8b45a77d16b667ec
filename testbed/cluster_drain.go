package testbed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/mws"
)

// Shape of the drain part: its sessions belong to drainDevices devices
// ("drain-1", …) logged in at the drained MWS; drainCheckers Gets at a
// time check them afterwards.
const (
	drainDevices  = 4
	drainCheckers = 8
)

// drainResult is what the drain part measured.
type drainResult struct {
	// MWS is the drained MWS; Sessions the sessions it held.
	MWS      string `json:"mws"`
	Sessions int    `json:"sessions"`
	// DrainUS is how long mws.Server.Drain took, until every session was
	// on a peer; Retries counts the moves it had to try again.
	DrainUS int64 `json:"drain_us"`
	Retries int   `json:"retries"`
	// MovedTo is how many sessions each peer gained; Left how many stayed
	// on the drained MWS (0).
	MovedTo map[string]int `json:"moved_to"`
	Left    int            `json:"left"`
	// Answered counts the sessions that answered a Get at a peer after
	// the drain (all of them), which took AnswerUS in all, drainCheckers
	// at a time; Follows and TLSResumed are the devices' MoveStats.
	Answered   int   `json:"answered"`
	AnswerUS   int64 `json:"answer_us"`
	Follows    int   `json:"follows"`
	TLSResumed int   `json:"tls_resumed"`
}

// runDrain opens n sessions on the last MWS, drains it (timed) and checks
// that every session answers a Get at a peer afterwards. The drained MWS
// stays up but takes no sessions.
func runDrain(ctx context.Context, env *testbedEnv, n int) (res *drainResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, clusterWait+time.Duration(n)*100*time.Millisecond)
	defer cancel()
	at := len(env.cluster.MWS) - 1
	src := env.cluster.MWS[at]
	res = &drainResult{MWS: src.Name(), MovedTo: map[string]int{}}
	devs := make([]*clientlib.Client, min(drainDevices, n))
	defer func() {
		for _, c := range devs {
			if c != nil {
				err = errors.Join(err, c.Close())
			}
		}
	}()
	for i := range devs {
		name := fmt.Sprintf("drain-%d", i+1)
		if devs[i], err = env.login(ctx, name, at, nil); err != nil {
			return res, fmt.Errorf("device %s: %w", name, err)
		}
	}
	all := make([]*clientlib.Session, n)
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	for d, c := range devs {
		wg.Go(func() {
			for i := d; i < n; i += len(devs) {
				s, err := c.OpenSession(ctx, demoApp)
				if err != nil {
					errs[d] = fmt.Errorf("session %d: %w", i, err)
					return
				}
				all[i] = s
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}

	before := map[string]int{}
	for _, s := range env.cluster.MWS {
		before[s.Name()] = s.Stats().Sessions
	}
	if res.Sessions = before[src.Name()]; res.Sessions < n {
		return res, fmt.Errorf("%s holds %d sessions after %d were opened there", src.Name(), res.Sessions, n)
	}
	var progress mws.DrainProgress
	t0 := time.Now()
	err = src.Drain(ctx, func(p mws.DrainProgress) { progress = p })
	res.DrainUS = us(time.Since(t0))
	if err != nil {
		return res, err
	}
	res.Retries = progress.Failed
	moved := 0
	for _, s := range env.cluster.MWS {
		if s == src {
			res.Left = s.Stats().Sessions
			continue
		}
		res.MovedTo[s.Name()] = s.Stats().Sessions - before[s.Name()]
		moved += res.MovedTo[s.Name()]
	}
	if res.Left != 0 || moved != res.Sessions {
		return res, fmt.Errorf("after the drain %d sessions are left on %s and its peers gained %d of %d", res.Left, src.Name(), moved, res.Sessions)
	}

	img := smallestImage(env.images.Set())
	var answered atomic.Int64
	work := make(chan *clientlib.Session)
	failed := make(chan error, drainCheckers)
	t1 := time.Now()
	for range drainCheckers {
		wg.Go(func() {
			for s := range work {
				err := getImage(ctx, s, img)
				if err == nil && s.MWS() == src.Name() {
					err = fmt.Errorf("still on %s", src.Name())
				}
				if err != nil {
					failed <- fmt.Errorf("session %s after the drain: %w", s.ID(), err)
					return
				}
				answered.Add(1)
			}
		})
	}
feed:
	for _, s := range all {
		select {
		case work <- s:
		case err = <-failed:
			break feed
		}
	}
	close(work)
	wg.Wait()
	res.AnswerUS = us(time.Since(t1))
	res.Answered = int(answered.Load())
	for _, c := range devs {
		st := c.MoveStats()
		res.Follows += st.Followed
		res.TLSResumed += st.TLSResumed
	}
	if err != nil {
		return res, err
	}
	select {
	case err := <-failed:
		return res, err
	default:
	}
	return res, nil
}
