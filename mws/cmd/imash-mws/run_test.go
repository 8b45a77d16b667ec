package main

// These tests drive mws.Run, the whole imash-mws command line, as the
// binary does: ca and user end to end in a temporary directory, and serve
// against a real mux, with a clientlib device fetching through it.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/mux"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines to log to
// while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut syncBuffer
	err = mws.Run(t.Context(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, stdin, args...)
	if err != nil {
		t.Fatalf("imash-mws %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// wantUsage: the error matches mws.ErrUsage; no error at all is
		// wanted when it is false and wantErr is empty.
		wantUsage bool
		wantErr   []string // each must be in the error
		wantOut   []string // each must be on stdout
		wantStd   []string // each must be on stderr
	}{
		{name: "no command", wantUsage: true, wantErr: []string{"no command given"}, wantStd: []string{"Commands:", "serve", "ca", "user"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantUsage: true, wantErr: []string{`unknown command "frobnicate"`}},
		{name: "help", args: []string{"help"}, wantOut: []string{"serve", "ca", "user", "IMASH_MWS_"}},
		{name: "help serve", args: []string{"help", "serve"}, wantOut: []string{"-cache-bytes", "-ready-file", "default 256MiB"}},
		{name: "help ca", args: []string{"help", "ca"}, wantOut: []string{"ca init"}},
		{name: "help user", args: []string{"help", "user"}, wantOut: []string{"user add"}},
		{name: "help unknown", args: []string{"help", "nope"}, wantUsage: true, wantErr: []string{`"nope"`}},
		{name: "serve -h", args: []string{"serve", "-h"}, wantOut: []string{"-mux address", "-users file"}},
		{name: "serve bad flag value", args: []string{"serve", "--cache-bytes", "lots"}, wantUsage: true,
			wantErr: []string{"cache-bytes", "whole number of bytes"}, wantStd: []string{"usage: imash-mws serve"}},
		{name: "serve unknown flag", args: []string{"serve", "--colour"}, wantUsage: true, wantErr: []string{"colour"}},
		{name: "serve stray argument", args: []string{"serve", "now"}, wantUsage: true, wantErr: []string{`unexpected argument "now"`}},
		{name: "serve reports every problem at once", args: []string{"serve",
			"--log-level", "loud", "--mux", "nohost", "--http-backend", "bad name", "--cache-bytes", "1KiB",
			"--max-sessions", "0", "--credential-ttl", "0s", "--get-chunk", "8MiB", "--users", "/nonexistent/users",
			"--cert", "/nonexistent/c.pem", "--key", "/nonexistent/k.pem", "--ca", "/nonexistent/ca.pem",
			"--shutdown-grace", "0s", "--policy", "/nonexistent/policy.json"},
			wantUsage: true,
			wantErr: []string{`--log-level "loud"`, `--mux "nohost"`, `"bad name"`, "(--http-backend)", "(--cache-bytes)",
				"(--max-sessions)", "(--credential-ttl)", "(--get-chunk)", "--users:", "load key pair", "--shutdown-grace", "--policy:"}},
		{name: "serve without files", args: []string{"serve"}, wantUsage: true,
			wantErr: []string{"--cert is required", "--key is required", "--ca is required", "--users is required"}},
		{name: "ca without command", args: []string{"ca"}, wantUsage: true, wantErr: []string{"ca: no command given"}},
		{name: "ca issue without flags", args: []string{"ca", "issue"}, wantUsage: true,
			wantErr: []string{"--dir is required", "--role is required", "--name is required"}},
		{name: "user add without flags", args: []string{"user", "add"}, wantUsage: true,
			wantErr: []string{"--file is required", "--name is required", "--password-stdin is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := run(t, "", tt.args...)
			if got := errors.Is(err, mws.ErrUsage); got != tt.wantUsage {
				t.Fatalf("errors.Is(%v, ErrUsage) = %v, want %v", err, got, tt.wantUsage)
			}
			if !tt.wantUsage && len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.wantStd {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

// TestRunServeReportsEverySource checks that problems of the config file,
// the environment and the flags come out together.
func TestRunServeReportsEverySource(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mws.json")
	if err := os.WriteFile(cfg, []byte(`{"nope": 1, "max-sessions": "many", "max-headers": 0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IMASH_MWS_CACHE_ENTRIES", "abc")
	_, _, err := run(t, "", "serve", "--config", cfg, "--credential-ttl", "0s")
	if !errors.Is(err, mws.ErrUsage) {
		t.Fatalf("err = %v, want a usage error", err)
	}
	for _, w := range []string{`unknown key "nope"`, `key "max-sessions"`, "IMASH_MWS_CACHE_ENTRIES", "(--max-headers)", "(--credential-ttl)", "--cert is required"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestRunCAAndUser(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "ca")
	usersFile := filepath.Join(dir, "users.htpasswd")
	steps := []struct {
		name    string
		stdin   string
		args    []string
		wantOut []string
		wantErr string
	}{
		{name: "ca init", args: []string{"ca", "init", "--dir", store, "--trust-domain", "example.test"},
			wantOut: []string{"created CA for trust domain example.test", filepath.Join(store, "ca.pem")}},
		{name: "ca init again", args: []string{"ca", "init", "--dir", store, "--trust-domain", "example.test"}, wantErr: "already"},
		{name: "issue mux", args: []string{"ca", "issue", "--dir", store, "--role", "mux", "--name", "mux-1"},
			wantOut: []string{"spiffe://example.test/mux/mux-1", filepath.Join(store, "issued", "mux-mux-1.pem")}},
		{name: "issue mws", args: []string{"ca", "issue", "--dir", store, "--role", "mws", "--name", "mws-1", "--ip", "127.0.0.1"},
			wantOut: []string{"spiffe://example.test/mws/mws-1"}},
		{name: "issue device", args: []string{"ca", "issue", "--dir", store, "--role", "device", "--name", "laptop-1"},
			wantOut: []string{"spiffe://example.test/device/laptop-1"}},
		{name: "issue device again", args: []string{"ca", "issue", "--dir", store, "--role", "device", "--name", "laptop-1"}, wantErr: "--force"},
		{name: "ca list", args: []string{"ca", "list", "--dir", store}, wantOut: []string{"mux-1", "mws-1", "127.0.0.1", "laptop-1"}},
		{name: "user add", stdin: "s3cret\n", args: []string{"user", "add", "--file", usersFile, "--name", "alice", "--password-stdin", "--cost", "4"},
			wantOut: []string{"added alice"}},
		{name: "user add again", stdin: "other\n", args: []string{"user", "add", "--file", usersFile, "--name", "alice", "--password-stdin", "--cost", "4"},
			wantErr: "--update"},
		{name: "user add bob", stdin: "hunter2\n", args: []string{"user", "add", "--file", usersFile, "--name", "bob", "--password-stdin", "--cost", "4"},
			wantOut: []string{"added bob"}},
		{name: "user list", args: []string{"user", "list", "--file", usersFile}, wantOut: []string{"alice\nbob\n"}},
		{name: "user del", args: []string{"user", "del", "--file", usersFile, "--name", "bob"}, wantOut: []string{"deleted bob"}},
		{name: "user list after del", args: []string{"user", "list", "--file", usersFile}, wantOut: []string{"alice\n"}},
	}
	for _, st := range steps {
		ok := t.Run(st.name, func(t *testing.T) {
			out, errOut, err := run(t, st.stdin, st.args...)
			if st.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), st.wantErr) || errors.Is(err, mws.ErrUsage) {
					t.Fatalf("err = %v, want a non-usage error containing %q", err, st.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, errOut)
			}
			for _, w := range st.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
		})
		if !ok {
			t.FailNow() // later steps build on this one
		}
	}
	// The files are what the servers load.
	for _, f := range []string{"mws-mws-1", "mux-mux-1", "device-laptop-1"} {
		if _, _, err := pki.LoadKeyPair(filepath.Join(store, "issued", f+".pem"), filepath.Join(store, "issued", f+"-key.pem"), filepath.Join(store, "ca.pem")); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	st, err := os.Stat(usersFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("user file: %v, mode %v", err, st.Mode())
	}
}

// waitFile polls for path until it exists or done is closed or a deadline
// passes.
func waitFile(t *testing.T, path string, done <-chan error, stderr *syncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v\nstderr: %s", err, stderr)
		default:
		}
		if b, err := os.ReadFile(path); err == nil {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no ready file after 30s\nstderr: %s", stderr)
	return ""
}

func TestRunServe(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "ca")
	usersFile := filepath.Join(dir, "users.htpasswd")
	issued := func(role, name string) (cert, key string) {
		return filepath.Join(store, "issued", role+"-"+name+".pem"), filepath.Join(store, "issued", role+"-"+name+"-key.pem")
	}
	caFile := filepath.Join(store, "ca.pem")
	mustRun(t, "", "ca", "init", "--dir", store, "--trust-domain", "example.test")
	mustRun(t, "", "ca", "issue", "--dir", store, "--role", "mux", "--name", "mux-1")
	mustRun(t, "", "ca", "issue", "--dir", store, "--role", "mws", "--name", "mws-1", "--ip", "127.0.0.1")
	mustRun(t, "", "ca", "issue", "--dir", store, "--role", "device", "--name", "laptop-1")
	mustRun(t, "s3cret\n", "user", "add", "--file", usersFile, "--name", "alice", "--password-stdin", "--cost", "4")

	set, err := legacy.GenerateImages(3, 2, 4<<10, 100<<10)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()

	// A real mux, with its certificate from the same store.
	muxCert, muxKey := issued("mux", "mux-1")
	cert, pool, err := pki.LoadKeyPair(muxCert, muxKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	mcfg := mux.NewDefaultConfig()
	mcfg.TLS = pki.ServerTLS(cert, pool)
	mcfg.Backends = []mux.Backend{{Name: "images", Addr: hs.Addr()}}
	mx, err := mux.New(mcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	muxLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	muxDone := make(chan error, 1)
	go func() { muxDone <- mx.Serve(muxLis) }()
	defer func() {
		mx.Close(context.Background())
		<-muxDone
	}()

	// Settings from all three sources: a config file (with a JSON number
	// too large for flag.Int's syntax), the environment and flags.
	cfgFile := filepath.Join(dir, "mws.json")
	if err := os.WriteFile(cfgFile, []byte(`{"http-backend": ["images"], "cache-bytes": 67108864, "users-check-interval": "20ms"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IMASH_MWS_MUX", muxLis.Addr().String())
	mwsCert, mwsKey := issued("mws", "mws-1")
	ready := filepath.Join(dir, "mws.addr")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- mws.Run(ctx, []string{"serve", "--config", cfgFile,
			"--cert", mwsCert, "--key", mwsKey, "--ca", caFile, "--users", usersFile,
			"--listen", "127.0.0.1:0", "--ready-file", ready, "--log-level", "debug"}, nil, &syncBuffer{}, &stderr)
	}()
	addr := waitFile(t, ready, done, &stderr)

	devCert, devKey := issued("device", "laptop-1")
	dcert, roots, err := pki.LoadKeyPair(devCert, devKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientlib.Dial(ctx, addr, clientlib.Config{Certificate: dcert, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(ctx, "alice", "s3cret"); err != nil {
		t.Fatalf("login: %v\nstderr: %s", err, &stderr)
	}
	if c.MWS() != "mws-1" {
		t.Errorf("MWS name %q, want mws-1 (from the certificate)", c.MWS())
	}
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := set.Images()[0]
	for _, want := range []mwsv1.CacheOutcome{mwsv1.CacheOutcome_CACHE_OUTCOME_MISS, mwsv1.CacheOutcome_CACHE_OUTCOME_HIT} {
		obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
		if err != nil {
			t.Fatalf("get: %v\nstderr: %s", err, &stderr)
		}
		if !bytes.Equal(obj.Body, img.Bytes) || obj.Cache != want {
			t.Fatalf("get: %d bytes (want %d), cache %v (want %v)", len(obj.Body), len(img.Bytes), obj.Cache, want)
		}
	}

	// A user added while serving can log in: the MWS watches the file.
	mustRun(t, "hunter2\n", "user", "add", "--file", usersFile, "--name", "bob", "--password-stdin", "--cost", "4")
	c2, err := clientlib.Dial(ctx, addr, clientlib.Config{Certificate: dcert, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for err = c2.Login(ctx, "bob", "hunter2"); err != nil && time.Now().Before(deadline); err = c2.Login(ctx, "bob", "hunter2") {
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("bob cannot log in 10s after being added: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel\nstderr: %s", err, &stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30s after cancel")
	}
	if _, err := os.Stat(ready); !os.IsNotExist(err) {
		t.Errorf("ready file still there after shutdown (stat: %v)", err)
	}
}
