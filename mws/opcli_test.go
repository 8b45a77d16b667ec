package mws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// These tests run "imash-mws op" against a stand-in Operator API, so that
// answers a real cluster gives rarely (a handoff in progress, a drain that
// cannot finish) come out exactly as an operator reads them. The commands
// against real MWSs are tested in mws/cmd/imash-mws.

// opFiles are PEM files of a test CA: an operator's and a device's key
// pairs, and the CA certificate.
type opFiles struct {
	dir, ca         string
	opCert, opKey   string
	devCert, devKey string
	caObj           *pki.CA
}

func newOpFiles(t *testing.T) *opFiles {
	t.Helper()
	ca, err := pki.NewCA("example.test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &opFiles{dir: t.TempDir(), caObj: ca}
	write := func(name string, b []byte) string {
		p := filepath.Join(f.dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f.ca = write("ca.pem", ca.CertPEM())
	for _, c := range []struct {
		role      pki.Role
		name      string
		cert, key *string
	}{{pki.RoleOperator, "ops", &f.opCert, &f.opKey}, {pki.RoleDevice, "laptop-1", &f.devCert, &f.devKey}} {
		iss, err := ca.Issue(pki.IssueRequest{Role: c.role, Name: c.name})
		if err != nil {
			t.Fatal(err)
		}
		*c.cert = write(c.name+".pem", iss.CertPEM)
		*c.key = write(c.name+"-key.pem", iss.KeyPEM)
	}
	return f
}

// flags are the connection flags for an MWS at addr.
func (f *opFiles) flags(addr string) []string {
	return []string{"--mws", addr, "--cert", f.opCert, "--key", f.opKey, "--ca", f.ca}
}

// fakeOperator is an Operator API whose answers a test sets.
type fakeOperator struct {
	mwsv1.UnimplementedOperatorServer
	members *mwsv1.MembersResponse
	move    func(context.Context, *mwsv1.MoveRequest) (*mwsv1.MoveResponse, error)
	drain   func(*mwsv1.DrainRequest, mwsv1.Operator_DrainServer) error
}

func (o *fakeOperator) Members(context.Context, *mwsv1.MembersRequest) (*mwsv1.MembersResponse, error) {
	return o.members, nil
}

func (o *fakeOperator) Move(ctx context.Context, req *mwsv1.MoveRequest) (*mwsv1.MoveResponse, error) {
	return o.move(ctx, req)
}

func (o *fakeOperator) Drain(req *mwsv1.DrainRequest, st mwsv1.Operator_DrainServer) error {
	return o.drain(req, st)
}

// serveFake serves o as MWS mws-1 of f's CA, with operator certificates
// only, and returns its address.
func serveFake(t *testing.T, f *opFiles, o *fakeOperator) string {
	t.Helper()
	iss, err := f.caObj.Issue(pki.IssueRequest{Role: pki.RoleMWS, Name: "mws-1"})
	if err != nil {
		t.Fatal(err)
	}
	opts := append(pki.RequireRoles(pki.RoleOperator), grpc.Creds(credentials.NewTLS(pki.ServerTLS(iss.TLS, f.caObj.Pool()))))
	srv := grpc.NewServer(opts...)
	mwsv1.RegisterOperatorServer(srv, o)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); wg.Wait() })
	return lis.Addr().String()
}

func runOpCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut strings.Builder
	err = Run(t.Context(), append([]string{"op"}, args...), nil, &out, &errOut)
	return out.String(), errOut.String(), err
}

func twoMembers() *mwsv1.MembersResponse {
	return &mwsv1.MembersResponse{Members: []*mwsv1.Member{
		{Name: "mws-1", GrpcAddr: "10.0.0.1:7800", State: "alive", Sessions: 12, MaxSessions: 100000},
		{Name: "mws-3", GrpcAddr: "10.0.0.3:7800", State: "gone", Sessions: 3, MaxSessions: 100, Draining: true},
		{Name: "mws-2", GrpcAddr: "10.0.0.2:7800", State: "alive", Sessions: 0, MaxSessions: 100000},
	}}
}

func TestOpUsage(t *testing.T) {
	f := newOpFiles(t)
	// A port nothing listens on: usage errors come before any dial.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	cfg := filepath.Join(f.dir, "op.json")
	if err := os.WriteFile(cfg, []byte(`{"nope": 1, "timeout": "soon"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    []string // each in the error
		wantStd string   // in stderr
	}{
		{name: "no command", args: nil, want: []string{"op: no command given"}, wantStd: "usage: imash-mws op <command>"},
		{name: "unknown command", args: []string{"frob"}, want: []string{`op: unknown command "frob"`}},
		{name: "help unknown", args: []string{"help", "frob"}, want: []string{`op help: unknown command "frob"`}},
		{name: "nothing set", args: []string{"members"}, want: []string{"--mws is required", "--cert is required", "--key is required", "--ca is required"},
			wantStd: "usage: imash-mws op members"},
		{name: "move without session", args: append([]string{"move"}, f.flags(closed)...), want: []string{"op move: --session is required"}},
		{name: "unknown flag", args: []string{"members", "--bogus"}, want: []string{"op members", "bogus"}},
		{name: "flag of another command", args: append([]string{"members", "--exit"}, f.flags(closed)...), want: []string{"-exit"}},
		{name: "stray argument", args: []string{"drain", "now"}, want: []string{`unexpected argument "now"`}},
		{name: "bad duration", args: append([]string{"drain", "--timeout", "soon"}, f.flags(closed)...), want: []string{"timeout"}},
		{name: "zero timeout", args: append([]string{"drain", "--timeout", "0s"}, f.flags(closed)...), want: []string{"--timeout 0s: want > 0"}},
		{name: "address without port", args: []string{"members", "--mws", "nohost", "--cert", f.opCert, "--key", f.opKey, "--ca", f.ca},
			want: []string{`--mws "nohost"`}},
		{name: "missing files", args: []string{"members", "--mws", closed, "--cert", "/nonexistent/op.pem", "--key", "/nonexistent/op-key.pem", "--ca", f.ca},
			want: []string{"load key pair"}},
		{name: "device certificate", args: []string{"members", "--mws", closed, "--cert", f.devCert, "--key", f.devKey, "--ca", f.ca},
			want: []string{"certificate is for spiffe://example.test/device/laptop-1, want role operator", "ca issue --role operator"}},
		{name: "environment and config file", env: map[string]string{"IMASH_OP_JSON": "maybe"},
			args: append([]string{"members", "--config", cfg}, f.flags(closed)...),
			want: []string{"IMASH_OP_JSON", `unknown key "nope"`, `key "timeout"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, errOut, err := runOpCmd(t, tt.args...)
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if !strings.Contains(errOut, tt.wantStd) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStd, errOut)
			}
		})
	}
}

func TestOpHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"op", "help"}, []string{"members", "move", "drain", "IMASH_OP_", "Exit status"}},
		{[]string{"help", "op"}, []string{"members", "move", "drain"}},
		{[]string{"help", "op", "drain"}, []string{"usage: imash-mws op drain", "-exit", "default 5m0s"}},
		{[]string{"op", "move", "-h"}, []string{"usage: imash-mws op move", "-session id", "-to name", "default 1m0s"}},
		{[]string{"op", "members", "--help"}, []string{"-json", "-mws address", "-config file"}},
		{[]string{"help"}, []string{"op     operate a running cluster"}},
	} {
		var out strings.Builder
		if err := Run(t.Context(), tt.args, nil, &out, &strings.Builder{}); err != nil {
			t.Errorf("%v: %v", tt.args, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: stdout lacks %q:\n%s", tt.args, w, out.String())
			}
		}
	}
}

func TestOpMembers(t *testing.T) {
	f := newOpFiles(t)
	addr := serveFake(t, f, &fakeOperator{members: twoMembers()})
	out, _, err := runOpCmd(t, append([]string{"members"}, f.flags(addr)...)...)
	if err != nil {
		t.Fatal(err)
	}
	want := "NAME   ADDRESS        STATE  SESSIONS   DRAINING\n" +
		"mws-1  10.0.0.1:7800  alive  12/100000  no\n" +
		"mws-2  10.0.0.2:7800  alive  0/100000   no\n" +
		"mws-3  10.0.0.3:7800  gone   3/100      yes\n"
	if out != want {
		t.Errorf("members:\n%s\nwant:\n%s", out, want)
	}

	// JSON, with the connection settings from a config file and the
	// environment.
	cfg := filepath.Join(f.dir, "op.json")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `{"cert": %q, "key": %q, "ca": %q}`, f.opCert, f.opKey, f.ca), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IMASH_OP_MWS", addr)
	t.Setenv("IMASH_OP_JSON", "true")
	out, _, err = runOpCmd(t, "members", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"mws": "` + addr + `"`, `"name": "mws-3"`, `"address": "10.0.0.3:7800"`, `"state": "gone"`,
		`"sessions": 3`, `"max_sessions": 100,`, `"draining": true`} {
		if !strings.Contains(out, w) {
			t.Errorf("JSON lacks %s:\n%s", w, out)
		}
	}
}

func TestOpMoveErrors(t *testing.T) {
	f := newOpFiles(t)
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	addr := serveFake(t, f, &fakeOperator{move: func(ctx context.Context, req *mwsv1.MoveRequest) (*mwsv1.MoveResponse, error) {
		switch req.GetSessionId() {
		case "busy":
			return nil, rpcerr.New(codes.FailedPrecondition, "HANDOFF_IN_PROGRESS", "session busy is being handed off")
		case "plain":
			return nil, rpcerr.New(codes.Internal, "", "something broke")
		case "slow":
			select {
			case <-ctx.Done():
			case <-block:
			}
			return nil, ctx.Err()
		}
		return &mwsv1.MoveResponse{To: req.GetTo(), Timings: &mwsv1.MoveTimings{PrepareUs: 1500, HandoverUs: 250, ShipUs: 4000, TotalUs: 5800, StateBytes: 3 << 10}}, nil
	}})
	move := func(args ...string) (string, error) {
		out, _, err := runOpCmd(t, append(append([]string{"move"}, f.flags(addr)...), args...)...)
		return out, err
	}

	out, err := move("--session", "s1", "--to", "mws-2")
	if err != nil {
		t.Fatal(err)
	}
	want := "moved session s1 to mws-2 in 5.8ms\n" +
		"  prepare        1.5ms\n" +
		"  handover       250µs\n" +
		"  ship             4ms\n" +
		"  state        3.0 KiB\n"
	if out != want {
		t.Errorf("move:\n%q\nwant:\n%q", out, want)
	}
	out, err = move("--session", "s1", "--to", "mws-2", "--json")
	if err != nil || !strings.Contains(out, `"to": "mws-2"`) || !strings.Contains(out, `"total_us": 5800`) {
		t.Errorf("move --json: %v\n%s", err, out)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--session", "busy"}, "op move: FAILED_PRECONDITION HANDOFF_IN_PROGRESS: session busy is being handed off"},
		{[]string{"--session", "plain"}, "op move: INTERNAL: something broke"},
		{[]string{"--session", "slow", "--timeout", "300ms"}, "op move: DEADLINE_EXCEEDED: gave up after --timeout 300ms"},
	} {
		_, err := move(tt.args...)
		if err == nil || errors.Is(err, ErrUsage) || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want a non-usage error starting %q", tt.args, err, tt.want)
		}
	}

	// Nothing listens: the error says where it looked.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	_, _, err = runOpCmd(t, append([]string{"move", "--session", "s1"}, f.flags(closed)...)...)
	if err == nil || errors.Is(err, ErrUsage) || !strings.HasPrefix(err.Error(), "op move: UNAVAILABLE: cannot reach the MWS at "+closed) {
		t.Errorf("unreachable MWS: err = %v", err)
	}
}

func TestOpDrain(t *testing.T) {
	f := newOpFiles(t)
	noPeer := rpcerr.New(codes.Unavailable, "NO_PEERS", "no live peer takes sessions").Error()
	var gotExit bool
	var mu sync.Mutex
	o := &fakeOperator{members: twoMembers()}
	addr := serveFake(t, f, o)
	drain := func(steps ...*mwsv1.DrainProgress) func(*mwsv1.DrainRequest, mwsv1.Operator_DrainServer) error {
		return func(req *mwsv1.DrainRequest, st mwsv1.Operator_DrainServer) error {
			mu.Lock()
			gotExit = req.GetExit()
			mu.Unlock()
			for _, p := range steps {
				if p == nil { // the drain cannot finish: wait for the caller to give up
					<-st.Context().Done()
					return st.Context().Err()
				}
				if err := st.Send(p); err != nil {
					return err
				}
			}
			return nil
		}
	}
	run := func(args ...string) (string, error) {
		out, _, err := runOpCmd(t, append(append([]string{"drain"}, f.flags(addr)...), args...)...)
		return out, err
	}

	// Every session moves; a retried failure is printed once.
	o.drain = drain(
		&mwsv1.DrainProgress{Moved: 1, Remaining: 11},
		&mwsv1.DrainProgress{Moved: 1, Remaining: 11, Failed: 1, LastError: noPeer},
		&mwsv1.DrainProgress{Moved: 1, Remaining: 11, Failed: 2, LastError: noPeer},
		&mwsv1.DrainProgress{Moved: 12, Remaining: 0, Failed: 2, LastError: noPeer},
		&mwsv1.DrainProgress{Done: true},
	)
	out, err := run("--exit")
	if err != nil {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"draining mws-1 (" + addr + "): 12 sessions",
		"moved 1, 11 left",
		"moved 1, 11 left, 1 failed attempt (last: UNAVAILABLE: no live peer takes sessions)",
		"moved 12, 0 left, 2 failed attempts (last: UNAVAILABLE: no live peer takes sessions)",
	}
	if len(lines) != len(want)+1 || !strings.HasPrefix(lines[len(lines)-1], "drained mws-1 in ") ||
		!strings.HasSuffix(lines[len(lines)-1], ": 12 sessions moved, 0 left; mws-1 is stopping") {
		t.Fatalf("drain output:\n%s", out)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d: %q, want %q", i, lines[i], w)
		}
	}
	mu.Lock()
	if !gotExit {
		t.Error("--exit did not reach the MWS")
	}
	mu.Unlock()

	// The drain cannot finish before --timeout: exit status 1 with what is
	// left.
	o.drain = drain(&mwsv1.DrainProgress{Moved: 0, Remaining: 1, Failed: 1, LastError: noPeer}, nil)
	out, err = run("--timeout", "2s")
	if err == nil || errors.Is(err, ErrUsage) ||
		err.Error() != "op drain: mws-1 still holds 1 session and takes sessions again: DEADLINE_EXCEEDED: gave up after --timeout 2s" {
		t.Errorf("unfinished drain: err = %v", err)
	}
	if !strings.Contains(out, "drain of mws-1 did not finish: moved 0, 1 left, 1 failed attempt") {
		t.Errorf("unfinished drain output:\n%s", out)
	}

	// The MWS says it is done with sessions left.
	o.drain = drain(&mwsv1.DrainProgress{Moved: 2, Remaining: 1}, &mwsv1.DrainProgress{Remaining: 1, Done: true})
	out, err = run()
	if err == nil || errors.Is(err, ErrUsage) || err.Error() != "op drain: mws-1 still holds 1 session after the drain" {
		t.Errorf("drain done with sessions left: err = %v\n%s", err, out)
	}

	// The MWS refuses.
	o.drain = func(*mwsv1.DrainRequest, mwsv1.Operator_DrainServer) error {
		return rpcerr.New(codes.FailedPrecondition, "NO_PEERS", "this MWS is not in a cluster")
	}
	_, err = run()
	if err == nil || !strings.HasSuffix(err.Error(), "FAILED_PRECONDITION NO_PEERS: this MWS is not in a cluster") {
		t.Errorf("refused drain: err = %v", err)
	}

	// --json: one object per message.
	o.drain = drain(&mwsv1.DrainProgress{Moved: 1, Remaining: 0}, &mwsv1.DrainProgress{Done: true})
	out, err = run("--json")
	if err != nil || out != "{\"moved\":1,\"left\":0,\"failed\":0,\"done\":false}\n{\"moved\":1,\"left\":0,\"failed\":0,\"done\":true}\n" {
		t.Errorf("drain --json: %v\n%s", err, out)
	}
}

func TestOpCodeNames(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		n := codeName(c)
		if n == "" || strings.HasPrefix(n, "CODE_") || strings.ToUpper(n) != n {
			t.Errorf("code %v: name %q", c, n)
		}
	}
	if got := codeName(codes.FailedPrecondition); got != "FAILED_PRECONDITION" {
		t.Errorf("FailedPrecondition: %q", got)
	}
	if got := codeName(codes.Code(99)); got != "CODE_99" {
		t.Errorf("code 99: %q", got)
	}
}
