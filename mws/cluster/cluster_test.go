package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestJoinThreeNodes(t *testing.T) {
	cs := startCluster(t, 3)
	for _, c := range cs {
		ms := c.Members()
		if len(ms) != 3 {
			t.Fatalf("%s: %d members, want 3", c.Name(), len(ms))
		}
		for i, m := range ms {
			want := fmt.Sprintf("n%d", i+1)
			if m.Name != want || m.State != StateAlive || m.GRPCAddr != grpcAddr(want) ||
				m.Local != (m.Name == c.Name()) || m.Load.MaxSessions != 100 || m.Version != 1 {
				t.Errorf("%s sees %+v", c.Name(), m)
			}
		}
	}
	if m, ok := cs[0].Member("n2"); !ok || m.Addr != cs[1].Addr() {
		t.Errorf("Member(n2) = %+v, %v; want addr %s", m, ok, cs[1].Addr())
	}
	if _, ok := cs[0].Member("nope"); ok {
		t.Error("Member(nope) found")
	}
}

func TestJoinWithOneSeedDown(t *testing.T) {
	a := startNode(t, testConfig(t, "a"))
	// One reachable seed is enough.
	b := startNode(t, testConfig(t, "b", "127.0.0.1:1", a.Addr()))
	waitFor(t, 5*time.Second, func() bool { return aliveCount(a) == 2 }, "a sees b")
	if got := aliveCount(b); got != 2 {
		t.Errorf("b sees %d alive", got)
	}
}

func TestJoinNoSeedReachable(t *testing.T) {
	cfg := testConfig(t, "lonely", "127.0.0.1:1")
	cfg.JoinAttempts = 2
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := Start(ctx, cfg); !errors.Is(err, ErrJoin) {
		if c != nil {
			_ = c.Abort()
		}
		t.Fatalf("Start = %v, want ErrJoin", err)
	}
	// The port is released: a node can bind again right away.
	startNode(t, testConfig(t, "lonely"))
}

func TestLoadPropagates(t *testing.T) {
	cs := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := Load{Sessions: 7, MaxSessions: 20, CPU: 0.25, Draining: true}
	if err := cs[1].SetLoad(ctx, want); err != nil {
		t.Fatalf("SetLoad: %v", err)
	}
	for _, c := range cs {
		waitFor(t, 3*time.Second, func() bool {
			m, _ := c.Member("n2")
			return m.Load == want && m.Version == 2
		}, "%s sees n2's load", c.Name())
	}
	if err := cs[1].SetLoad(ctx, Load{CPU: 2}); err == nil {
		t.Error("SetLoad accepted CPU 2")
	}
}

func TestLeastLoadedCluster(t *testing.T) {
	cs := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	loads := []Load{
		{Sessions: 50, MaxSessions: 100}, // 0.5
		{Sessions: 10, MaxSessions: 40},  // 0.25
		{Sessions: 30, MaxSessions: 100}, // 0.3
	}
	for i, c := range cs {
		if err := c.SetLoad(ctx, loads[i]); err != nil {
			t.Fatalf("SetLoad: %v", err)
		}
	}
	waitFor(t, 3*time.Second, func() bool {
		for i, m := range cs[0].Members() {
			if m.Load != loads[i] {
				return false
			}
		}
		return true
	}, "n1 sees every load")
	check := func(want string, exclude ...string) {
		t.Helper()
		m, ok := cs[0].LeastLoaded(exclude...)
		if want == "" {
			if ok {
				t.Errorf("LeastLoaded(%v) = %s, want none", exclude, m.Name)
			}
			return
		}
		if !ok || m.Name != want {
			t.Errorf("LeastLoaded(%v) = %q, %v; want %s", exclude, m.Name, ok, want)
		}
	}
	check("n2")
	check("n3", "n2")
	check("", "n1", "n2", "n3")

	drain := loads[1]
	drain.Draining = true
	if err := cs[1].SetLoad(ctx, drain); err != nil {
		t.Fatalf("SetLoad: %v", err)
	}
	waitFor(t, 3*time.Second, func() bool {
		m, _ := cs[0].Member("n2")
		return m.Load.Draining
	}, "n1 sees n2 draining")
	check("n3")
}

func TestEventsLeaveAndDead(t *testing.T) {
	cs := startCluster(t, 3)
	events, cancel := cs[0].Subscribe()
	defer cancel()

	// n3 serves a device; n2 too.
	for _, c := range cs[1:] {
		if err := c.SetDevice("alice", "phone-"+c.Name(), true); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs {
		waitFor(t, 3*time.Second, func() bool { return len(c.Devices("alice")) == 2 },
			"%s sees alice's devices", c.Name())
	}

	ctx, cancelCtx := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelCtx()
	if err := cs[2].SetLoad(ctx, Load{Sessions: 1, MaxSessions: 5}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, 3*time.Second, func(e Event) bool {
		return e.Kind == EventUpdate && e.Member.Name == "n3" && e.Member.Load.Sessions == 1
	}, "update of n3")

	start := time.Now()
	if err := cs[2].Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ev := waitEvent(t, events, 3*time.Second, func(e Event) bool { return e.Member.Name == "n3" }, "n3 leaving")
	if ev.Kind != EventLeave || ev.Member.State != StateLeft {
		t.Errorf("n3 closed: event %v state %v, want leave/left", ev.Kind, ev.Member.State)
	}
	t.Logf("leave reported after %v", time.Since(start))

	start = time.Now()
	if err := cs[1].Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	ev = waitEvent(t, events, 8*time.Second, func(e Event) bool { return e.Member.Name == "n2" }, "n2 failing")
	if ev.Kind != EventDead || ev.Member.State != StateDead {
		t.Errorf("n2 aborted: event %v state %v, want dead/dead", ev.Kind, ev.Member.State)
	}
	t.Logf("failure reported after %v", time.Since(start))

	if m, _ := cs[0].Member("n3"); m.State != StateLeft {
		t.Errorf("n3 state %v, want left", m.State)
	}
	for _, dev := range []string{"phone-n2", "phone-n3"} {
		e, ok := cs[0].LookupDevice("alice", dev)
		if !ok || e.Online || e.MWS != dev[len("phone-"):] {
			t.Errorf("after its MWS went: %s = %+v, %v; want offline at its MWS", dev, e, ok)
		}
	}
	if _, ok := cs[0].LeastLoaded(); !ok {
		t.Error("LeastLoaded found nobody, want n1")
	} else if m, _ := cs[0].LeastLoaded(); m.Name != "n1" {
		t.Errorf("LeastLoaded = %s, want n1", m.Name)
	}

	// Calls after Close fail; Close again is a no-op.
	if err := cs[2].SetDevice("alice", "x", true); !errors.Is(err, ErrClosed) {
		t.Errorf("SetDevice after Close: %v", err)
	}
	if err := cs[2].SetLoad(ctx, Load{}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetLoad after Close: %v", err)
	}
	if err := cs[2].Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRejoinAfterFailure(t *testing.T) {
	cs := startCluster(t, 2)
	if err := cs[1].SetDevice("bob", "laptop", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, func() bool { e, _ := cs[0].LookupDevice("bob", "laptop"); return e.Online },
		"n1 sees bob's laptop")
	if err := cs[1].Abort(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 8*time.Second, func() bool { m, _ := cs[0].Member("n2"); return m.State == StateDead },
		"n1 sees n2 dead")

	// n2 restarts (another port, another run): its old entry stays offline.
	n2 := startNode(t, testConfig(t, "n2", cs[0].Addr()))
	waitFor(t, 5*time.Second, func() bool { m, _ := cs[0].Member("n2"); return m.State == StateAlive },
		"n1 sees n2 back")
	for _, c := range []*Cluster{cs[0], n2} {
		if e, ok := c.LookupDevice("bob", "laptop"); !ok || e.Online {
			t.Errorf("%s: entry of the previous run = %+v, %v; want offline", c.Name(), e, ok)
		}
	}
	if err := n2.SetDevice("bob", "laptop", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, func() bool { e, _ := cs[0].LookupDevice("bob", "laptop"); return e.Online },
		"n1 sees bob's laptop online again")
}

func TestDirectoryConverges(t *testing.T) {
	cs := startCluster(t, 3)
	seeAll := func(user, device string, want DeviceEntry) {
		t.Helper()
		for _, c := range cs {
			waitFor(t, 3*time.Second, func() bool {
				e, ok := c.LookupDevice(user, device)
				return ok && e.MWS == want.MWS && e.Online == want.Online
			}, "%s sees %s/%s at %s online=%v", c.Name(), user, device, want.MWS, want.Online)
		}
	}
	set := func(c *Cluster, device string, online bool) {
		t.Helper()
		if err := c.SetDevice("carol", device, online); err != nil {
			t.Fatal(err)
		}
	}

	set(cs[0], "pda", true)
	seeAll("carol", "pda", DeviceEntry{MWS: "n1", Online: true})
	set(cs[0], "pda", false) // newer write of the same MWS wins
	seeAll("carol", "pda", DeviceEntry{MWS: "n1", Online: false})

	// The device moves to n2, then n1 belatedly reports it gone: only n1's
	// own claim is withdrawn.
	set(cs[0], "desktop", true)
	seeAll("carol", "desktop", DeviceEntry{MWS: "n1", Online: true})
	set(cs[1], "desktop", true)
	seeAll("carol", "desktop", DeviceEntry{MWS: "n2", Online: true})
	set(cs[0], "desktop", false)
	seeAll("carol", "desktop", DeviceEntry{MWS: "n2", Online: true})
	// Then n3 takes it over: the newest serving claim wins.
	set(cs[2], "desktop", true)
	seeAll("carol", "desktop", DeviceEntry{MWS: "n3", Online: true})

	for _, c := range cs {
		devs := c.Devices("carol")
		if len(devs) != 2 || devs["pda"].MWS != "n1" || devs["desktop"].MWS != "n3" {
			t.Errorf("%s: Devices = %+v", c.Name(), devs)
		}
		if e := devs["desktop"]; time.Since(e.Updated) > time.Minute || e.Updated.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: Updated = %v", c.Name(), e.Updated)
		}
	}
	if _, ok := cs[0].LookupDevice("carol", "toaster"); ok {
		t.Error("unknown device found")
	}
	if err := cs[0].SetDevice("", "x", true); !errors.Is(err, ErrInvalidDevice) {
		t.Errorf("empty user: %v", err)
	}

	// A node that joins late gets the directory by push-pull.
	late := startNode(t, testConfig(t, "n4", cs[2].Addr()))
	cs = append(cs, late)
	seeAll("carol", "desktop", DeviceEntry{MWS: "n3", Online: true})
	seeAll("carol", "pda", DeviceEntry{MWS: "n1", Online: false})
}

func TestWrongKeyCannotJoin(t *testing.T) {
	a := startNode(t, testConfig(t, "a"))
	cfg := testConfig(t, "intruder", a.Addr())
	cfg.SecretKeys = [][]byte{keyNew}
	cfg.JoinAttempts = 2
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err == nil {
		_ = c.Abort()
		t.Fatal("Start with the wrong key succeeded")
	}
	if !errors.Is(err, ErrJoin) {
		t.Errorf("err = %v, want ErrJoin", err)
	}
	for _, m := range a.Members() {
		if m.Name == "intruder" {
			t.Errorf("a lists the intruder: %+v", m)
		}
	}
	if aliveCount(a) != 1 {
		t.Errorf("a sees %d alive", aliveCount(a))
	}

	// Unencrypted gossip cannot join an encrypted cluster either.
	cfg.SecretKeys, cfg.Insecure = nil, true
	if c, err := Start(ctx, cfg); err == nil {
		_ = c.Abort()
		t.Fatal("insecure Start joined an encrypted cluster")
	}
}

// Memberlist encrypts with the first key and decrypts with any, so a key
// is rotated by adding it everywhere, then making it first everywhere,
// then dropping the old one.
func TestKeyRotation(t *testing.T) {
	tests := []struct {
		name       string
		seed, join [][]byte
		wantJoin   bool
	}{
		{"new key added as secondary", [][]byte{keyOld}, [][]byte{keyOld, keyNew}, true},
		{"secondary joins a node that already switched", [][]byte{keyNew, keyOld}, [][]byte{keyOld, keyNew}, true},
		{"switched node joins one without the new key", [][]byte{keyOld}, [][]byte{keyNew, keyOld}, false},
		{"old key dropped", [][]byte{keyNew, keyOld}, [][]byte{keyNew}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, "seed")
			cfg.SecretKeys = tt.seed
			seed := startNode(t, cfg)
			cfg = testConfig(t, "joiner", seed.Addr())
			cfg.SecretKeys = tt.join
			cfg.JoinAttempts = 1
			c, err := Start(context.Background(), cfg)
			if !tt.wantJoin {
				if err == nil {
					_ = c.Abort()
					t.Fatal("join succeeded")
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			t.Cleanup(func() { _ = c.Abort() })
			for _, n := range []*Cluster{seed, c} {
				waitFor(t, 3*time.Second, func() bool { return aliveCount(n) == 2 }, "%s sees both", n.Name())
			}
			// Both directions carry data.
			if err := c.SetDevice("u", "d", true); err != nil {
				t.Fatal(err)
			}
			if err := seed.SetDevice("u", "e", true); err != nil {
				t.Fatal(err)
			}
			for _, n := range []*Cluster{seed, c} {
				waitFor(t, 3*time.Second, func() bool { return len(n.Devices("u")) == 2 }, "%s sees both devices", n.Name())
			}
		})
	}
}
