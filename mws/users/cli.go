package users

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Usage is the help text of the "user" command.
const Usage = `usage: user <command> [flags]

Commands:
  add   add a user (or, with --update, change their password)
        user add --file FILE --name NAME --password-stdin [--cost 10] [--update]
  del   delete a user
        user del --file FILE --name NAME
  list  list the users of a file
        user list --file FILE

add reads the password from the first line of standard input and creates
FILE (mode 0600) if it does not exist, e.g.
  printf '%s\n' "$PASSWORD" | user add --file users.htpasswd --name alice --password-stdin
The file is compatible with Apache's htpasswd -B. A running MWS picks up
changes within a second.

Run "user <command> -h" for the flags of one command.
`

// Run runs the "user" command line. args are the arguments after "user"
// (args[0] is the subcommand); stdin supplies the password of "add".
// Results go to stdout, usage text for bad invocations to stderr; the error
// is returned, never printed, and errors of the command line itself match
// ErrUsage. Asking for help ("help", -h) prints the usage to stdout and
// returns nil.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(args) == 0 {
		io.WriteString(stderr, Usage)
		return fmt.Errorf("%w: user: no command given", ErrUsage)
	}
	switch args[0] {
	case "add":
		return runAdd(ctx, args[1:], stdin, stdout, stderr)
	case "del":
		return runDel(args[1:], stdout, stderr)
	case "list":
		return runList(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		io.WriteString(stdout, Usage)
		return nil
	default:
		io.WriteString(stderr, Usage)
		return fmt.Errorf("%w: user: unknown command %q", ErrUsage, args[0])
	}
}

func runAdd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	c := newCommand("user add", "user add --file FILE --name NAME --password-stdin [--cost 10] [--update]", stdout, stderr)
	file := c.fs.String("file", "", "user `file` to change; created if missing (required)")
	name := c.fs.String("name", "", "user `name`: 1-64 of [A-Za-z0-9._@-] (required)")
	fromStdin := c.fs.Bool("password-stdin", false, "read the password from the first line of standard input (required)")
	cost := c.fs.Int("cost", DefaultCost, fmt.Sprintf("bcrypt cost, %d-%d; each step doubles the time of a login", MinCost, MaxCost))
	update := c.fs.Bool("update", false, "change the password of an existing user")
	if help, err := c.parse(args); help || err != nil {
		return err
	}
	var problems []string
	if *file == "" {
		problems = append(problems, "--file is required")
	}
	if *name == "" {
		problems = append(problems, "--name is required")
	} else if err := checkName(*name); err != nil {
		problems = append(problems, err.Error())
	}
	if !*fromStdin {
		problems = append(problems, "--password-stdin is required: interactive prompts are not supported, pipe the password in")
	}
	if err := checkCost(*cost); err != nil {
		problems = append(problems, "--cost: "+err.Error())
	}
	if err := c.fail(problems); err != nil {
		return err
	}

	password, err := readPassword(stdin)
	if err != nil {
		return fmt.Errorf("user add: %w", err)
	}
	f, err := Load(*file)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = &File{}, nil
	}
	if err != nil {
		return err
	}
	exists := f.has(*name)
	if exists && !*update {
		return fmt.Errorf("user add: %w: %q is in %s; use --update to change the password", ErrUserExists, *name, *file)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Set(*name, password, *cost); err != nil {
		return err
	}
	if err := f.Save(*file); err != nil {
		return err
	}
	if exists {
		fmt.Fprintf(stdout, "changed the password of %s in %s\n", *name, *file)
	} else {
		fmt.Fprintf(stdout, "added %s to %s\n", *name, *file)
	}
	return nil
}

// readPassword reads the first line of r, without its line ending. It reads
// no more than a maximal password and a CRLF, so a huge stdin is refused
// without being read.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxPasswordLen+2)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", fmt.Errorf("%w: empty password on standard input", ErrInvalidPassword)
	}
	if err := checkPassword(line); err != nil {
		return "", err
	}
	return line, nil
}

func runDel(args []string, stdout, stderr io.Writer) error {
	c := newCommand("user del", "user del --file FILE --name NAME", stdout, stderr)
	file := c.fs.String("file", "", "user `file` to change (required)")
	name := c.fs.String("name", "", "user `name` to delete (required)")
	if help, err := c.parse(args); help || err != nil {
		return err
	}
	var problems []string
	if *file == "" {
		problems = append(problems, "--file is required")
	}
	if *name == "" {
		problems = append(problems, "--name is required")
	}
	if err := c.fail(problems); err != nil {
		return err
	}
	f, err := Load(*file)
	if err != nil {
		return err
	}
	if err := f.Delete(*name); err != nil {
		return err
	}
	if err := f.Save(*file); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted %s from %s\n", *name, *file)
	return nil
}

func runList(args []string, stdout, stderr io.Writer) error {
	c := newCommand("user list", "user list --file FILE", stdout, stderr)
	file := c.fs.String("file", "", "user `file` to read (required)")
	if help, err := c.parse(args); help || err != nil {
		return err
	}
	if *file == "" {
		return c.fail([]string{"--file is required"})
	}
	f, err := Load(*file)
	if err != nil {
		return err
	}
	for _, u := range f.Users() {
		fmt.Fprintln(stdout, u)
	}
	return nil
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
