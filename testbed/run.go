// Package testbed is imash-testbed: it builds the paper's testbed on one
// machine — legacy servers, a mux, middleware servers and client devices —
// runs seeded workloads through imash and, side by side in the same run,
// directly against the legacy servers, and reports the results as tables
// and machine-readable records.
//
// The "demo" command does all of this in one process with a cluster of
// MWSs (three by default) and two devices, then puts the paper's four
// testbed devices, with their profiles, behind emulated links of their own
// (package netem) and shows the variant of an image each receives, and
// last moves sessions between the MWSs (MASH, FASH, drain); see Run and
// "imash-testbed help".
package testbed

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// Usage is the help text of imash-testbed.
const Usage = `usage: imash-testbed <command> [flags]

Commands:
  demo   build an in-process testbed (legacy HTTP and TCP servers, a mux,
         three MWSs, two devices), run a seeded image workload through imash
         and directly, verify every byte and print latency by object size;
         then show the image variants the four testbed devices get on their
         emulated links; last, move sessions between the MWSs (MASH, FASH,
         drain) ("imash-testbed demo -h" lists its flags)
  help   show this text
`

// ErrUsage marks errors of the invocation itself — no or unknown command,
// bad flag, invalid value — for which a main function exits with status 2.
var ErrUsage = errors.New("usage")

// Run is imash-testbed. args are the arguments after the program name.
// Results and help go to stdout, progress, logs and usage text for bad
// invocations to stderr; the error is returned, never printed. Run returns
// nil only if the command succeeded (for demo: every byte verified);
// cancelling ctx stops it, tears the testbed down and returns ctx's error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		io.WriteString(stderr, Usage)
		return fmt.Errorf("%w: no command given", ErrUsage)
	}
	switch args[0] {
	case "demo":
		cfg, err := parseDemoFlags(args[1:], stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		if err != nil {
			return err
		}
		return runDemo(ctx, cfg, stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && args[1] == "demo" {
			_, err := parseDemoFlags([]string{"-h"}, stdout, stderr)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		io.WriteString(stdout, Usage)
		return nil
	default:
		io.WriteString(stderr, Usage)
		return fmt.Errorf("%w: unknown command %q", ErrUsage, args[0])
	}
}
