package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/mws"
)

// opFlags are the connection flags of "imash-mws op" for the MWS at addr,
// with the env's operator certificate.
func (e *clusterEnv) opFlags(addr string) []string {
	cert, key, ca := e.issued("operator", "ops")
	return []string{"--mws", addr, "--cert", cert, "--key", key, "--ca", ca}
}

// op runs "imash-mws op <cmd>" against the MWS at addr and returns its
// stdout and error.
func (e *clusterEnv) op(t *testing.T, cmd, addr string, extra ...string) (string, error) {
	t.Helper()
	out, _, err := run(t, "", append(append([]string{"op", cmd}, e.opFlags(addr)...), extra...)...)
	return out, err
}

// opMembers is the cluster as "op members --json" at addr reports it.
type opMembers struct {
	MWS     string `json:"mws"`
	Members []struct {
		Name        string `json:"name"`
		Address     string `json:"address"`
		State       string `json:"state"`
		Sessions    int    `json:"sessions"`
		MaxSessions int    `json:"max_sessions"`
		Draining    bool   `json:"draining"`
	} `json:"members"`
}

// waitOpMembers runs "op members --json" at addr until ok accepts its
// answer.
func (e *clusterEnv) waitOpMembers(t *testing.T, addr string, ok func(opMembers) bool) opMembers {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := e.op(t, "members", addr, "--json")
		var m opMembers
		if err == nil {
			err = json.Unmarshal([]byte(out), &m)
		}
		if err == nil && ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("op members at %s: %v\n%s", addr, err, out)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// TestRunOp runs the op commands against a cluster of three MWSs started
// through Run: members lists them, move moves a device's session to a
// named MWS where the device goes on, drain --exit empties an MWS and ends
// its serve, and a drain that cannot finish fails.
func TestRunOp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newClusterEnv(t, "mws-1", "mws-2", "mws-3")
	m1 := e.serve(t, "mws-1")
	m1.waitReady(t)
	m2 := e.serve(t, "mws-2", "--seed", m1.gossip)
	m3 := e.serve(t, "mws-3", "--seed", m1.gossip)
	m2.waitReady(t)
	m3.waitReady(t)
	byName := map[string]*clusterMWS{"mws-1": m1, "mws-2": m2, "mws-3": m3}
	// Every MWS sees every other alive and taking sessions.
	settled := func(m opMembers) bool {
		n := 0
		for _, x := range m.Members {
			if mm := byName[x.Name]; mm != nil && x.State == "alive" && !x.Draining && x.Address == mm.addr {
				n++
			}
		}
		return n == 3 && len(m.Members) == 3
	}
	for _, m := range []*clusterMWS{m1, m2, m3} {
		got := e.waitOpMembers(t, m.addr, settled)
		if got.Members[0].Name != m.name || got.MWS != m.addr {
			t.Errorf("op members at %s: first %q (mws %q), want the MWS asked first", m.name, got.Members[0].Name, got.MWS)
		}
	}

	// (a) The table lists every MWS, the one asked first.
	out, err := e.op(t, "members", m1.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("op members:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "NAME ADDRESS STATE SESSIONS DRAINING" {
		t.Fatalf("op members:\n%s", out)
	}
	for i, m := range []*clusterMWS{m1, m2, m3} {
		if got, want := strings.Join(strings.Fields(lines[i+1]), " "), m.name+" "+m.addr+" alive 0/100000 no"; got != want {
			t.Errorf("row %d: %q, want %q", i+1, got, want)
		}
	}

	// (b) A device's session moves to the MWS named, and its next call
	// works there.
	dcert, roots, err := pki.LoadKeyPair(e.issued("device", "laptop-1"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientlib.Dial(ctx, m1.addr, clientlib.Config{Certificate: dcert, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(ctx, "alice", "s3cret"); err != nil {
		t.Fatal(err)
	}
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	get := func(when string) {
		t.Helper()
		obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
		if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
			t.Fatalf("get %s (on %s): %v", when, sess.MWS(), err)
		}
	}
	get("before the move")
	if sess.MWS() != "mws-1" {
		t.Fatalf("session opened on %s, want mws-1", sess.MWS())
	}
	out, err = e.op(t, "move", m1.addr, "--session", sess.ID(), "--to", "mws-3")
	if err != nil {
		t.Fatalf("op move: %v", err)
	}
	t.Logf("op move:\n%s", out)
	if !strings.HasPrefix(out, "moved session "+sess.ID()+" to mws-3 in ") {
		t.Errorf("op move:\n%s", out)
	}
	for _, w := range []string{"\n  prepare ", "\n  handover ", "\n  ship ", "\n  state "} {
		if !strings.Contains(out, w) {
			t.Errorf("op move output lacks %q:\n%s", w, out)
		}
	}
	get("after the move")
	if sess.MWS() != "mws-3" {
		t.Errorf("session on %s after op move --to mws-3", sess.MWS())
	}
	// It is no longer at mws-1: a typed error, exit status 1.
	_, err = e.op(t, "move", m1.addr, "--session", sess.ID())
	if want := fmt.Sprintf(`op move: NOT_FOUND UNKNOWN_SESSION: no session %q here`, sess.ID()); err == nil ||
		errors.Is(err, mws.ErrUsage) || err.Error() != want {
		t.Errorf("second op move: err = %v, want %q", err, want)
	}
	_, err = e.op(t, "move", m3.addr, "--session", sess.ID(), "--to", "mws-9")
	if err == nil || errors.Is(err, mws.ErrUsage) || !strings.HasPrefix(err.Error(), "op move: NOT_FOUND UNKNOWN_PEER: ") {
		t.Errorf("op move to an unknown MWS: err = %v", err)
	}

	// (c) A device certificate is no operator's.
	dc, dk, ca := e.issued("device", "laptop-1")
	_, _, err = run(t, "", "op", "members", "--mws", m1.addr, "--cert", dc, "--key", dk, "--ca", ca)
	if !errors.Is(err, mws.ErrUsage) || !strings.Contains(err.Error(), "certificate is for spiffe://example.test/device/laptop-1, want role operator") {
		t.Errorf("op members with a device certificate: err = %v", err)
	}

	// (d) drain --exit empties the MWS holding the session and ends its
	// serve; the device goes on at a peer.
	out, err = e.op(t, "drain", m3.addr, "--exit", "--timeout", "2m")
	t.Logf("op drain --exit:\n%s", out)
	if err != nil {
		t.Fatalf("op drain --exit: %v\n%s", err, out)
	}
	for _, w := range []string{"draining mws-3 (" + m3.addr + "): 1 session\n", "moved 1, 0 left\n", ": 1 session moved, 0 left; mws-3 is stopping\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("op drain --exit output lacks %q:\n%s", w, out)
		}
	}
	if err := m3.wait(t); err != nil {
		t.Fatalf("mws-3: Run = %v after op drain --exit, want nil", err)
	}
	if !strings.Contains(m3.stderr.String(), `"msg":"drained on the operator's request; stopping"`) {
		t.Errorf("mws-3's log lacks the operator's drain")
	}
	get("after mws-3 drained")
	holder, other := m1, m2
	switch sess.MWS() {
	case "mws-1":
	case "mws-2":
		holder, other = m2, m1
	default:
		t.Fatalf("session on %q after mws-3 drained, want mws-1 or mws-2", sess.MWS())
	}
	for _, m := range []*clusterMWS{m1, m2} {
		e.waitOpMembers(t, m.addr, func(got opMembers) bool {
			for _, x := range got.Members {
				if x.Name == "mws-3" {
					return x.State == "gone"
				}
			}
			return false
		})
	}

	// (e) A drain that cannot finish: with the other MWS draining (it has
	// no session, so its drain is done at once and it stays up), the
	// holder's drain has no peer to move the session to. It fails when
	// --timeout ends, and the session stays where it was.
	out, err = e.op(t, "drain", other.addr)
	if err != nil || !strings.Contains(out, "drained "+other.name+" in ") || !strings.Contains(out, ": 0 sessions moved, 0 left\n") ||
		strings.Contains(out, "is stopping") {
		t.Fatalf("op drain %s: %v\n%s", other.name, err, out)
	}
	out, err = e.op(t, "drain", holder.addr, "--timeout", "2s")
	t.Logf("op drain of %s without a peer:\n%s%v", holder.name, out, err)
	if want := "op drain: " + holder.name + " still holds 1 session and takes sessions again: "; err == nil ||
		errors.Is(err, mws.ErrUsage) || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("op drain without a peer to take the session: err = %v, want it to start %q", err, want)
	}
	if !strings.Contains(out, "drain of "+holder.name+" did not finish: moved 0, 1 left, ") {
		t.Errorf("op drain without a peer:\n%s", out)
	}
	get("after the failed drain")
	if sess.MWS() != holder.name {
		t.Errorf("session on %s after %s's drain failed, want it there", sess.MWS(), holder.name)
	}
	// The drained one reports itself draining; the holder, whose drain
	// gave up, takes sessions again.
	e.waitOpMembers(t, other.addr, func(got opMembers) bool { return got.Members[0].Draining })
	e.waitOpMembers(t, holder.addr, func(got opMembers) bool { return !got.Members[0].Draining })

	// A stopped MWS cannot be asked.
	_, err = e.op(t, "members", m3.addr, "--timeout", "10s")
	if err == nil || errors.Is(err, mws.ErrUsage) || !strings.HasPrefix(err.Error(), "op members: UNAVAILABLE: cannot reach the MWS at "+m3.addr) {
		t.Errorf("op members at a stopped MWS: err = %v", err)
	}
}

// TestRunOpUsage checks that bad invocations of "imash-mws op" are usage
// errors (exit status 2) that name the problem.
func TestRunOpUsage(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "ca")
	mustRun(t, "", "ca", "init", "--dir", store, "--trust-domain", "example.test")
	mustRun(t, "", "ca", "issue", "--dir", store, "--role", "operator", "--name", "ops")
	cert, key, ca := filepath.Join(store, "issued", "operator-ops.pem"), filepath.Join(store, "issued", "operator-ops-key.pem"), filepath.Join(store, "ca.pem")
	conn := []string{"--mws", "127.0.0.1:7800", "--cert", cert, "--key", key, "--ca", ca}
	cfg := filepath.Join(dir, "op.json")
	if err := os.WriteFile(cfg, []byte(`{"session": "x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"op"}, "op: no command given"},
		{[]string{"op", "list"}, `op: unknown command "list"`},
		{[]string{"op", "members"}, "--mws is required"},
		{append([]string{"op", "members", "--verbose"}, conn...), "verbose"},
		{append([]string{"op", "move"}, conn...), "--session is required"},
		{append([]string{"op", "move", "--session", "s", "now"}, conn...), `unexpected argument "now"`},
		{append([]string{"op", "drain", "--timeout", "-1s"}, conn...), "--timeout -1s: want > 0"},
		{append([]string{"op", "members", "--config", cfg}, conn...), `unknown key "session"`},
		{[]string{"help", "op", "nope"}, `unknown command "nope"`},
	} {
		_, _, err := run(t, "", tt.args...)
		if !errors.Is(err, mws.ErrUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}
