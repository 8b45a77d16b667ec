package testbed

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantUsage bool     // the error wraps ErrUsage (nil error if false)
		errHas    []string // substrings of the error
		stdoutHas []string
		stderrHas []string
	}{
		{name: "no args", args: nil, wantUsage: true, errHas: []string{"no command"}, stderrHas: []string{"usage: imash-testbed", "demo"}},
		{name: "help", args: []string{"help"}, stdoutHas: []string{"usage: imash-testbed", "Commands:", "demo"}},
		{name: "--help", args: []string{"--help"}, stdoutHas: []string{"usage: imash-testbed"}},
		{name: "help demo", args: []string{"help", "demo"}, stdoutHas: []string{"usage: imash-testbed demo", "-images", "-seed", "-json", "-paced"}},
		{name: "demo -h", args: []string{"demo", "-h"}, stdoutHas: []string{"usage: imash-testbed demo", "-stream-mib"}},
		{name: "unknown command", args: []string{"bogus"}, wantUsage: true, errHas: []string{`unknown command "bogus"`}, stderrHas: []string{"usage: imash-testbed"}},
		{name: "unknown flag", args: []string{"demo", "--nope"}, wantUsage: true, errHas: []string{"flag provided but not defined: -nope"}, stderrHas: []string{"-images"}},
		{name: "bad flag value", args: []string{"demo", "--images", "many"}, wantUsage: true, errHas: []string{"invalid value", "-images"}},
		{name: "too few images", args: []string{"demo", "--images", "0"}, wantUsage: true, errHas: []string{"--images 0: want 1..200"}},
		{name: "every problem at once", args: []string{"demo", "--images", "201", "--stream-mib", "-1"}, wantUsage: true, errHas: []string{"--images 201", "--stream-mib -1"}},
		{name: "paced without delay", args: []string{"demo", "--paced", "--mean-delay", "0s"}, wantUsage: true, errHas: []string{"--mean-delay 0s"}},
		{name: "links flag listed", args: []string{"help", "demo"}, stdoutHas: []string{"-links on|off", "(default on)"}},
		{name: "bad links value", args: []string{"demo", "--links=maybe"}, wantUsage: true, errHas: []string{"-links", `want "on" or "off"`}},
		{name: "cluster flags listed", args: []string{"help", "demo"}, stdoutHas: []string{"-mws", "(default 3)", "-mash-moves", "(default 50)", "-drain-sessions", "(default 200)"}},
		{name: "bad cluster flags", args: []string{"demo", "--mws", "0", "--mash-moves", "-1", "--drain-sessions", "-2"}, wantUsage: true,
			errHas: []string{"--mws 0: want 1..16", "--mash-moves -1", "--drain-sessions -2"}},
		{name: "stray argument", args: []string{"demo", "extra"}, wantUsage: true, errHas: []string{`unexpected argument "extra"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(context.Background(), tt.args, &stdout, &stderr)
			if !tt.wantUsage {
				if err != nil {
					t.Fatalf("Run(%q) = %v, want nil", tt.args, err)
				}
			} else if !errors.Is(err, ErrUsage) {
				t.Fatalf("Run(%q) = %v, want a usage error", tt.args, err)
			}
			for _, s := range tt.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			for _, s := range tt.stdoutHas {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout does not contain %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tt.stderrHas {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr does not contain %q:\n%s", s, stderr.String())
				}
			}
		})
	}
}
