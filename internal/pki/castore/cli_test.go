package castore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, args...)
	if err != nil {
		t.Fatalf("ca %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestCLIInitIssueList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	out := mustRun(t, "init", "--dir", dir, "--trust-domain", "example.org")
	if !strings.Contains(out, filepath.Join(dir, "ca.pem")) {
		t.Errorf("init output does not name ca.pem:\n%s", out)
	}

	out = mustRun(t, "issue", "--dir", dir, "--role", "mws", "--name", "mws-1", "--dns", "a.example.org,b.example.org", "--ip", "127.0.0.1", "--validity", "24h")
	for _, p := range []string{"issued/mws-mws-1.pem", "issued/mws-mws-1-key.pem"} {
		path := filepath.Join(dir, filepath.FromSlash(p))
		if !strings.Contains(out, path) {
			t.Errorf("issue output does not name %s:\n%s", path, out)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("issue did not write %s: %v", path, err)
		}
	}
	mustRun(t, "issue", "--dir", dir, "--role", "device", "--name", "phone")
	mustRun(t, "issue", "--dir", dir, "--role", "device", "--name", "laptop")

	out = mustRun(t, "list", "--dir", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("list printed %d lines, want header + 3:\n%s", len(lines), out)
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "ROLE NAME SERIAL NOT-AFTER SANS" {
		t.Errorf("header %q", lines[0])
	}
	var got []string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		got = append(got, f[0]+"/"+f[1]+" "+f[4])
	}
	want := []string{"device/laptop -", "device/phone -", "mws/mws-1 a.example.org,b.example.org,127.0.0.1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("list rows %q, want %q", got, want)
	}
}

func TestCLIDuplicateAndForce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	mustRun(t, "init", "--dir", dir, "--trust-domain", "example.org")
	mustRun(t, "issue", "--dir", dir, "--role", "device", "--name", "phone")

	_, _, err := run(t, "issue", "--dir", dir, "--role", "device", "--name", "phone")
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("duplicate issue: err %v, want ErrExists mentioning --force", err)
	}
	mustRun(t, "issue", "--dir", dir, "--role", "device", "--name", "phone", "--force")

	_, _, err = run(t, "init", "--dir", dir, "--trust-domain", "example.org")
	if !errors.Is(err, ErrExists) {
		t.Errorf("second init: err %v, want ErrExists", err)
	}
}

func TestCLIErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	mustRun(t, "init", "--dir", dir, "--trust-domain", "example.org")
	empty := t.TempDir()

	tests := []struct {
		name      string
		args      []string
		wantUsage bool
		wantIn    []string
	}{
		{name: "no command", args: nil, wantUsage: true, wantIn: []string{"no command"}},
		{name: "unknown command", args: []string{"sign"}, wantUsage: true, wantIn: []string{`"sign"`}},
		{name: "init without flags", args: []string{"init"}, wantUsage: true, wantIn: []string{"--dir is required", "--trust-domain is required"}},
		{name: "init bad trust domain", args: []string{"init", "--dir", t.TempDir(), "--trust-domain", "a b"}, wantIn: []string{"trust domain"}},
		{name: "issue unknown role", args: []string{"issue", "--dir", dir, "--role", "admin", "--name", "x"}, wantUsage: true, wantIn: []string{`unknown role "admin"`}},
		{name: "issue missing dir", args: []string{"issue", "--role", "mws", "--name", "x"}, wantUsage: true, wantIn: []string{"--dir is required"}},
		{name: "issue bad ip", args: []string{"issue", "--dir", dir, "--role", "mws", "--name", "x", "--ip", "localhost"}, wantUsage: true, wantIn: []string{`"localhost" is not an IP address`}},
		{name: "issue no store", args: []string{"issue", "--dir", empty, "--role", "mws", "--name", "x"}, wantIn: []string{"no CA store"}},
		{name: "issue bad name", args: []string{"issue", "--dir", dir, "--role", "mws", "--name", "a/b"}, wantIn: []string{`name "a/b"`}},
		{name: "unknown flag", args: []string{"list", "--dir", dir, "--all"}, wantUsage: true, wantIn: []string{"-all"}},
		{name: "stray argument", args: []string{"list", "--dir", dir, "extra"}, wantUsage: true, wantIn: []string{`"extra"`}},
		{name: "list missing dir", args: []string{"list"}, wantUsage: true, wantIn: []string{"--dir is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := run(t, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrUsage); got != tt.wantUsage {
				t.Errorf("errors.Is(err, ErrUsage) = %v, want %v (err: %v)", got, tt.wantUsage, err)
			}
			if tt.wantUsage && !strings.Contains(stderr, "usage:") {
				t.Errorf("no usage text on stderr for a usage error: %q", stderr)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestCLIHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"issue", "-h"}} {
		out, _, err := run(t, args...)
		if err != nil {
			t.Errorf("%v: %v", args, err)
		}
		if !strings.Contains(out, "usage: ca") {
			t.Errorf("%v: no usage on stdout: %q", args, out)
		}
	}
	out, _, _ := run(t, "issue", "-h")
	for _, flag := range []string{"-dir", "-role", "-name", "-dns", "-ip", "-validity", "-force"} {
		if !strings.Contains(out, flag) {
			t.Errorf("issue -h does not describe %s:\n%s", flag, out)
		}
	}
}

func TestCLICancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := Run(ctx, []string{"init", "--dir", dir, "--trust-domain", "example.org"}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a cancelled Run created the store")
	}
}
