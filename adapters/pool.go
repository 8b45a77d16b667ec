package adapters

import (
	"context"
	"sync"

	"github.com/imashproject/imash/profiles"
)

// Pool runs adaptations on Config.Workers goroutines with a queue of
// Config.QueueSize waiting jobs, so a burst of requests cannot use more
// than Workers cores and Workers decoded images of memory at once.
type Pool struct {
	a     *Adapter
	jobs  chan job
	quit  chan struct{}
	done  chan struct{}
	close sync.Once
}

type job struct {
	ctx   context.Context // the submitter's; checked before the job starts
	data  []byte
	c     profiles.Constraints
	reply chan jobResult // buffered 1: workers never block on it
}

type jobResult struct {
	res *Result
	err error
}

// NewPool starts the workers. Close stops them.
func NewPool(a *Adapter) *Pool {
	p := &Pool{
		a:    a,
		jobs: make(chan job, a.cfg.QueueSize),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	var wg sync.WaitGroup
	for range a.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.work()
		}()
	}
	go func() {
		wg.Wait()
		close(p.done)
	}()
	return p
}

func (p *Pool) work() {
	for {
		select {
		case <-p.quit:
			return
		case j := <-p.jobs:
			if err := j.ctx.Err(); err != nil {
				j.reply <- jobResult{err: err}
				continue
			}
			res, err := p.a.Adapt(j.ctx, j.data, j.c)
			j.reply <- jobResult{res, err}
		}
	}
}

// Adapt queues an adaptation and waits for its result. It blocks while the
// queue is full; it returns ctx.Err() if ctx ends first (a queued job is
// then skipped, a running one stops at its next step) and ErrPoolClosed
// after Close.
func (p *Pool) Adapt(ctx context.Context, data []byte, c profiles.Constraints) (*Result, error) {
	j := job{ctx: ctx, data: data, c: c, reply: make(chan jobResult, 1)}
	select {
	case <-p.quit:
		return nil, ErrPoolClosed
	default:
	}
	select {
	case p.jobs <- j:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.quit:
		return nil, ErrPoolClosed
	}
	select {
	case r := <-j.reply:
		return r.res, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.done:
		select {
		case r := <-j.reply:
			return r.res, r.err
		default:
			return nil, ErrPoolClosed
		}
	}
}

// Close stops the workers after their current jobs; queued jobs fail with
// ErrPoolClosed. It waits for the workers until ctx ends.
func (p *Pool) Close(ctx context.Context) error {
	p.close.Do(func() { close(p.quit) })
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
