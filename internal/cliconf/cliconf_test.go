package cliconf

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func newFS() (*flag.FlagSet, *string, *int, *time.Duration, *List, *string) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	listen := fs.String("listen", "def", "")
	n := fs.Int("max-chunk", 1, "")
	d := fs.Duration("timeout", time.Second, "")
	var l List
	fs.Var(&l, "backend", "")
	cfg := fs.String("config", "", "")
	return fs, listen, n, d, &l, cfg
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.json")
	if err := os.WriteFile(file, []byte(`{"listen":"file","max-chunk":4194304,"timeout":"3s","backend":["a=1:1","b=2:2"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, listen, n, d, l, _ := newFS()
	if err := Parse(fs, []string{"--config", file, "--listen", "flag"}, "X", "config"); err != nil {
		t.Fatal(err)
	}
	if *n != 4194304 {
		t.Fatalf("a large JSON number: got %d", *n)
	}
	t.Setenv("X_MAX_CHUNK", "9")
	fs, listen, n, d, l, _ = newFS()
	if err := Parse(fs, []string{"--config", file, "--listen", "flag"}, "X", "config"); err != nil {
		t.Fatal(err)
	}
	if *listen != "flag" || *n != 9 || *d != 3*time.Second || !reflect.DeepEqual([]string(*l), []string{"a=1:1", "b=2:2"}) {
		t.Fatalf("got listen=%q n=%d d=%v l=%v", *listen, *n, *d, *l)
	}
}

func TestEnvList(t *testing.T) {
	t.Setenv("X_BACKEND", "a=1:1, b=2:2")
	fs, _, _, _, l, _ := newFS()
	if err := Parse(fs, nil, "X", "config"); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual([]string(*l), []string{"a=1:1", "b=2:2"}) {
		t.Fatalf("got %v", *l)
	}
}

func TestEveryProblemReported(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.json")
	if err := os.WriteFile(file, []byte(`{"nope":1,"max-chunk":"x","timeout":{"a":1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("X_LISTEN", "ok")
	fs, _, _, _, _, _ := newFS()
	err := Parse(fs, []string{"--config", file}, "X", "config")
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{`unknown key "nope"`, `key "max-chunk"`, `key "timeout"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
