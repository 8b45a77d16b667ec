package cluster

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// servingSet says which runs (mws, instance) are alive.
type servingSet map[string]uint64

func (s servingSet) serving(mws string, instance uint64) bool {
	i, ok := s[mws]
	return ok && i == instance
}

func TestDirectoryMergeOrderIndependent(t *testing.T) {
	alive := servingSet{"a": 1, "b": 1, "c": 2}
	cs := []claim{
		{user: "u", device: "d", mws: "a", instance: 1, ts: 10, online: true},
		{user: "u", device: "d", mws: "b", instance: 1, ts: 20, online: true},
		{user: "u", device: "d", mws: "a", instance: 1, ts: 30, online: false},
		{user: "u", device: "d", mws: "c", instance: 1, ts: 40, online: true}, // c's previous run
		{user: "u", device: "e", mws: "a", instance: 1, ts: 5, online: true},
		{user: "u", device: "e", mws: "b", instance: 1, ts: 5, online: true}, // tie: by name
		{user: "v", device: "d", mws: "c", instance: 1, ts: 50, online: true},
		{user: "v", device: "d", mws: "c", instance: 2, ts: 50, online: true}, // same ts, newer run
	}
	want := map[[2]string]DeviceEntry{
		{"u", "d"}: {MWS: "b", Online: true, Updated: time.Unix(0, 20)},
		{"u", "e"}: {MWS: "a", Online: true, Updated: time.Unix(0, 5)},
		{"v", "d"}: {MWS: "c", Online: true, Updated: time.Unix(0, 50)},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		d := newDirectory(100, alive.serving)
		for _, i := range rng.Perm(len(cs)) {
			if _, err := d.merge(cs[i]); err != nil {
				t.Fatal(err)
			}
			if _, err := d.merge(cs[rng.IntN(len(cs))]); err != nil { // duplicates are harmless
				t.Fatal(err)
			}
		}
		for k, w := range want {
			got, ok := d.lookup(k[0], k[1])
			if !ok || got != w {
				t.Fatalf("%v = %+v, %v; want %+v", k, got, ok, w)
			}
		}
		if d.size() != 6 {
			t.Fatalf("size %d, want 6", d.size())
		}
	}

	// When b dies, the device is reported at its newest claimant, offline.
	delete(alive, "b")
	d := newDirectory(100, alive.serving)
	for _, c := range cs {
		d.merge(c)
	}
	if got, _ := d.lookup("u", "d"); got.MWS != "c" || got.Online {
		t.Errorf("after b died: %+v; want c offline", got)
	}
	if got, _ := d.lookup("u", "e"); got.MWS != "a" || !got.Online {
		t.Errorf("after b died: %+v; want a online", got)
	}
}

func TestDirectoryEviction(t *testing.T) {
	alive := servingSet{"a": 1}
	d := newDirectory(2, alive.serving)
	on := func(dev string, ts uint64) claim {
		return claim{user: "u", device: dev, mws: "a", instance: 1, ts: ts, online: true}
	}
	for _, c := range []claim{on("d1", 1), on("d2", 2)} {
		if _, err := d.merge(c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.merge(on("d3", 3)); !errors.Is(err, ErrDirectoryFull) {
		t.Fatalf("full of online entries: %v, want ErrDirectoryFull", err)
	}
	// Updating an existing entry needs no room.
	off := on("d1", 4)
	off.online = false
	if _, err := d.merge(off); err != nil {
		t.Fatal(err)
	}
	if _, err := d.merge(on("d3", 5)); err != nil {
		t.Fatalf("with an offline entry to evict: %v", err)
	}
	if _, ok := d.lookup("u", "d1"); ok {
		t.Error("d1 not evicted")
	}
	if d.size() != 2 || len(d.devices("u")) != 2 {
		t.Errorf("size %d, devices %v", d.size(), d.devices("u"))
	}
}

func TestClusterRejectsFutureEntries(t *testing.T) {
	c := &Cluster{log: testLogger(t)}
	c.dir = newDirectory(10, func(string, uint64) bool { return true })
	future := uint64(time.Now().Add(time.Hour).UnixNano())
	changed := c.mergeRemote([]claim{
		{user: "u", device: "d", mws: "m", ts: future, online: true},
		{user: "u", device: "e", mws: "m", ts: 1, online: true},
	})
	if len(changed) != 1 || changed[0].device != "e" {
		t.Errorf("changed = %+v, want only e", changed)
	}
	if _, ok := c.dir.lookup("u", "d"); ok {
		t.Error("entry from the future accepted")
	}
	if ts := c.dir.clock.now(); ts >= future {
		t.Error("clock pushed into the future")
	}
}

func TestHLCMonotonic(t *testing.T) {
	var c hlc
	ahead := uint64(time.Now().Add(time.Minute).UnixNano())
	c.observe(ahead)
	a, b := c.now(), c.now()
	if a <= ahead || b <= a {
		t.Errorf("now after observe(%d): %d then %d", ahead, a, b)
	}
}

func TestLeastLoaded(t *testing.T) {
	m := func(name string, s, max int, state State, draining bool) Member {
		return Member{Name: name, State: state, Load: Load{Sessions: s, MaxSessions: max, Draining: draining}}
	}
	tests := []struct {
		name    string
		members []Member
		exclude []string
		want    string
	}{
		{name: "empty"},
		{name: "lowest ratio", members: []Member{m("a", 5, 10, StateAlive, false), m("b", 3, 10, StateAlive, false), m("c", 9, 100, StateAlive, false)}, want: "c"},
		{name: "tie by name", members: []Member{m("b", 1, 2, StateAlive, false), m("a", 2, 4, StateAlive, false)}, want: "a"},
		{name: "skips draining", members: []Member{m("a", 0, 10, StateAlive, true), m("b", 5, 10, StateAlive, false)}, want: "b"},
		{name: "skips dead and left", members: []Member{m("a", 0, 10, StateDead, false), m("b", 0, 10, StateLeft, false), m("c", 9, 10, StateAlive, false)}, want: "c"},
		{name: "skips full and no capacity", members: []Member{m("a", 10, 10, StateAlive, false), m("b", 0, 0, StateAlive, false)}},
		{name: "exclude", members: []Member{m("a", 0, 10, StateAlive, false), m("b", 5, 10, StateAlive, false)}, exclude: []string{"a"}, want: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := leastLoaded(tt.members, tt.exclude)
			if ok != (tt.want != "") || got.Name != tt.want {
				t.Errorf("got %q, %v; want %q", got.Name, ok, tt.want)
			}
		})
	}
}

func TestSubscribeOverflow(t *testing.T) {
	h := newHub(2)
	ch, cancel := h.subscribe()
	for range 5 {
		h.emit(EventUpdate, Member{Name: "a"})
	}
	<-ch
	<-ch
	h.emit(EventDead, Member{Name: "a"})
	if ev := <-ch; ev.Kind != EventDead || ev.Missed != 3 {
		t.Errorf("after overflow: %+v, want dead with 3 missed", ev)
	}
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		t.Error("channel open after cancel")
	}
	h.close()
	ch2, _ := h.subscribe()
	if _, ok := <-ch2; ok {
		t.Error("subscription after close is open")
	}
}
