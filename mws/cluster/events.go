package cluster

import (
	"strconv"
	"sync"
)

// EventKind says what happened to a member.
type EventKind int

const (
	// EventJoin: a member joined (or came back after failing or leaving).
	EventJoin EventKind = iota + 1
	// EventUpdate: a member's metadata (load, draining) changed.
	EventUpdate
	// EventLeave: a member left gracefully (Close).
	EventLeave
	// EventDead: a member failed: it stopped answering without leaving.
	EventDead
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventDead:
		return "dead"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is a membership change, delivered as soon as this node learns it.
type Event struct {
	Kind EventKind
	// Member is the member's state right after the change.
	Member Member
	// Missed counts events dropped before this one because the
	// subscriber's channel was full; if non-zero, call Members to resync.
	Missed int
}

// hub fans events out to subscribers without ever blocking the caller
// (memberlist's callbacks, which hold its node lock).
type hub struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	buf    int
	closed bool
}

type subscriber struct {
	ch     chan Event
	missed int
}

func newHub(buf int) *hub {
	return &hub{subs: make(map[*subscriber]struct{}), buf: buf}
}

func (h *hub) subscribe() (<-chan Event, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &subscriber{ch: make(chan Event, h.buf)}
	if h.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	h.subs[s] = struct{}{}
	return s.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[s]; ok {
			delete(h.subs, s)
			close(s.ch)
		}
	}
}

func (h *hub) emit(kind EventKind, m Member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- Event{Kind: kind, Member: m, Missed: s.missed}:
			s.missed = 0
		default:
			s.missed++
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.ch)
	}
}
