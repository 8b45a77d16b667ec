package users

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runUser(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustRunUser(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := runUser(t, stdin, args...)
	if err != nil {
		t.Fatalf("user %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestCLIAddListDel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.htpasswd")
	const cost = "4" // MinCost, for speed
	out := mustRunUser(t, "s3cret pw\nignored second line\n", "add", "--file", path, "--name", "bob", "--password-stdin", "--cost", cost)
	if !strings.Contains(out, "added bob") {
		t.Errorf("add output %q", out)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("add did not create the file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %#o, want 0600", fi.Mode().Perm())
	}
	mustRunUser(t, "alice-pw\r\n", "add", "--file", path, "--name", "alice", "--password-stdin", "--cost", cost)
	mustRunUser(t, "no newline", "add", "--file", path, "--name", "carol", "--password-stdin", "--cost", cost)

	if out := mustRunUser(t, "", "list", "--file", path); out != "alice\nbob\ncarol\n" {
		t.Errorf("list = %q", out)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"bob": "s3cret pw", "alice": "alice-pw", "carol": "no newline"} {
		if err := f.Verify(user, pw); err != nil {
			t.Errorf("Verify(%s): %v", user, err)
		}
	}

	_, _, err = runUser(t, "other\n", "add", "--file", path, "--name", "bob", "--password-stdin", "--cost", cost)
	if !errors.Is(err, ErrUserExists) || !strings.Contains(err.Error(), "--update") {
		t.Errorf("add of an existing user: %v, want ErrUserExists mentioning --update", err)
	}
	out = mustRunUser(t, "other\n", "add", "--file", path, "--name", "bob", "--password-stdin", "--cost", cost, "--update")
	if !strings.Contains(out, "changed the password of bob") {
		t.Errorf("update output %q", out)
	}
	mustRunUser(t, "", "del", "--file", path, "--name", "alice")
	if _, _, err := runUser(t, "", "del", "--file", path, "--name", "alice"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("del of a missing user: %v, want ErrUnknownUser", err)
	}
	f, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify("bob", "other"); err != nil {
		t.Errorf("bob after --update: %v", err)
	}
	if err := f.Verify("alice", "alice-pw"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("alice after del: %v", err)
	}
}

func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.htpasswd")
	tests := []struct {
		name      string
		stdin     string
		args      []string
		wantUsage bool
		wantIs    error
		wantIn    string
	}{
		{name: "no command", wantUsage: true, wantIn: "no command"},
		{name: "unknown command", args: []string{"passwd"}, wantUsage: true, wantIn: `"passwd"`},
		{name: "add without flags", args: []string{"add"}, wantUsage: true, wantIn: "--file is required; --name is required; --password-stdin is required"},
		{name: "add bad name", stdin: "pw\n", args: []string{"add", "--file", path, "--name", "a b", "--password-stdin"}, wantUsage: true, wantIs: ErrInvalidName},
		{name: "add bad cost", stdin: "pw\n", args: []string{"add", "--file", path, "--name", "a", "--password-stdin", "--cost", "40"}, wantUsage: true, wantIs: ErrInvalidCost},
		{name: "add empty password", stdin: "\nsecond\n", args: []string{"add", "--file", path, "--name", "a", "--password-stdin", "--cost", "4"}, wantIs: ErrInvalidPassword, wantIn: "empty password"},
		{name: "add no stdin", stdin: "", args: []string{"add", "--file", path, "--name", "a", "--password-stdin", "--cost", "4"}, wantIs: ErrInvalidPassword},
		{name: "add password too long", stdin: strings.Repeat("x", 73) + "\n", args: []string{"add", "--file", path, "--name", "a", "--password-stdin", "--cost", "4"}, wantIs: ErrInvalidPassword},
		{name: "del missing file", args: []string{"del", "--file", path, "--name", "a"}, wantIs: fs.ErrNotExist},
		{name: "list missing file flag", args: []string{"list"}, wantUsage: true, wantIn: "--file is required"},
		{name: "stray argument", args: []string{"list", "--file", path, "x"}, wantUsage: true, wantIn: `"x"`},
		{name: "unknown flag", args: []string{"list", "--path", path}, wantUsage: true, wantIn: "-path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := runUser(t, tt.stdin, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrUsage); got != tt.wantUsage {
				t.Errorf("errors.Is(err, ErrUsage) = %v, want %v (err: %v)", got, tt.wantUsage, err)
			}
			if tt.wantUsage && !strings.Contains(stderr, "usage:") {
				t.Errorf("no usage on stderr: %q", stderr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) && !strings.Contains(err.Error(), tt.wantIs.Error()) {
				t.Errorf("error %v does not match %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q does not contain %q", err, tt.wantIn)
			}
		})
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed add created the file: %v", err)
	}
}

func TestCLIHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"add", "-h"}} {
		out, _, err := runUser(t, "", args...)
		if err != nil || !strings.Contains(out, "usage: user") {
			t.Errorf("%v: %v, output %q", args, err, out)
		}
	}
}

func TestCLICancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	path := filepath.Join(t.TempDir(), "u")
	err := Run(ctx, []string{"add", "--file", path, "--name", "a", "--password-stdin"}, strings.NewReader("pw\n"), &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
}
