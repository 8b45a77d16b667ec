package mws

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/imashproject/imash/internal/cliconf"
	"github.com/imashproject/imash/internal/cliflag"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/pki/castore"
	"github.com/imashproject/imash/mws/users"
)

// Usage is the help text of imash-mws.
const Usage = `usage: imash-mws <command> [flags]

Commands:
  serve  run a middleware server until SIGINT or SIGTERM
         imash-mws serve --cert mws.pem --key mws-key.pem --ca ca.pem \
             --mux 127.0.0.1:7700 --users users.htpasswd [--http-backend images]
  ca     manage the cluster CA: init, issue, list ("imash-mws ca help")
  user   manage the user file: add, del, list ("imash-mws user help")
  help   show this text; "imash-mws help serve|ca|user" shows a command's help

Every serve flag can also be set as an environment variable (IMASH_MWS_ plus
the flag name in upper case with - as _, e.g. IMASH_MWS_CACHE_BYTES=1GiB;
repeatable flags as a comma-separated list) or in a JSON file given with
--config whose keys are the flag names. Flags win over the environment, which
wins over the file.
`

// ErrUsage marks errors of the invocation itself — unknown command, bad
// flag, invalid configuration — for which a main function exits with status
// 2. Usage errors of "ca" and "user" match it too.
var ErrUsage = errors.New("usage")

// DefaultListen is the address "imash-mws serve" listens on for devices
// unless told otherwise.
const DefaultListen = "127.0.0.1:7800"

// Run is imash-mws: it dispatches to the serve, ca and user commands. args
// are the arguments after the program name; stdin supplies the password of
// "user add". Results and help go to stdout, logs and usage text for bad
// invocations to stderr; the error is returned, never printed. "serve"
// returns nil after ctx ends and the server has shut down.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		io.WriteString(stderr, Usage)
		return fmt.Errorf("%w: no command given", ErrUsage)
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "ca":
		return asRunUsage(castore.Run(ctx, args[1:], stdout, stderr), castore.ErrUsage)
	case "user":
		return asRunUsage(users.Run(ctx, args[1:], stdin, stdout, stderr), users.ErrUsage)
	case "help", "-h", "-help", "--help":
		return runHelp(ctx, args[1:], stdin, stdout, stderr)
	default:
		io.WriteString(stderr, Usage)
		return fmt.Errorf("%w: unknown command %q", ErrUsage, args[0])
	}
}

func runHelp(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		io.WriteString(stdout, Usage)
		return nil
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, []string{"-h"}, stdout, stderr)
	case "ca", "user":
		return Run(ctx, []string{args[0], "help"}, stdin, stdout, stderr)
	}
	io.WriteString(stderr, Usage)
	return fmt.Errorf("%w: help: unknown command %q", ErrUsage, args[0])
}

// runUsageError makes a subcommand's usage error match ErrUsage as well.
type runUsageError struct{ err error }

func (e runUsageError) Error() string        { return e.err.Error() }
func (e runUsageError) Unwrap() error        { return e.err }
func (e runUsageError) Is(target error) bool { return target == ErrUsage }

func asRunUsage(err, sub error) error {
	if errors.Is(err, sub) {
		return runUsageError{err}
	}
	return err
}

// serveFlags are the command-line settings of "serve" that are not fields
// of Config.
type serveFlags struct {
	listen, cert, key, ca string
	usersFile             string
	usersCheck            time.Duration
	policy                string
	backends              cliconf.List
	grace                 time.Duration
	logLevel, logFormat   string
	readyFile             string
}

// newServeFlagSet declares the flags of "serve", writing into cfg and sf.
// Flags of Config fields take their defaults from cfg.
func newServeFlagSet(cfg *Config, sf *serveFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("imash-mws serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Name, "name", "", "this MWS's `name`; must equal the name in its certificate (default: taken from --cert)")
	fs.StringVar(&sf.listen, "listen", DefaultListen, "`address` to serve devices on")
	fs.StringVar(&sf.cert, "cert", "", "this MWS's certificate (PEM, role mws): the server certificate for devices and the client certificate towards the mux (required)")
	fs.StringVar(&sf.key, "key", "", "the certificate's private key (PEM) (required)")
	fs.StringVar(&sf.ca, "ca", "", "the cluster CA certificate (PEM) (required)")
	fs.StringVar(&cfg.MuxAddr, "mux", "127.0.0.1:7700", "`address` of the mux")
	fs.Var(&sf.backends, "http-backend", "mux backend `name` that speaks HTTP and is served by Get (repeatable)")
	fs.StringVar(&sf.usersFile, "users", "", "user `file` (htpasswd, bcrypt; manage it with \"imash-mws user\"); edits are picked up while running (required)")
	fs.DurationVar(&sf.usersCheck, "users-check-interval", users.DefaultCheckInterval, "least time between two looks at the user file for changes")
	fs.Var(cliflag.Bytes(&cfg.Cache.MaxBytes), "cache-bytes", "object cache budget in `bytes` (suffixes KiB, MiB, GiB allowed)")
	fs.Var(cliflag.Bytes(&cfg.Cache.MaxObjectBytes), "max-object-bytes", "largest object body in `bytes` that is cached; larger ones are streamed through uncached")
	fs.Var(cliflag.Int(&cfg.Cache.MaxEntries), "cache-entries", "the cache index remembers at most `n` request keys")
	fs.DurationVar(&cfg.CredentialTTL, "credential-ttl", cfg.CredentialTTL, "how long a login credential is valid")
	fs.DurationVar(&cfg.SessionIdleTimeout, "session-idle-timeout", cfg.SessionIdleTimeout, "end a session no call has touched for this long (its legacy streams are closed)")
	fs.Var(cliflag.Int(&cfg.MaxSessions), "max-sessions", "this MWS holds at most `n` sessions")
	fs.Var(cliflag.Int(&cfg.MaxSessionsPerUser), "max-sessions-per-user", "one user holds at most `n` sessions")
	fs.Var(cliflag.Int(&cfg.MaxStreamsPerSession), "max-streams-per-session", "a session holds at most `n` open raw streams")
	fs.Var(cliflag.BytesInt(&cfg.MaxPathBytes), "max-path-bytes", "longest Get path in `bytes`")
	fs.Var(cliflag.Int(&cfg.MaxHeaders), "max-headers", "a device may pass along at most `n` request headers")
	fs.Var(cliflag.BytesInt(&cfg.MaxHeaderBytes), "max-header-bytes", "total `bytes` of the request headers a device may pass along")
	fs.Var(cliflag.Int(&cfg.MaxLabels), "max-labels", "a session has at most `n` labels")
	fs.Var(cliflag.BytesInt(&cfg.MaxLabelBytes), "max-label-bytes", "longest session label in `bytes`")
	fs.Var(cliflag.BytesInt(&cfg.MaxAppBytes), "max-app-bytes", "longest application name in `bytes`")
	fs.Var(cliflag.BytesInt(&cfg.GetChunk), "get-chunk", "size in `bytes` of the body chunks sent to devices (at most 3MiB)")
	fs.Var(cliflag.Int(&cfg.HTTPIdleConns), "http-idle-conns", "at most `n` idle keep-alive legacy connections are kept per backend")
	fs.Var(cliflag.Int(&cfg.HTTPMaxConns), "http-max-conns", "at most `n` legacy connections per HTTP backend; further requests wait")
	fs.DurationVar(&cfg.HTTPTimeout, "http-timeout", cfg.HTTPTimeout, "longest wait for a legacy HTTP server's response headers")
	fs.StringVar(&sf.policy, "policy", "", "handoff policy JSON `file`: which sessions may move to which device classes (default: every move is allowed)")
	fs.DurationVar(&cfg.ConsentTimeout, "consent-timeout", cfg.ConsentTimeout, "how long a handoff waits for an online target device's consent")
	fs.DurationVar(&cfg.ParkExpiry, "park-expiry", cfg.ParkExpiry, "how long a handoff to an offline device stays parked")
	fs.DurationVar(&cfg.SavepointTimeout, "savepoint-timeout", cfg.SavepointTimeout, "how long a handoff waits for the source device's savepoint upload")
	fs.DurationVar(&cfg.ResumeTimeout, "resume-timeout", cfg.ResumeTimeout, "how long a handoff waits for the target device to resume")
	fs.Var(cliflag.Int(&cfg.MaxSavepointElements), "max-savepoint-elements", "a savepoint holds at most `n` elements")
	fs.Var(cliflag.BytesInt(&cfg.MaxSavepointBytes), "max-savepoint-bytes", "total application data of a savepoint in `bytes` (server objects count by reference)")
	fs.Var(cliflag.BytesInt(&cfg.MaxElementBytes), "max-element-bytes", "largest savepoint element in `bytes` (at most 3MiB)")
	fs.DurationVar(&sf.grace, "shutdown-grace", 10*time.Second, "how long shutdown waits for calls in flight before cutting them")
	fs.StringVar(&sf.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&sf.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&sf.readyFile, "ready-file", "", "once listening, write the bound address (host:port) to this `file` and remove it at exit; for scripts and tests that listen on port 0")
	fs.String("config", "", "JSON config `file` whose keys are these flag names")
	return fs
}

// runServe is "imash-mws serve".
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, sf := NewDefaultConfig(), &serveFlags{}
	// A throwaway parse of the command line alone finds its syntax errors,
	// after which nothing else can be trusted; problems of the environment,
	// the config file and the values themselves are then collected together.
	probe := newServeFlagSet(&Config{}, &serveFlags{})
	if err := probe.Parse(args); err != nil || probe.NArg() > 0 {
		if errors.Is(err, flag.ErrHelp) {
			printServeUsage(stdout)
			return nil
		}
		if err == nil {
			err = fmt.Errorf("unexpected argument %q", probe.Arg(0))
		}
		printServeUsage(stderr)
		return fmt.Errorf("%w: serve: %v", ErrUsage, err)
	}
	fs := newServeFlagSet(&cfg, sf)
	var problems []string
	if err := cliconf.Parse(fs, args, "IMASH_MWS", "config"); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	log, err := cliflag.NewLogger(stderr, sf.logLevel, sf.logFormat)
	if err != nil {
		problems = append(problems, err.Error())
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	cfg.HTTPBackends = slices.Clone(sf.backends)
	if sf.grace <= 0 {
		problems = append(problems, fmt.Sprintf("--shutdown-grace %v: want > 0", sf.grace))
	}
	for _, a := range []struct{ flag, addr string }{{"--listen", sf.listen}, {"--mux", cfg.MuxAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); a.addr != "" && err != nil {
			problems = append(problems, fmt.Sprintf("%s %q: %v", a.flag, a.addr, err))
		}
	}
	// Stand-ins let Validate check everything else without repeating the
	// problems of missing files reported here.
	check := cfg
	if tlsCfg, muxTLS, name, p := loadMWSCert(sf, cfg.Name); len(p) > 0 {
		problems = append(problems, p...)
		check.TLS, check.MuxTLS = &tls.Config{}, &tls.Config{}
		if check.Name == "" {
			check.Name = "unknown"
		}
	} else {
		cfg.TLS, cfg.MuxTLS, cfg.Name = tlsCfg, muxTLS, name
		check.TLS, check.MuxTLS, check.Name = tlsCfg, muxTLS, name
	}
	if sf.usersFile == "" {
		problems = append(problems, "--users is required (create the file with \"imash-mws user add\")")
		check.Users = runNoUsers{}
	} else if st, err := users.NewStore(sf.usersFile, users.StoreConfig{CheckInterval: sf.usersCheck, Logger: log}); err != nil {
		problems = append(problems, "--users: "+err.Error())
		check.Users = runNoUsers{}
	} else {
		cfg.Users, check.Users = st, st
	}
	if sf.policy != "" {
		if p, err := LoadPolicy(sf.policy); err != nil {
			problems = append(problems, "--policy: "+err.Error())
		} else {
			cfg.Policy, check.Policy = p, p
		}
	}
	if err := check.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			problems = append(problems, runFlagHint(line))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: serve: invalid configuration (\"imash-mws serve -h\" lists the flags):\n  %s", ErrUsage, strings.Join(problems, "\n  "))
	}

	srv, err := New(cfg, log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", sf.listen)
	if err != nil {
		srv.Close(context.Background())
		return fmt.Errorf("serve: listen: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	if sf.readyFile != "" {
		if err := cliflag.WriteReadyFile(sf.readyFile, lis.Addr().String()); err != nil {
			log.Error("writing the ready file", "file", sf.readyFile, "error", err)
			return errors.Join(err, runShutdown(ctx, srv, served, sf.grace))
		}
		defer os.Remove(sf.readyFile)
	}
	select {
	case err := <-served:
		srv.Close(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", sf.grace)
	return runShutdown(ctx, srv, served, sf.grace)
}

func runShutdown(ctx context.Context, srv *Server, served <-chan error, grace time.Duration) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	return errors.Join(srv.Close(cctx), <-served)
}

// loadMWSCert loads the MWS's key pair and derives the device-facing and
// mux-facing TLS configs and the name, or reports every problem.
func loadMWSCert(sf *serveFlags, name string) (server, client *tls.Config, certName string, problems []string) {
	for _, f := range []struct{ flag, v string }{{"--cert", sf.cert}, {"--key", sf.key}, {"--ca", sf.ca}} {
		if f.v == "" {
			problems = append(problems, f.flag+" is required (issue it with \"imash-mws ca issue --role mws\")")
		}
	}
	if len(problems) > 0 {
		return nil, nil, "", problems
	}
	cert, pool, err := pki.LoadKeyPair(sf.cert, sf.key, sf.ca)
	if err != nil {
		return nil, nil, "", []string{err.Error()}
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	switch {
	case err != nil:
		return nil, nil, "", []string{"--cert " + sf.cert + ": " + err.Error()}
	case id.Role != pki.RoleMWS:
		return nil, nil, "", []string{fmt.Sprintf("--cert %s: certificate is for %s, want role mws", sf.cert, id)}
	case name != "" && name != id.Name:
		return nil, nil, "", []string{fmt.Sprintf("--name %q differs from the name %q in the certificate", name, id.Name)}
	}
	return pki.ServerTLS(cert, pool), pki.ClientTLS(cert, pool, pki.RoleMux), id.Name, nil
}

// runFlagHints maps the Config field a Validate message starts with to its
// flag.
var runFlagHints = []struct{ field, flag string }{
	{"name", "--name"}, {"mux address", "--mux"}, {"HTTP backend", "--http-backend"},
	{"MaxObjectBytes", "--max-object-bytes"}, {"MaxBytes", "--cache-bytes"}, {"MaxEntries", "--cache-entries"},
	{"MaxSessionsPerUser", "--max-sessions-per-user"}, {"MaxSessions", "--max-sessions"},
	{"MaxStreamsPerSession", "--max-streams-per-session"}, {"MaxPathBytes", "--max-path-bytes"},
	{"MaxHeaders", "--max-headers"}, {"MaxHeaderBytes", "--max-header-bytes"}, {"MaxLabels", "--max-labels"},
	{"MaxLabelBytes", "--max-label-bytes"}, {"MaxAppBytes", "--max-app-bytes"}, {"GetChunk", "--get-chunk"},
	{"HTTPIdleConns", "--http-idle-conns"}, {"HTTPMaxConns", "--http-max-conns"}, {"CredentialTTL", "--credential-ttl"}, {"SessionIdleTimeout", "--session-idle-timeout"}, {"HTTPTimeout", "--http-timeout"},
	{"MaxSavepointElements", "--max-savepoint-elements"}, {"MaxSavepointBytes", "--max-savepoint-bytes"},
	{"MaxElementBytes", "--max-element-bytes"}, {"ConsentTimeout", "--consent-timeout"}, {"ParkExpiry", "--park-expiry"},
	{"SavepointTimeout", "--savepoint-timeout"}, {"ResumeTimeout", "--resume-timeout"},
}

// runFlagHint appends the flag that sets the field a Validate message is
// about, so that an operator need not know Config's field names.
func runFlagHint(line string) string {
	rest := strings.TrimPrefix(line, "cache: ")
	for _, h := range runFlagHints {
		if after, ok := strings.CutPrefix(rest, h.field); ok && (strings.HasPrefix(after, " ") || strings.HasPrefix(after, ":")) {
			return line + " (" + h.flag + ")"
		}
	}
	return line
}

func printServeUsage(w io.Writer) {
	cfg := NewDefaultConfig()
	fs := newServeFlagSet(&cfg, &serveFlags{})
	fmt.Fprintln(w, "usage: imash-mws serve [flags]")
	fmt.Fprintln(w, "\nFlags (also IMASH_MWS_<FLAG> environment variables and --config JSON keys):")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// runNoUsers stands in for a user file that could not be loaded while the
// rest of the configuration is validated; it is never served.
type runNoUsers struct{}

func (runNoUsers) Verify(string, string) error { return errors.New("no user file") }
