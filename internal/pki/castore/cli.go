package castore

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imashproject/imash/internal/pki"
)

// Usage is the help text of the "ca" command.
const Usage = `usage: ca <command> [flags]

Commands:
  init   create a new cluster CA in a directory
         ca init --dir DIR --trust-domain DOMAIN [--validity 87600h]
  issue  issue a certificate for an MWS, mux, device or operator
         ca issue --dir DIR --role mws|mux|device|operator --name NAME
                  [--dns a,b] [--ip 127.0.0.1] [--validity 8760h] [--force]
  list   list the current certificates of a store
         ca list --dir DIR

Run "ca <command> -h" for the flags of one command.
`

// Run runs the "ca" command line. args are the arguments after "ca"
// (args[0] is the subcommand). Results go to stdout, usage text for bad
// invocations to stderr; the error is returned, never printed, and errors
// of the command line itself match ErrUsage. Asking for help ("help", -h)
// prints the usage to stdout and returns nil.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, Usage)
		return fmt.Errorf("%w: ca: no command given", ErrUsage)
	}
	switch args[0] {
	case "init":
		return runInit(args[1:], stdout, stderr)
	case "issue":
		return runIssue(args[1:], stdout, stderr)
	case "list":
		return runList(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, Usage)
		return nil
	default:
		fmt.Fprint(stderr, Usage)
		return fmt.Errorf("%w: ca: unknown command %q", ErrUsage, args[0])
	}
}

func runInit(args []string, stdout, stderr io.Writer) error {
	c := newCommand("ca init", "ca init --dir DIR --trust-domain DOMAIN [--validity 87600h]", stdout, stderr)
	fs := c.fs
	dir := fs.String("dir", "", "store `directory` to create (required)")
	td := fs.String("trust-domain", "", "trust `domain` of the cluster, e.g. example.org (required)")
	validity := fs.Duration("validity", pki.DefaultCAValidity, "how long the CA certificate is valid")
	if help, err := c.parse(args); help || err != nil {
		return err
	}
	var problems []string
	if *dir == "" {
		problems = append(problems, "--dir is required")
	}
	if *td == "" {
		problems = append(problems, "--trust-domain is required")
	}
	if *validity <= 0 {
		problems = append(problems, "--validity must be positive")
	}
	if err := c.fail(problems); err != nil {
		return err
	}
	s, err := Init(*dir, *td, *validity)
	if err != nil {
		return err
	}
	ca := s.CA()
	fmt.Fprintf(stdout, "created CA for trust domain %s (valid until %s)\n", ca.TrustDomain, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "CA certificate: %s\n", filepath.Join(*dir, CACertFile))
	fmt.Fprintf(stdout, "CA key:         %s\n", filepath.Join(*dir, CAKeyFile))
	return nil
}

func runIssue(args []string, stdout, stderr io.Writer) error {
	c := newCommand("ca issue", "ca issue --dir DIR --role mws|mux|device|operator --name NAME [--dns a,b] [--ip 127.0.0.1] [--validity 8760h] [--force]", stdout, stderr)
	fs := c.fs
	dir := fs.String("dir", "", "store `directory` (required)")
	role := fs.String("role", "", "`role` of the holder: mws, mux, device or operator (required)")
	name := fs.String("name", "", "`name` of the holder, unique within its role (required)")
	var dns, ips listFlag
	fs.Var(&dns, "dns", "DNS `names` to add as SANs, comma-separated or repeated")
	fs.Var(&ips, "ip", "IP `addresses` to add as SANs, comma-separated or repeated")
	validity := fs.Duration("validity", pki.DefaultLeafValidity, "how long the certificate is valid (capped at the CA's expiry)")
	force := fs.Bool("force", false, "replace an existing certificate of the same role and name")
	if help, err := c.parse(args); help || err != nil {
		return err
	}
	var problems []string
	if *dir == "" {
		problems = append(problems, "--dir is required")
	}
	switch {
	case *role == "":
		problems = append(problems, "--role is required")
	case !pki.Role(*role).Valid():
		problems = append(problems, fmt.Sprintf("unknown role %q (want mws, mux, device or operator)", *role))
	}
	if *name == "" {
		problems = append(problems, "--name is required")
	}
	if *validity <= 0 {
		problems = append(problems, "--validity must be positive")
	}
	var addrs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			problems = append(problems, fmt.Sprintf("--ip %q is not an IP address", s))
			continue
		}
		addrs = append(addrs, ip)
	}
	if err := c.fail(problems); err != nil {
		return err
	}
	s, err := Open(*dir)
	if err != nil {
		return err
	}
	req := pki.IssueRequest{Role: pki.Role(*role), Name: *name, DNSNames: dns, IPAddresses: addrs, Validity: *validity}
	issue := s.Issue
	if *force {
		issue = s.Reissue
	}
	iss, paths, err := issue(req)
	if errors.Is(err, ErrExists) {
		return fmt.Errorf("%w; use --force to replace it", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "issued %s (serial %s, valid until %s)\n", iss.Identity, iss.Leaf.SerialNumber.Text(16), iss.Leaf.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "certificate: %s\n", paths.Cert)
	fmt.Fprintf(stdout, "key:         %s\n", paths.Key)
	fmt.Fprintf(stdout, "CA:          %s\n", paths.CA)
	return nil
}

func runList(args []string, stdout, stderr io.Writer) error {
	c := newCommand("ca list", "ca list --dir DIR", stdout, stderr)
	dir := c.fs.String("dir", "", "store `directory` (required)")
	if help, err := c.parse(args); help || err != nil {
		return err
	}
	if *dir == "" {
		return c.fail([]string{"--dir is required"})
	}
	s, err := Open(*dir)
	if err != nil {
		return err
	}
	entries, err := s.List()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tNAME\tSERIAL\tNOT-AFTER\tSANS")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Identity.Role, e.Identity.Name, e.Serial, e.NotAfter.UTC().Format(time.RFC3339), sans(e))
	}
	return tw.Flush()
}

// sans formats the DNS and IP SANs of e; the identity URI is not repeated.
func sans(e Entry) string {
	all := append([]string(nil), e.DNSNames...)
	for _, ip := range e.IPAddresses {
		all = append(all, ip.String())
	}
	if len(all) == 0 {
		return "-"
	}
	return strings.Join(all, ",")
}

// command is one subcommand's flags and usage.
type command struct {
	fs             *flag.FlagSet
	synopsis       string
	stdout, stderr io.Writer
}

func newCommand(name, synopsis string, stdout, stderr io.Writer) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// Silence the flag package: the caller prints the returned error once.
	fs.SetOutput(io.Discard)
	return &command{fs: fs, synopsis: synopsis, stdout: stdout, stderr: stderr}
}

func (c *command) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n", c.synopsis)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
}

// parse parses args. A help request prints the usage to stdout and reports
// help=true; bad flags are reported as by fail.
func (c *command) parse(args []string) (help bool, err error) {
	err = c.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.usage(c.stdout)
		return true, nil
	case err != nil:
		return false, c.fail([]string{err.Error()})
	case c.fs.NArg() > 0:
		return false, c.fail([]string{fmt.Sprintf("unexpected argument %q", c.fs.Arg(0))})
	}
	return false, nil
}

// fail reports every problem of one invocation at once, printing the usage
// to stderr and returning an error matching ErrUsage; it returns nil if
// there are no problems.
func (c *command) fail(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	c.usage(c.stderr)
	return fmt.Errorf("%w: %s: %s", ErrUsage, c.fs.Name(), strings.Join(problems, "; "))
}

// listFlag collects values given comma-separated, repeated, or both.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
