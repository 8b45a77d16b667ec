package mws

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/imashproject/imash/internal/cliconf"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// opUsage is the help text of "imash-mws op".
const opUsage = `usage: imash-mws op <command> [flags]

Call the Operator API of one MWS (the address its devices use) with an
operator certificate of the cluster CA ("imash-mws ca issue --role operator
--name NAME").

Commands:
  members  list the cluster as that MWS sees it: name, address, state,
           sessions/max and draining of every MWS, the one asked first
           imash-mws op members --mws 10.0.0.5:7800 --cert op.pem \
               --key op-key.pem --ca ca.pem [--json]
  move     move one session from that MWS to another (MASH; --to NAME, or
           the least loaded peer) and print the phase timings; the device
           follows by itself
           imash-mws op move --session ID [--to NAME] --mws ... --cert ...
  drain    move every session of that MWS to its peers, printing progress;
           with --exit the MWS then leaves the cluster and stops
           imash-mws op drain [--exit] [--timeout 5m] --mws ... --cert ...
  help     show this text; "imash-mws op help <command>" shows its flags

Every flag can also be set as an environment variable (IMASH_OP_ plus the
flag name in upper case with - as _, e.g. IMASH_OP_MWS=10.0.0.5:7800) or in
a JSON file given with --config whose keys are the flag names. Flags win
over the environment, which wins over the file.

Exit status: 0 done; 1 the MWS refused or the call failed (the error names
the gRPC code and imash reason, e.g. FAILED_PRECONDITION
HANDOFF_IN_PROGRESS), or a drain left sessions behind; 2 a bad command line
or configuration.
`

// opCommand is one "imash-mws op" command.
type opCommand struct {
	name     string
	synopsis string
	about    string
	timeout  time.Duration // default --timeout
	run      func(ctx context.Context, c *opClient, a *opArgs, stdout io.Writer) error
}

// opArgs are the settings of an op command; each command declares the
// flags it uses.
type opArgs struct {
	mws, cert, key, ca string
	timeout            time.Duration
	json               bool
	session, to        string // move
	exit               bool   // drain
}

var opCommands = []opCommand{
	{
		name:     "members",
		synopsis: "imash-mws op members --mws HOST:PORT --cert op.pem --key op-key.pem --ca ca.pem [--json]",
		about: `
List the cluster as the MWS at --mws sees it: every MWS's name, gRPC
address, state (alive, or gone: left, failed or not answering gossip),
sessions and --max-sessions, and whether it is draining (it takes no
sessions from peers). The MWS asked comes first.
`,
		timeout: 30 * time.Second,
		run:     runOpMembers,
	},
	{
		name:     "move",
		synopsis: "imash-mws op move --session ID [--to NAME] --mws HOST:PORT --cert op.pem --key op-key.pem --ca ca.pem [--json]",
		about: `
Move one session of the MWS at --mws to the MWS named --to, or to the least
loaded peer (MASH). Its legacy streams stay open at the mux and its device
follows by itself on its next call. Prints where the session went and the
move's phases: prepare (the target's answer and skeleton), handover (the
mux hands the streams over), ship (the session state), total.
`,
		timeout: time.Minute,
		run:     runOpMove,
	},
	{
		name:     "drain",
		synopsis: "imash-mws op drain [--exit] [--timeout 5m] --mws HOST:PORT --cert op.pem --key op-key.pem --ca ca.pem [--json]",
		about: `
Drain the MWS at --mws: it stops taking sessions from peers and moves every
session to the least loaded peer, retrying those that cannot move yet;
progress is printed as it comes. Once all are moved it waits up to its
--drain-grace for devices to follow. With --exit it then leaves the cluster
and stops, as after SIGTERM. The exit status is 1 if sessions are left when
--timeout ends; the MWS then keeps them and takes sessions again.
`,
		timeout: 5 * time.Minute,
		run:     runOpDrain,
	},
}

func findOpCommand(name string) (opCommand, bool) {
	i := slices.IndexFunc(opCommands, func(c opCommand) bool { return c.name == name })
	if i < 0 {
		return opCommand{}, false
	}
	return opCommands[i], true
}

// runOp is "imash-mws op".
func runOp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		io.WriteString(stderr, opUsage)
		return fmt.Errorf("%w: op: no command given", ErrUsage)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			c, ok := findOpCommand(args[1])
			if !ok {
				io.WriteString(stderr, opUsage)
				return fmt.Errorf("%w: op help: unknown command %q", ErrUsage, args[1])
			}
			c.usage(stdout)
			return nil
		}
		io.WriteString(stdout, opUsage)
		return nil
	}
	c, ok := findOpCommand(args[0])
	if !ok {
		io.WriteString(stderr, opUsage)
		return fmt.Errorf("%w: op: unknown command %q", ErrUsage, args[0])
	}
	return c.exec(ctx, args[1:], stdout, stderr)
}

// flagSet declares c's flags, writing into a.
func (c opCommand) flagSet(a *opArgs) *flag.FlagSet {
	fs := flag.NewFlagSet("imash-mws op "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	switch c.name {
	case "move":
		fs.StringVar(&a.session, "session", "", "`id` of the session to move (required)")
		fs.StringVar(&a.to, "to", "", "`name` of the MWS to move it to (default: the least loaded peer)")
	case "drain":
		fs.BoolVar(&a.exit, "exit", false, "once drained, the MWS leaves the cluster and stops")
	}
	fs.StringVar(&a.mws, "mws", "", "gRPC `address` (host:port) of the MWS to ask, as devices reach it (required)")
	fs.StringVar(&a.cert, "cert", "", "operator certificate (PEM, role operator; issue one with \"imash-mws ca issue --role operator\") (required)")
	fs.StringVar(&a.key, "key", "", "the certificate's private key (PEM) (required)")
	fs.StringVar(&a.ca, "ca", "", "the cluster CA certificate (PEM) (required)")
	fs.DurationVar(&a.timeout, "timeout", c.timeout, "give up after this long")
	fs.BoolVar(&a.json, "json", false, "print JSON instead of text")
	fs.String("config", "", "JSON config `file` whose keys are these flag names")
	return fs
}

func (c opCommand) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n", c.synopsis)
	fmt.Fprint(w, c.about)
	fmt.Fprintln(w, "\nFlags (also IMASH_OP_<FLAG> environment variables and --config JSON keys):")
	fs := c.flagSet(&opArgs{})
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// exec parses args, checks the settings, dials the MWS and runs c.
func (c opCommand) exec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// The command line alone first: after a syntax error nothing else can
	// be trusted. Problems of the environment, the config file and the
	// values are then reported together.
	probe := c.flagSet(&opArgs{})
	if err := probe.Parse(args); err != nil || probe.NArg() > 0 {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(stdout)
			return nil
		}
		if err == nil {
			err = fmt.Errorf("unexpected argument %q", probe.Arg(0))
		}
		c.usage(stderr)
		return fmt.Errorf("%w: op %s: %v", ErrUsage, c.name, err)
	}
	a := &opArgs{}
	fs := c.flagSet(a)
	var problems []string
	if err := cliconf.Parse(fs, args, "IMASH_OP", "config"); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	if a.mws == "" {
		problems = append(problems, "--mws is required (the MWS's gRPC address, host:port)")
	} else if err := checkDialAddr(a.mws); err != nil {
		problems = append(problems, fmt.Sprintf("--mws %q: %v", a.mws, err))
	}
	if c.name == "move" && a.session == "" {
		problems = append(problems, "--session is required")
	}
	if a.timeout <= 0 {
		problems = append(problems, fmt.Sprintf("--timeout %v: want > 0", a.timeout))
	}
	tlsConf, p := loadOperatorCert(a)
	problems = append(problems, p...)
	if len(problems) > 0 {
		c.usage(stderr)
		return fmt.Errorf("%w: op %s: %s", ErrUsage, c.name, strings.Join(problems, "; "))
	}
	cc, err := grpc.NewClient(a.mws, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return fmt.Errorf("op %s: --mws %s: %w", c.name, a.mws, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	oc := &opClient{api: mwsv1.NewOperatorClient(cc), cmd: "op " + c.name, addr: a.mws, timeout: a.timeout}
	return c.run(ctx, oc, a, stdout)
}

// loadOperatorCert loads the operator's key pair and returns the TLS
// config towards MWSs, or every problem. A certificate of another role is
// refused here: the MWS would refuse it anyway.
func loadOperatorCert(a *opArgs) (*tls.Config, []string) {
	var problems []string
	for _, f := range []struct{ flag, v string }{{"--cert", a.cert}, {"--key", a.key}, {"--ca", a.ca}} {
		if f.v == "" {
			problems = append(problems, f.flag+" is required")
		}
	}
	if a.cert == "" {
		problems[0] += " (an operator certificate: issue one with \"imash-mws ca issue --role operator\")"
	}
	if len(problems) > 0 {
		return nil, problems
	}
	cert, pool, err := pki.LoadKeyPair(a.cert, a.key, a.ca)
	if err != nil {
		return nil, []string{err.Error()}
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	switch {
	case err != nil:
		return nil, []string{"--cert " + a.cert + ": " + err.Error()}
	case id.Role != pki.RoleOperator:
		return nil, []string{fmt.Sprintf("--cert %s: certificate is for %s, want role operator (the MWS serves its Operator API to operators only; issue one with \"imash-mws ca issue --role operator\")", a.cert, id)}
	}
	return pki.ClientTLS(cert, pool, pki.RoleMWS), nil
}

// opClient is the Operator API of one MWS, for one command.
type opClient struct {
	api     mwsv1.OperatorClient
	cmd     string // "op move"
	addr    string
	timeout time.Duration
}

// fail turns a call that failed into the command's error; ctx is the
// call's context, which tells a timeout or an interrupt of this command
// from a failure the MWS reports.
func (c *opClient) fail(ctx context.Context, err error) *opCallError {
	ctxErr := ctx.Err()
	// gRPC may report the deadline a moment before the context says so.
	if d, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(d) &&
		status.Code(err) == codes.DeadlineExceeded && rpcerr.Reason(err) == "" {
		ctxErr = context.DeadlineExceeded
	}
	return &opCallError{cmd: c.cmd, addr: c.addr, timeout: c.timeout, ctxErr: ctxErr, err: err}
}

// opCallError is a call of an op command that failed: it reads
// "op move: FAILED_PRECONDITION HANDOFF_IN_PROGRESS: session s1 is being
// handed off", with the gRPC code, the imash reason if any, and the
// message.
type opCallError struct {
	cmd     string
	about   string // what the failure means, if anything; before the code
	addr    string
	timeout time.Duration
	ctxErr  error // the call's context had ended
	err     error
}

func (e *opCallError) Error() string {
	s := e.cmd + ": "
	if e.about != "" {
		s += e.about + ": "
	}
	return s + e.describe()
}

func (e *opCallError) Unwrap() error { return e.err }

// describe is the failure as an operator reads it: code, reason and
// message. Failures without a reason, which come from the connection or
// from this command rather than from the MWS, say what happened.
func (e *opCallError) describe() string {
	switch {
	case errors.Is(e.ctxErr, context.DeadlineExceeded):
		return fmt.Sprintf("%s: gave up after --timeout %v", codeName(codes.DeadlineExceeded), e.timeout)
	case e.ctxErr != nil:
		return codeName(codes.Canceled) + ": interrupted"
	}
	st, ok := status.FromError(e.err)
	if !ok {
		return e.err.Error()
	}
	head := codeName(st.Code())
	reason := rpcerr.Reason(e.err)
	if reason != "" {
		head += " " + reason
	}
	msg := st.Message()
	if reason == "" && st.Code() == codes.Unavailable {
		msg = "cannot reach the MWS at " + e.addr + ": " + msg
	}
	return head + ": " + msg
}

// codeNames are the canonical names of the gRPC status codes.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}

// codeName is a gRPC status code's canonical name, e.g.
// FAILED_PRECONDITION.
func codeName(c codes.Code) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}

// opMember is one MWS in the JSON output of "op members".
type opMember struct {
	Name        string `json:"name"`
	Address     string `json:"address"`
	State       string `json:"state"`
	Sessions    int32  `json:"sessions"`
	MaxSessions int32  `json:"max_sessions"`
	Draining    bool   `json:"draining"`
}

// members asks the MWS for the cluster: the MWS asked first, then its
// peers by name.
func (c *opClient) members(ctx context.Context) ([]opMember, error) {
	res, err := c.api.Members(ctx, &mwsv1.MembersRequest{})
	if err != nil {
		return nil, c.fail(ctx, err)
	}
	out := make([]opMember, 0, len(res.GetMembers()))
	for _, m := range res.GetMembers() {
		out = append(out, opMember{Name: m.GetName(), Address: m.GetGrpcAddr(), State: m.GetState(),
			Sessions: m.GetSessions(), MaxSessions: m.GetMaxSessions(), Draining: m.GetDraining()})
	}
	if len(out) > 1 {
		slices.SortStableFunc(out[1:], func(a, b opMember) int { return strings.Compare(a.Name, b.Name) })
	}
	return out, nil
}

func runOpMembers(ctx context.Context, c *opClient, a *opArgs, stdout io.Writer) error {
	ms, err := c.members(ctx)
	if err != nil {
		return err
	}
	if a.json {
		return writeJSON(stdout, struct {
			MWS     string     `json:"mws"`
			Members []opMember `json:"members"`
		}{a.mws, ms})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tSESSIONS\tDRAINING")
	for _, m := range ms {
		addr := m.Address
		if addr == "" {
			addr = "-"
		}
		draining := "no"
		if m.Draining {
			draining = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", m.Name, addr, m.State, m.Sessions, m.MaxSessions, draining)
	}
	return tw.Flush()
}

func runOpMove(ctx context.Context, c *opClient, a *opArgs, stdout io.Writer) error {
	res, err := c.api.Move(ctx, &mwsv1.MoveRequest{SessionId: a.session, To: a.to})
	if err != nil {
		return c.fail(ctx, err)
	}
	t := res.GetTimings()
	if a.json {
		return writeJSON(stdout, struct {
			Session    string `json:"session"`
			To         string `json:"to"`
			PrepareUs  int64  `json:"prepare_us"`
			HandoverUs int64  `json:"handover_us"`
			ShipUs     int64  `json:"ship_us"`
			TotalUs    int64  `json:"total_us"`
			StateBytes int64  `json:"state_bytes"`
		}{a.session, res.GetTo(), t.GetPrepareUs(), t.GetHandoverUs(), t.GetShipUs(), t.GetTotalUs(), t.GetStateBytes()})
	}
	fmt.Fprintf(stdout, "moved session %s to %s in %v\n", a.session, res.GetTo(), micros(t.GetTotalUs()))
	for _, row := range []struct{ name, v string }{
		{"prepare", micros(t.GetPrepareUs()).String()},
		{"handover", micros(t.GetHandoverUs()).String()},
		{"ship", micros(t.GetShipUs()).String()},
		{"state", byteSize(t.GetStateBytes())},
	} {
		if _, err := fmt.Fprintf(stdout, "  %-9s %10s\n", row.name, row.v); err != nil {
			return err
		}
	}
	return nil
}

// opDrainLine is one line of "op drain --json".
type opDrainLine struct {
	Moved     int32  `json:"moved"`
	Left      int32  `json:"left"`
	Failed    int32  `json:"failed"`
	LastError string `json:"last_error,omitempty"`
	Done      bool   `json:"done"`
}

func runOpDrain(ctx context.Context, c *opClient, a *opArgs, stdout io.Writer) error {
	ms, err := c.members(ctx)
	if err != nil {
		return err
	}
	name := a.mws
	if len(ms) > 0 {
		name = ms[0].Name
		if !a.json {
			fmt.Fprintf(stdout, "draining %s (%s): %s\n", name, a.mws, plural(int(ms[0].Sessions), "session"))
		}
	}
	start := time.Now()
	st, err := c.api.Drain(ctx, &mwsv1.DrainRequest{Exit: a.exit})
	if err != nil {
		return c.fail(ctx, err)
	}
	var last opDrainLine
	printed := false
	for {
		p, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the MWS ended the drain without finishing it")
			}
			if !a.json {
				fmt.Fprintf(stdout, "drain of %s did not finish: %s\n", name, drainCounts(last))
			}
			e := c.fail(ctx, err)
			e.about = fmt.Sprintf("%s still holds %s and takes sessions again", name, plural(int(last.Left), "session"))
			return e
		}
		// The final message carries what is left; the counts are those of
		// the last progress report.
		line := opDrainLine{Moved: last.Moved, Failed: last.Failed, LastError: last.LastError, Left: p.GetRemaining(), Done: p.GetDone()}
		if !p.GetDone() {
			line = opDrainLine{Moved: p.GetMoved(), Left: p.GetRemaining(), Failed: p.GetFailed(), LastError: p.GetLastError()}
		}
		switch {
		case a.json:
			if err := writeJSONLine(stdout, line); err != nil {
				return err
			}
		case line.Done:
		case !printed || line.Moved != last.Moved || line.Left != last.Left || line.LastError != last.LastError:
			// A session that cannot move is retried several times a
			// second: a repeated failure is printed once.
			fmt.Fprintln(stdout, drainCounts(line))
			printed = true
		}
		last = line
		if line.Done {
			break
		}
	}
	if last.Left > 0 {
		if !a.json {
			fmt.Fprintf(stdout, "drain of %s did not finish: %s\n", name, drainCounts(last))
		}
		return fmt.Errorf("%s: %s still holds %s after the drain", c.cmd, name, plural(int(last.Left), "session"))
	}
	if !a.json {
		fmt.Fprintf(stdout, "drained %s in %v: %s moved, 0 left", name, time.Since(start).Round(time.Millisecond), plural(int(last.Moved), "session"))
		if a.exit {
			fmt.Fprintf(stdout, "; %s is stopping", name)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

// drainCounts is a drain's progress as a line of text.
func drainCounts(l opDrainLine) string {
	s := fmt.Sprintf("moved %d, %d left", l.Moved, l.Left)
	if l.Failed > 0 {
		s += fmt.Sprintf(", %s (last: %s)", plural(int(l.Failed), "failed attempt"), readableRPCError(l.LastError))
	}
	return s
}

// rpcErrorText matches a gRPC error as text ("rpc error: code = Unavailable
// desc = ..."), as a drain reports its last failure.
var rpcErrorText = regexp.MustCompile(`^rpc error: code = (\w+) desc = (.*)$`)

// readableRPCError rewrites a gRPC error's text in the form the op
// commands print errors: "UNAVAILABLE: no live peer takes sessions".
func readableRPCError(s string) string {
	m := rpcErrorText.FindStringSubmatch(s)
	if m == nil {
		return s
	}
	for c, name := range codeNames {
		if c.String() == m[1] {
			return name + ": " + m[2]
		}
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// micros is a duration in microseconds, rounded for reading.
func micros(us int64) time.Duration {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d
}

// byteSize is n bytes for reading: 512 B, 4.0 KiB, 2.5 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeJSONLine(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
