package mws_test

import (
	"context"
	"testing"

	"github.com/imashproject/imash/clientlib"
)

// TestEvents proves that a device's event channel opens with Connected
// naming the MWS and the device, that Server.Notify reaches it, and that a
// device without a channel is reported as such.
func TestEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	c, _ := e.login(ctx, "pda-1", "alice")

	if e.mws.Notify("pda-1", "too early") {
		t.Fatal("Notify reported delivery to a device without an event channel")
	}

	evctx, cancel := context.WithCancel(ctx)
	events := make(chan clientlib.Event, 16)
	done := make(chan error, 1)
	go func() { done <- c.Events(evctx, func(ev clientlib.Event) { events <- ev }) }()
	next := func() clientlib.Event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case err := <-done:
			t.Fatalf("event channel ended: %v", err)
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return clientlib.Event{}
	}

	first := next()
	if first.Connected == nil || first.Connected.Mws != e.mws.Name() || first.Connected.Device != "pda-1" {
		t.Fatalf("first event %+v, want Connected from %s to pda-1", first, e.mws.Name())
	}
	if first.Time.IsZero() {
		t.Fatalf("first event time %v", first.Time)
	}
	for _, text := range []string{"maintenance at noon", "second notice"} {
		if !e.mws.Notify("pda-1", text) {
			t.Fatalf("Notify(%q) reported no delivery", text)
		}
		ev := next()
		if ev.Notice == nil || ev.Notice.Text != text {
			t.Fatalf("event %+v, want notice %q", ev, text)
		}
	}
	if e.mws.Notify("laptop-9", "nobody") {
		t.Fatal("Notify reported delivery to an unknown device")
	}

	cancel()
	if err := <-done; err == nil {
		t.Fatal("Events returned nil after its context ended")
	}
	pollUntil(t, "the event channel to be unregistered", func() bool { return !e.mws.Notify("pda-1", "gone") })
}
