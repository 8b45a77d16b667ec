package netem

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// pipe is one direction of one relayed connection: a reader that takes
// segments from src through the direction's bottleneck into a delay line,
// and a writer that delivers each to dst when its time comes. The two run
// independently, so any number of segments are in flight at once.
type pipe struct {
	link  *Link
	dir   *direction
	shape func(*Config) Shape
	src   net.Conn
	dst   net.Conn
	r     *relay

	mu     sync.Mutex
	q      []segment
	qBytes int
	last   time.Time // delivery time of the newest segment: none overtakes it

	wake  chan struct{} // a segment was queued
	space chan struct{} // a segment left the queue
	done  chan struct{} // the relay is aborted
	once  sync.Once
}

// segment is a run of bytes and when to deliver it, or (end) the sender's
// EOF or error.
type segment struct {
	b   []byte
	at  time.Time
	end bool
	err error
}

func newPipe(l *Link, dir *direction, shape func(*Config) Shape, src, dst net.Conn, r *relay) *pipe {
	p := &pipe{
		link: l, dir: dir, shape: shape, src: src, dst: dst, r: r,
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1), done: make(chan struct{}),
	}
	r.addPipe(p)
	return p
}

func (p *pipe) stop() { p.once.Do(func() { close(p.done) }) }

// read takes segments from src until EOF or an error, which it queues
// behind the data.
func (p *pipe) read() {
	for {
		buf := make([]byte, p.shape(p.link.cfg.Load()).segment())
		n, err := p.src.Read(buf)
		// The shape now, not from before a Read that may have waited long.
		sh := p.shape(p.link.cfg.Load())
		if n > 0 {
			done, resume, jitter := p.dir.schedule(sh, n, time.Now())
			if !p.push(segment{b: buf[:n], at: done.Add(sh.Delay + jitter)}) {
				return
			}
			// Hold the sender back while the bottleneck queue is full.
			if !p.sleepUntil(resume) {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			p.push(segment{end: true, err: err, at: time.Now().Add(sh.Delay)})
			return
		}
	}
}

// write delivers segments to dst at their time, then relays the EOF as a
// half-close; an error on either side aborts the whole relay.
func (p *pipe) write() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s, ok := p.pop()
		if !ok {
			return
		}
		if d := time.Until(s.at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-p.done:
				return
			}
		}
		if s.end {
			if s.err != nil || closeWrite(p.dst) != nil {
				p.r.abort()
			}
			return
		}
		if _, err := p.dst.Write(s.b); err != nil {
			p.r.abort()
			return
		}
		p.dir.bytes.Add(int64(len(s.b)))
		p.dir.segments.Add(1)
	}
}

// push queues s, waiting while the delay line is full; it reports false
// if the relay was aborted.
func (p *pipe) push(s segment) bool {
	p.mu.Lock()
	for len(p.q) > 0 && p.qBytes+len(s.b) > maxInFlight {
		p.mu.Unlock()
		select {
		case <-p.space:
		case <-p.done:
			return false
		}
		p.mu.Lock()
	}
	if s.at.Before(p.last) {
		s.at = p.last
	}
	p.last = s.at
	p.q = append(p.q, s)
	p.qBytes += len(s.b)
	p.mu.Unlock()
	notify(p.wake)
	return true
}

func (p *pipe) pop() (segment, bool) {
	for {
		p.mu.Lock()
		if len(p.q) > 0 {
			s := p.q[0]
			p.q[0] = segment{}
			p.q = p.q[1:]
			p.qBytes -= len(s.b)
			p.mu.Unlock()
			notify(p.space)
			return s, true
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-p.done:
			return segment{}, false
		}
	}
}

func (p *pipe) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-p.done:
		return false
	}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
