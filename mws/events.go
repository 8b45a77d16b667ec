package mws

import (
	"sync"
	"time"

	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// eventHub holds each device's server-push channel.
type eventHub struct {
	mu      sync.Mutex
	devices map[string]*eventSub
	closed  bool
}

type eventSub struct {
	ch   chan *mwsv1.Event
	done chan struct{}
}

func newEventHub() *eventHub { return &eventHub{devices: map[string]*eventSub{}} }

// subscribe registers device's channel, replacing (and ending) an older one.
func (h *eventHub) subscribe(device string) *eventSub {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.devices[device]; old != nil {
		close(old.done)
	}
	sub := &eventSub{ch: make(chan *mwsv1.Event, 64), done: make(chan struct{})}
	if h.closed {
		close(sub.done)
		return sub
	}
	h.devices[device] = sub
	return sub
}

func (h *eventHub) unsubscribe(device string, sub *eventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.devices[device] == sub {
		delete(h.devices, device)
	}
}

// publish queues ev for device; it reports false if the device has no
// channel or its queue is full.
func (h *eventHub) publish(device string, ev *mwsv1.Event) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := h.devices[device]
	if sub == nil {
		return false
	}
	select {
	case sub.ch <- ev:
		return true
	default:
		return false
	}
}

func (h *eventHub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for d, sub := range h.devices {
		close(sub.done)
		delete(h.devices, d)
	}
}

// Notify sends a text notice to a device's event channel, if it has one.
func (s *Server) Notify(device, text string) bool {
	return s.events.publish(device, &mwsv1.Event{UnixNano: time.Now().UnixNano(), Msg: &mwsv1.Event_Notice{Notice: &mwsv1.Notice{Text: text}}})
}

func (d *deviceService) Events(_ *mwsv1.EventsRequest, out mwsv1.Device_EventsServer) error {
	p := principalFrom(out.Context())
	sub := d.s.events.subscribe(p.device)
	defer d.s.events.unsubscribe(p.device, sub)
	if err := out.Send(&mwsv1.Event{UnixNano: time.Now().UnixNano(), Msg: &mwsv1.Event_Connected{Connected: &mwsv1.Connected{Mws: d.s.cfg.Name, Device: p.device}}}); err != nil {
		return err
	}
	// Online now: parked handoffs for this device are offered again.
	d.s.registry.online(p.user, p.device, true)
	defer d.s.registry.online(p.user, p.device, false)
	defer d.s.netmeter.startProbes(p.device)()
	d.s.presence(p.user, p.device, true)
	defer d.s.presence(p.user, p.device, false)
	for {
		select {
		case ev := <-sub.ch:
			if err := out.Send(ev); err != nil {
				return err
			}
		case <-sub.done:
			return nil
		case <-out.Context().Done():
			return out.Context().Err()
		}
	}
}

// has reports whether device holds an event channel.
func (h *eventHub) has(device string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.devices[device] != nil
}
