package testbed

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// Limits and defaults of the demo's workload. The object sizes follow the
// paper's minibrowser workload (0.5 KB – 1.25 MB).
const (
	// DefaultImages is how many distinct images the demo serves unless
	// --images says otherwise: fewer than the paper's 200 so the demo
	// (image generation included) finishes in a few seconds.
	DefaultImages = 60
	// MaxImages is the paper's workload size, the most --images accepts.
	MaxImages = 200
	// MinObjectBytes and MaxObjectBytes bound the generated image sizes.
	MinObjectBytes = 512
	MaxObjectBytes = 1280 << 10
	// DefaultStreamMiB is how many MiB the raw-stream phase pushes each
	// way, per path (imash and direct).
	DefaultStreamMiB = 16
	// DefaultHandoffs and MaxHandoffs bound the CASH phase.
	DefaultHandoffs = 40
	MaxHandoffs     = 10000
	// MaxStreamMiB bounds --stream-mib; the upload payload is held in
	// memory.
	MaxStreamMiB = 256
	// DefaultMeanDelay is the paper's mean inter-request delay, used when
	// --paced is given without --mean-delay.
	DefaultMeanDelay = 2 * time.Second
	// DefaultMWSs and MaxMWSs bound --mws, the cluster's MWS count; the
	// cluster phase needs at least two.
	DefaultMWSs = 3
	MaxMWSs     = 16
	// DefaultMASHMoves and MaxMASHMoves bound --mash-moves, the operator
	// moves of the cluster phase's MASH part.
	DefaultMASHMoves = 50
	MaxMASHMoves     = 10000
	// DefaultDrainSessions and MaxDrainSessions bound --drain-sessions,
	// the sessions on the MWS the cluster phase drains.
	DefaultDrainSessions = 200
	MaxDrainSessions     = 10000
)

// demoConfig is the parsed configuration of the demo command.
type demoConfig struct {
	// Images is the number of distinct images served (1..MaxImages).
	Images int
	// Seed drives image generation and the workload (request order,
	// repeats, which path of a pair goes first).
	Seed uint64
	// StreamMiB is how many MiB the raw-stream phase pushes each way per
	// path; 0 skips the phase.
	StreamMiB int
	// Handoffs is how many CASH handoffs the handoff phase makes; 0 skips
	// the phase.
	Handoffs int
	// JSONFile, when non-empty, receives the per-request records.
	JSONFile string
	// Paced inserts exponentially distributed delays of mean MeanDelay
	// between requests (a Poisson arrival process), as in the paper;
	// otherwise requests follow each other as fast as possible.
	Paced     bool
	MeanDelay time.Duration
	// Links puts each device of the links phase behind its own emulated
	// link (its testbed preset); otherwise the phase runs on loopback.
	Links bool
	// MWSs is how many MWSs the cluster runs (1..MaxMWSs); the cluster
	// phase runs with two or more.
	MWSs int
	// MASHMoves is how many times the cluster phase moves a session
	// between MWSs (MASH); 0 skips that part.
	MASHMoves int
	// DrainSessions is how many sessions the cluster phase opens on the
	// MWS it drains; 0 skips the drain.
	DrainSessions int
	// Verbose sends the cluster's debug logs to stderr (otherwise only
	// warnings and errors).
	Verbose bool
}

// newDefaultDemoConfig returns the configuration of a bare "demo".
func newDefaultDemoConfig() demoConfig {
	return demoConfig{
		Images:        DefaultImages,
		Seed:          1,
		StreamMiB:     DefaultStreamMiB,
		Handoffs:      DefaultHandoffs,
		MeanDelay:     DefaultMeanDelay,
		Links:         true,
		MWSs:          DefaultMWSs,
		MASHMoves:     DefaultMASHMoves,
		DrainSessions: DefaultDrainSessions,
	}
}

// validate reports every problem at once, wrapping ErrUsage.
func (c demoConfig) validate() error {
	var errs []error
	if c.Images < 1 || c.Images > MaxImages {
		errs = append(errs, fmt.Errorf("--images %d: want 1..%d", c.Images, MaxImages))
	}
	if c.StreamMiB < 0 || c.StreamMiB > MaxStreamMiB {
		errs = append(errs, fmt.Errorf("--stream-mib %d: want 0..%d", c.StreamMiB, MaxStreamMiB))
	}
	if c.Handoffs < 0 || c.Handoffs > MaxHandoffs {
		errs = append(errs, fmt.Errorf("--handoffs %d: want 0..%d", c.Handoffs, MaxHandoffs))
	}
	if c.MWSs < 1 || c.MWSs > MaxMWSs {
		errs = append(errs, fmt.Errorf("--mws %d: want 1..%d", c.MWSs, MaxMWSs))
	}
	if c.MASHMoves < 0 || c.MASHMoves > MaxMASHMoves {
		errs = append(errs, fmt.Errorf("--mash-moves %d: want 0..%d", c.MASHMoves, MaxMASHMoves))
	}
	if c.DrainSessions < 0 || c.DrainSessions > MaxDrainSessions {
		errs = append(errs, fmt.Errorf("--drain-sessions %d: want 0..%d", c.DrainSessions, MaxDrainSessions))
	}
	if c.Paced && c.MeanDelay <= 0 {
		errs = append(errs, fmt.Errorf("--mean-delay %v: want > 0 with --paced", c.MeanDelay))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: demo: %w", ErrUsage, errors.Join(errs...))
}

// parseDemoFlags parses the demo command's arguments. Flag errors (unknown
// flag, bad value) and invalid values wrap ErrUsage; -h gives flag.ErrHelp
// after printing the flags to stdout.
func parseDemoFlags(args []string, stdout, stderr io.Writer) (demoConfig, error) {
	cfg := newDefaultDemoConfig()
	fs := flag.NewFlagSet("imash-testbed demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Images, "images", cfg.Images, fmt.Sprintf("distinct images to serve, 1..%d (the paper's workload has %d)", MaxImages, MaxImages))
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the images and of the workload; equal seeds give equal runs")
	fs.IntVar(&cfg.StreamMiB, "stream-mib", cfg.StreamMiB, "MiB pushed each way through the raw stream, per path (0 skips the stream phase)")
	fs.IntVar(&cfg.Handoffs, "handoffs", cfg.Handoffs, "CASH handoffs of the session between the two devices (0 skips the handoff phase)")
	fs.StringVar(&cfg.JSONFile, "json", "", "write per-request records as JSON to this `file`")
	fs.BoolVar(&cfg.Paced, "paced", false, "wait a Poisson inter-request delay between requests (default: as fast as possible)")
	fs.DurationVar(&cfg.MeanDelay, "mean-delay", cfg.MeanDelay, "mean inter-request delay with --paced")
	fs.Var(onOff{&cfg.Links}, "links", "whether the links phase's devices (workstation, desktop, laptop, pda) reach the MWS through emulated links of their testbed presets: `on|off` (off: on loopback)")
	fs.IntVar(&cfg.MWSs, "mws", cfg.MWSs, fmt.Sprintf("MWSs in the cluster, 1..%d (devices log in at the first; the cluster phase needs 2 or more)", MaxMWSs))
	fs.IntVar(&cfg.MASHMoves, "mash-moves", cfg.MASHMoves, "operator moves (MASH) of a session among the MWSs in the cluster phase (0 skips them)")
	fs.IntVar(&cfg.DrainSessions, "drain-sessions", cfg.DrainSessions, "sessions on the MWS the cluster phase drains (0 skips the drain)")
	fs.BoolVar(&cfg.Verbose, "v", false, "log the cluster's debug messages to stderr")
	// The flag package reports a bad flag itself (to stderr); the help
	// text follows on stderr, or on stdout when it was asked for.
	fs.Usage = func() {}
	printUsage := func(w io.Writer) {
		fs.SetOutput(w)
		fmt.Fprint(w, demoUsage)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return cfg, err
	}
	if err != nil {
		printUsage(stderr)
		return cfg, fmt.Errorf("%w: demo: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		printUsage(stderr)
		return cfg, fmt.Errorf("%w: demo: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// onOff is a flag.Value for a switch written "on" or "off".
type onOff struct{ v *bool }

func (o onOff) String() string {
	if o.v != nil && *o.v {
		return "on"
	}
	return "off"
}

func (o onOff) Set(s string) error {
	switch s {
	case "on":
		*o.v = true
	case "off":
		*o.v = false
	default:
		return errors.New(`want "on" or "off"`)
	}
	return nil
}

const demoUsage = `usage: imash-testbed demo [flags]

Builds a whole imash testbed in this process — a legacy HTTP image server, a
source and a sink of raw TCP streams, a mux, --mws MWSs and two devices
(workstation, pda) logged in at the first MWS — runs a seeded workload through
imash and directly against the legacy servers, checks every byte, and prints
latency percentiles by object size. Then the paper's four testbed devices
(workstation, desktop, laptop, pda) log in with their profiles, each behind an
emulated link of its own (100 Mbit/s Ethernet, 56 kbit/s modem, 802.11b;
--links=off: loopback), and fetch the same image: the report shows the variant
each received and what the MWS measured of its link. Last, with two or more
MWSs, the cluster phase: a session moves among the MWSs (MASH) in the middle
of a raw-stream transfer, a session goes to a device served by another MWS
(FASH) beside a CASH of the same state, and one MWS is drained.

Flags:
`
