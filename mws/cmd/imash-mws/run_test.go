package main

// These tests drive mws.Run, the whole imash-mws command line, as the
// binary does: ca and user end to end in a temporary directory, and serve
// against a real mux, with a clientlib device fetching through it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
		{name: "serve -h", args: []string{"serve", "-h"}, wantOut: []string{"-mux address", "-users file",
			"-gossip-listen address", "-seed address", "-drain-on-exit", "signal first drains"}},
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

// TestRunServeClusterFlags checks the cluster flags: each problem is a
// usage error naming its flag.
func TestRunServeClusterFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	shortSecret := write("short.secret", "tooshort\n")
	badKey := write("bad.key", "not a key\n")
	goodKey := write("good.key", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))+"\n")
	twoKeys := write("two.keys", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{4}, 16))+"\n"+
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))+"\n")
	rawKey := write("raw.key", strings.Repeat("k", 24)+"\n")
	gossip := []string{"--gossip-listen", "127.0.0.1:0"}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    []string
		wantNot []string
	}{
		{name: "two base64 keys are keys", args: append(gossip, "--gossip-key-file", twoKeys, "--seed", "nohost"),
			want: []string{`--seed "nohost"`}, wantNot: []string{"--gossip-key-file"}},
		{name: "a raw key is a key", args: append(gossip, "--gossip-key-file", rawKey, "--seed", "nohost"),
			want: []string{`--seed "nohost"`}, wantNot: []string{"--gossip-key-file"}},
		{name: "missing key file", args: gossip, want: []string{"--gossip-key-file is required with --gossip-listen"}},
		{name: "key file not found", args: append(gossip, "--gossip-key-file", filepath.Join(dir, "nope.key")),
			want: []string{"--gossip-key-file " + filepath.Join(dir, "nope.key") + ": no such file"}},
		{name: "not a key", args: append(gossip, "--gossip-key-file", badKey),
			want: []string{"--gossip-key-file " + badKey, "10 bytes: want a key of 16, 24 or 32 bytes"}},
		{name: "key and insecure", args: append(gossip, "--gossip-key-file", goodKey, "--gossip-insecure"),
			want: []string{"--gossip-key-file and --gossip-insecure: choose one"}},
		{name: "short ticket secret", args: []string{"--ticket-secret-file", shortSecret},
			want: []string{"--ticket-secret-file " + shortSecret, "8 bytes, want at least 32"}},
		{name: "bad seed", args: append(gossip, "--gossip-key-file", goodKey, "--seed", "nohost"),
			want: []string{`--seed "nohost"`}},
		{name: "seed port 0", args: append(gossip, "--gossip-key-file", goodKey, "--seed", "127.0.0.1:0"),
			want: []string{`--seed "127.0.0.1:0"`, "want 1-65535"}},
		{name: "bad seed from the environment", env: map[string]string{"IMASH_MWS_SEED": "127.0.0.1:7946,nohost"},
			args: append(gossip, "--gossip-key-file", goodKey), want: []string{`--seed "nohost"`}},
		{name: "seed without gossip", args: []string{"--seed", "10.0.0.1:7946"}, want: []string{"--seed needs --gossip-listen"}},
		{name: "gossip listen on a host name", args: []string{"--gossip-listen", "localhost:7946", "--gossip-insecure"},
			want: []string{`--gossip-listen "localhost:7946"`, "want an IP address"}},
		{name: "gossip listen bad port", args: []string{"--gossip-listen", "127.0.0.1:99999", "--gossip-insecure"},
			want: []string{`--gossip-listen "127.0.0.1:99999"`, "want 0-65535"}},
		{name: "gossip advertise port needs a listen port", args: append(gossip, "--gossip-insecure", "--gossip-advertise", "10.0.0.1:7946"),
			want: []string{`--gossip-advertise "10.0.0.1:7946"`, "explicit --gossip-listen port"}},
		{name: "wildcard listen needs advertise", args: append(gossip, "--gossip-insecure", "--listen", "0.0.0.0:7800"),
			want: []string{`--advertise is required with --gossip-listen when --listen "0.0.0.0:7800"`}},
		{name: "wildcard advertise", args: []string{"--advertise", "0.0.0.0:7800"}, want: []string{`--advertise "0.0.0.0:7800"`, "wildcard"}},
		{name: "balancing knobs", args: []string{"--deny-above", "2", "--overload-above", "0.5", "--overload-target", "0.9",
			"--admission-slack", "-1", "--drain-grace", "0s", "--move-timeout", "0s", "--max-move-bytes", "0", "--drain-timeout", "0s",
			"--balance-interval", "0s"},
			want: []string{"(--deny-above)", "(--overload-above, --overload-target)", "(--admission-slack)", "(--drain-grace)",
				"(--move-timeout)", "(--max-move-bytes, --max-move-objects)", "(--balance-interval)", "--drain-timeout 0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, _, err := run(t, "", append([]string{"serve"}, tt.args...)...)
			if !errors.Is(err, mws.ErrUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error has %q:\n%v", w, err)
				}
			}
		})
	}
}

// clusterEnv is what MWSs of one cluster share: a CA store with their
// certificates, a user file, gossip and ticket secrets, and a mux in front
// of an image server and a raw stream server.
type clusterEnv struct {
	dir, store, caFile, usersFile string
	keyFile, ticketFile           string
	muxAddr                       string
	set                           *legacy.ImageSet
	stream                        *legacy.StreamServer
	// streamGate holds the stream server at half its bytes until closed
	// (releaseStream).
	streamGate    chan struct{}
	releaseStream func()
}

const clusterStreamBytes = 4 << 20

func newClusterEnv(t *testing.T, mwsNames ...string) *clusterEnv {
	t.Helper()
	dir := t.TempDir()
	e := &clusterEnv{dir: dir, store: filepath.Join(dir, "ca"), usersFile: filepath.Join(dir, "users.htpasswd")}
	e.caFile = filepath.Join(e.store, "ca.pem")
	mustRun(t, "", "ca", "init", "--dir", e.store, "--trust-domain", "example.test")
	mustRun(t, "", "ca", "issue", "--dir", e.store, "--role", "mux", "--name", "mux-1")
	for _, n := range mwsNames {
		mustRun(t, "", "ca", "issue", "--dir", e.store, "--role", "mws", "--name", n, "--ip", "127.0.0.1")
	}
	mustRun(t, "", "ca", "issue", "--dir", e.store, "--role", "device", "--name", "laptop-1")
	mustRun(t, "", "ca", "issue", "--dir", e.store, "--role", "operator", "--name", "ops")
	mustRun(t, "s3cret\n", "user", "add", "--file", e.usersFile, "--name", "alice", "--password-stdin", "--cost", "4")
	e.keyFile = filepath.Join(dir, "gossip.key")
	e.ticketFile = filepath.Join(dir, "tickets.secret")
	if err := os.WriteFile(e.keyFile, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.ticketFile, bytes.Repeat([]byte{'t'}, 48), 0o600); err != nil {
		t.Fatal(err)
	}

	var err error
	if e.set, err = legacy.GenerateImages(2, 2, 4<<10, 64<<10); err != nil {
		t.Fatal(err)
	}
	hs, err := legacy.NewHTTPServer(e.set, legacy.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Close() })
	e.streamGate = make(chan struct{})
	var once sync.Once
	e.releaseStream = func() { once.Do(func() { close(e.streamGate) }) }
	e.stream, err = legacy.NewStreamServer(legacy.StreamConfig{SendBytes: clusterStreamBytes, Seed: 11, CloseWriteAfterSend: true,
		OnWrite: func(total int64) {
			if total >= clusterStreamBytes/2 {
				<-e.streamGate
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.stream.Close() })
	t.Cleanup(e.releaseStream) // runs first: Close waits for OnWrite

	cert, pool, err := pki.LoadKeyPair(e.issued("mux", "mux-1"))
	if err != nil {
		t.Fatal(err)
	}
	mcfg := mux.NewDefaultConfig()
	mcfg.TLS = pki.ServerTLS(cert, pool)
	mcfg.Backends = []mux.Backend{{Name: "images", Addr: hs.Addr()}, {Name: "stream", Addr: e.stream.Addr()}}
	mx, err := mux.New(mcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	muxDone := make(chan error, 1)
	go func() { muxDone <- mx.Serve(lis) }()
	t.Cleanup(func() {
		mx.Close(context.Background())
		<-muxDone
	})
	e.muxAddr = lis.Addr().String()
	return e
}

// issued returns the certificate, key and CA files of an issued identity.
func (e *clusterEnv) issued(role, name string) (cert, key, ca string) {
	base := filepath.Join(e.store, "issued", role+"-"+name)
	return base + ".pem", base + "-key.pem", e.caFile
}

// clusterMWS is one "imash-mws serve" running in the test.
type clusterMWS struct {
	name   string
	addr   string // gRPC, from the ready file
	gossip string // gossip address, from the log
	cancel context.CancelFunc
	done   chan error
	stderr *syncBuffer
	ready  string
}

// serve starts "imash-mws serve" for MWS name with gossip on a free
// loopback port and the env's files; extra flags come last.
func (e *clusterEnv) serve(t *testing.T, name string, extra ...string) *clusterMWS {
	t.Helper()
	cert, key, ca := e.issued("mws", name)
	m := &clusterMWS{name: name, done: make(chan error, 1), stderr: &syncBuffer{}, ready: filepath.Join(e.dir, name+".addr")}
	args := append([]string{"serve", "--cert", cert, "--key", key, "--ca", ca, "--users", e.usersFile,
		"--mux", e.muxAddr, "--http-backend", "images", "--listen", "127.0.0.1:0", "--ready-file", m.ready,
		"--log-format", "json", "--log-level", "debug",
		"--gossip-listen", "127.0.0.1:0", "--gossip-key-file", e.keyFile, "--ticket-secret-file", e.ticketFile,
		"--drain-grace", "5s", "--shutdown-grace", "5s"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- mws.Run(ctx, args, nil, &syncBuffer{}, m.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-m.done:
		case <-time.After(2 * time.Minute):
			t.Errorf("%s: Run did not return 2m after cancel", name)
		}
	})
	return m
}

// waitReady waits for m's ready file and reads its gossip address from
// the log.
func (m *clusterMWS) waitReady(t *testing.T) {
	t.Helper()
	m.addr = waitFile(t, m.ready, m.done, m.stderr)
	for _, line := range strings.Split(m.stderr.String(), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			Gossip string `json:"gossip"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "joined the cluster" {
			m.gossip = rec.Gossip
		}
	}
	if m.gossip == "" {
		t.Fatalf("%s: no gossip address in the log:\n%s", m.name, m.stderr)
	}
}

// stop cancels m's context, as SIGTERM does, and returns Run's result.
func (m *clusterMWS) stop(t *testing.T) error {
	t.Helper()
	m.cancel()
	return m.wait(t)
}

// wait returns Run's result once it returns.
func (m *clusterMWS) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-m.done:
		m.done <- err // for the cleanup
		return err
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: Run did not return within 2m\nstderr: %s", m.name, m.stderr)
		return nil
	}
}

// operator returns an Operator API client of the MWS at addr.
func (e *clusterEnv) operator(t *testing.T, addr string) mwsv1.OperatorClient {
	t.Helper()
	cert, pool, err := pki.LoadKeyPair(e.issued("operator", "ops"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(cert, pool, pki.RoleMWS))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return mwsv1.NewOperatorClient(cc)
}

// members asks the Operator API of the MWS at addr who is in the cluster:
// name to state.
func (e *clusterEnv) members(ctx context.Context, t *testing.T, addr string) (map[string]string, error) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := e.operator(t, addr).Members(cctx, &mwsv1.MembersRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range res.GetMembers() {
		out[m.GetName()] = m.GetState()
	}
	return out, nil
}

// waitMembers polls the MWS at addr until its view of the cluster is want.
func (e *clusterEnv) waitMembers(ctx context.Context, t *testing.T, addr string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := e.members(ctx, t, addr)
		if err == nil && maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members at %s: %v (err %v), want %v", addr, got, err, want)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// TestRunServeCluster runs three MWSs through Run that form one gossip
// cluster, refuses a fourth with another gossip key, then stops the first
// one, as SIGTERM does, while a device's raw stream is half way: the
// session moves to a peer, the device goes on there without an error, the
// stream's bytes are exact both ways, and Run returns nil.
func TestRunServeCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newClusterEnv(t, "mws-1", "mws-2", "mws-3", "mws-4")

	// (a) Three MWSs join one cluster through the first one's gossip
	// address, and each sees the other two.
	m1 := e.serve(t, "mws-1")
	m1.waitReady(t)
	m2 := e.serve(t, "mws-2", "--seed", m1.gossip)
	m3 := e.serve(t, "mws-3", "--seed", m1.gossip)
	m2.waitReady(t)
	m3.waitReady(t)
	all := map[string]string{"mws-1": "alive", "mws-2": "alive", "mws-3": "alive"}
	for _, m := range []*clusterMWS{m1, m2, m3} {
		e.waitMembers(ctx, t, m.addr, all)
	}

	// (c) An MWS with another gossip key is refused, with an error that
	// says why it may be.
	wrongKey := filepath.Join(e.dir, "wrong.key")
	if err := os.WriteFile(wrongKey, bytes.Repeat([]byte{9}, 16), 0o600); err != nil {
		t.Fatal(err)
	}
	m4 := e.serve(t, "mws-4", "--seed", m1.gossip, "--gossip-key-file", wrongKey)
	select {
	case err := <-m4.done:
		m4.done <- err
		if err == nil || errors.Is(err, mws.ErrUsage) || !strings.Contains(err.Error(), "cannot join") ||
			!strings.Contains(err.Error(), "--gossip-key-file") || !strings.Contains(err.Error(), m1.gossip) ||
			strings.Contains(err.Error(), "\n") {
			t.Fatalf("mws-4 with the wrong gossip key: err = %v, want a one-line join error naming the seed and --gossip-key-file", err)
		}
		t.Logf("wrong key: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatalf("mws-4 with the wrong gossip key still running after 2m\nstderr: %s", m4.stderr)
	}
	if _, err := os.Stat(m4.ready); !os.IsNotExist(err) {
		t.Errorf("mws-4 wrote its ready file (stat: %v)", err)
	}
	if got, err := e.members(ctx, t, m1.addr); err != nil || !maps.Equal(got, all) {
		t.Errorf("members at mws-1 after the intruder: %v (err %v)", got, err)
	}

	// (b) A device works on mws-1: a Get, and a raw stream held at half
	// way in both directions.
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
	if sess.MWS() != "mws-1" {
		t.Fatalf("session opened on %s, want mws-1", sess.MWS())
	}
	img := e.set.Images()[0]
	get := func(when string) {
		t.Helper()
		obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
		if err != nil || !bytes.Equal(obj.Body, img.Bytes) {
			t.Fatalf("get %s (on %s): %v", when, sess.MWS(), err)
		}
	}
	get("before the stop")
	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	up := bytes.Repeat([]byte("imash-up-"), 256<<10/9*4) // about 1 MiB
	upHalf := len(up) / 2
	var read atomic.Int64
	down := sha256.New()
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			down.Write(buf[:n])
			read.Add(int64(n))
			if err == io.EOF {
				readErr <- nil
				return
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	if _, err := conn.Write(up[:upHalf]); err != nil {
		t.Fatal(err)
	}
	lc, err := e.stream.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for lc.Received() < int64(upHalf) || read.Load() < clusterStreamBytes/2 {
		if time.Now().After(deadline) {
			t.Fatalf("stream before the stop: legacy got %d of %d up, device read %d of %d down",
				lc.Received(), upHalf, read.Load(), clusterStreamBytes/2)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}

	// SIGTERM: mws-1 drains to a peer, leaves the cluster and returns nil.
	if err := m1.stop(t); err != nil {
		t.Fatalf("mws-1: Run = %v after cancel, want nil\nstderr: %s", err, m1.stderr)
	}
	for _, w := range []string{`"msg":"drain before exit done"`, `"msg":"left the cluster"`} {
		if !strings.Contains(m1.stderr.String(), w) {
			t.Errorf("mws-1's log lacks %s", w)
		}
	}
	// The peers see mws-1 gone.
	for _, m := range []*clusterMWS{m2, m3} {
		e.waitMembers(ctx, t, m.addr, map[string]string{"mws-1": "gone", "mws-2": "alive", "mws-3": "alive"})
	}

	// The device goes on at the peer: the rest of the stream, then a Get.
	e.releaseStream()
	if _, err := conn.Write(up[upHalf:]); err != nil {
		t.Fatalf("write after the stop: %v", err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatalf("close write after the stop: %v", err)
	}
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatalf("read after the stop: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("stream not done: read %d of %d", read.Load(), clusterStreamBytes)
	}
	select {
	case <-lc.Done():
	case <-ctx.Done():
		t.Fatal("legacy connection not done")
	}
	if [32]byte(down.Sum(nil)) != lc.SentSum() {
		t.Errorf("down bytes differ across the drain: read %d of %d", read.Load(), lc.Sent())
	}
	if lc.ReceivedSum() != sha256.Sum256(up) {
		t.Errorf("up bytes differ across the drain: legacy received %d of %d", lc.Received(), len(up))
	}
	if n := e.stream.Accepted(); n != 1 {
		t.Errorf("legacy server accepted %d connections, want 1", n)
	}
	get("after the stop")
	if at := sess.MWS(); at != "mws-2" && at != "mws-3" {
		t.Errorf("session on %q after mws-1 stopped, want a peer", at)
	}
	// With the same --ticket-secret-file, TLS resumes at the peer.
	if st := c.MoveStats(); st.Followed < 1 || st.TLSResumed < 1 {
		t.Errorf("move stats %+v: want a follow with TLS resumed", st)
	}

	// An operator's drain with exit stops the MWS that holds the session
	// now; the session moves to the last one.
	holder, last := m2, m3
	if sess.MWS() == "mws-3" {
		holder, last = m3, m2
	}
	st, err := e.operator(t, holder.addr).Drain(ctx, &mwsv1.DrainRequest{Exit: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := st.Recv()
		if err != nil {
			t.Fatalf("operator drain of %s: %v", holder.name, err)
		}
		if p.GetDone() {
			break
		}
	}
	if err := holder.wait(t); err != nil {
		t.Fatalf("%s: Run = %v after the operator's drain, want nil", holder.name, err)
	}
	get("after the operator's drain")
	if sess.MWS() != last.name {
		t.Errorf("session on %q after the operator's drain, want %s", sess.MWS(), last.name)
	}
	e.waitMembers(ctx, t, last.addr, map[string]string{"mws-1": "gone", holder.name: "gone", last.name: "alive"})
}
