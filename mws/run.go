package mws

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imashproject/imash/internal/cliconf"
	"github.com/imashproject/imash/internal/cliflag"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/pki/castore"
	"github.com/imashproject/imash/mws/cluster"
	"github.com/imashproject/imash/mws/users"
)

// Usage is the help text of imash-mws.
const Usage = `usage: imash-mws <command> [flags]

Commands:
  serve  run a middleware server until SIGINT or SIGTERM; in a cluster it
         first moves its sessions to peers (drain), then leaves the cluster
         imash-mws serve --cert mws.pem --key mws-key.pem --ca ca.pem \
             --mux 127.0.0.1:7700 --users users.htpasswd [--http-backend images]
         in a cluster, add for example:
             --advertise 10.0.0.5:7800 --gossip-listen 10.0.0.5:7946 \
             --seed 10.0.0.4:7946 --gossip-key-file gossip.key \
             --ticket-secret-file tickets.key
  ca     manage the cluster CA: init, issue, list ("imash-mws ca help")
  user   manage the user file: add, del, list ("imash-mws user help")
  op     operate a running cluster with an operator certificate: members,
         move a session, drain an MWS ("imash-mws op help")
         imash-mws op members --mws 127.0.0.1:7800 --cert op.pem \
             --key op-key.pem --ca ca.pem
  help   show this text; "imash-mws help serve|ca|user|op" shows a
         command's help

Every serve flag can also be set as an environment variable (IMASH_MWS_ plus
the flag name in upper case with - as _, e.g. IMASH_MWS_CACHE_BYTES=1GiB;
repeatable flags as a comma-separated list) or in a JSON file given with
--config whose keys are the flag names. Flags win over the environment, which
wins over the file. The flags of "op" work alike with IMASH_OP_.
`

// ErrUsage marks errors of the invocation itself — unknown command, bad
// flag, invalid configuration — for which a main function exits with status
// 2. Usage errors of "ca", "user" and "op" match it too.
var ErrUsage = errors.New("usage")

// DefaultListen is the address "imash-mws serve" listens on for devices
// unless told otherwise.
const DefaultListen = "127.0.0.1:7800"

// Run is imash-mws: it dispatches to the serve, ca, user and op commands.
// args are the arguments after the program name; stdin supplies the
// password of "user add". Results and help go to stdout, logs and usage
// text for bad invocations to stderr; the error is returned, never
// printed. "serve" returns nil after ctx ends and the server has shut down.
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
	case "op":
		return runOp(ctx, args[1:], stdout, stderr)
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
	case "op":
		return runOp(ctx, append([]string{"help"}, args[1:]...), stdout, stderr)
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

	advertise        string
	gossipListen     string
	gossipAdvertise  string
	seeds            cliconf.List
	gossipKeyFile    string
	gossipInsecure   bool
	ticketSecretFile string
	drainOnExit      bool
	drainTimeout     time.Duration
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
	fs.StringVar(&sf.advertise, "advertise", "", "gRPC `address` (host:port) at which devices and peer MWSs reach this MWS; it is what a device is told when its session moves here (default: the bound --listen address, unless that is a wildcard)")
	fs.StringVar(&sf.gossipListen, "gossip-listen", "", "IP `address` and port (TCP and UDP) for the cluster's gossip (memberlist), e.g. 10.0.0.5:7946; port 0 picks a free one. Empty: no cluster, this MWS runs alone")
	fs.StringVar(&sf.gossipAdvertise, "gossip-advertise", "", "IP `address` (host or host:port) at which peers reach this MWS's gossip, behind NAT (default: the --gossip-listen address; port 0 or none: its port)")
	fs.Var(&sf.seeds, "seed", "gossip `address` (host:port) of a cluster member to join (repeatable; every MWS may get the same list, itself included; none: start a new cluster)")
	fs.StringVar(&sf.gossipKeyFile, "gossip-key-file", "", "`file` holding the cluster's gossip encryption key: 16, 24 or 32 bytes, raw or base64 (make one with \"head -c 32 /dev/urandom | base64\"); several base64 keys one per line rotate keys: the first encrypts, all decrypt (required with --gossip-listen)")
	fs.BoolVar(&sf.gossipInsecure, "gossip-insecure", false, "gossip unencrypted and unauthenticated, without --gossip-key-file (trusted single-host setups and tests only)")
	fs.StringVar(&sf.ticketSecretFile, "ticket-secret-file", "", "`file` holding a secret of at least 32 bytes shared by every MWS of the cluster: TLS session tickets are encrypted with keys derived from it, so a device whose session moves resumes TLS at the peer without a full handshake (a trailing newline is ignored)")
	fs.Var(cliflag.Bytes(&cfg.Cluster.MaxMoveBytes), "max-move-bytes", "server objects shipped with one session moved to a peer, in `bytes`")
	fs.Var(cliflag.Int(&cfg.Cluster.MaxMoveObjects), "max-move-objects", "at most `n` server objects are shipped with one session moved to a peer")
	fs.DurationVar(&cfg.Cluster.MoveTimeout, "move-timeout", cfg.Cluster.MoveTimeout, "longest time one move of a session to a peer may take")
	fs.Float64Var(&cfg.Cluster.DenyAbove, "deny-above", cfg.Cluster.DenyAbove, "refuse sessions moved from peers while holding at least this `fraction` of --max-sessions (0-1]")
	fs.Float64Var(&cfg.Cluster.OverloadAbove, "overload-above", cfg.Cluster.OverloadAbove, "above this `fraction` of --max-sessions, move sessions to the least loaded peer until at --overload-target (0: never)")
	fs.Float64Var(&cfg.Cluster.OverloadTarget, "overload-target", cfg.Cluster.OverloadTarget, "`fraction` of --max-sessions that overload moves bring this MWS down to; below --overload-above")
	fs.DurationVar(&cfg.Cluster.BalanceInterval, "balance-interval", cfg.Cluster.BalanceInterval, "how often the load is checked against --overload-above")
	fs.Var(cliflag.Int(&cfg.Cluster.Replicas), "replicas", "keep a replica of every session on `n` peers (0 to 3), so that it and its acknowledged savepoint survive this MWS's failure (0: none)")
	fs.Var(cliflag.Int(&cfg.Cluster.AdmissionSlack), "admission-slack", "place a new session on the least loaded peer when this MWS holds more than `n` sessions beyond that peer's (0: never)")
	fs.DurationVar(&cfg.Cluster.DrainGrace, "drain-grace", cfg.Cluster.DrainGrace, "after a drain moved every session, how long to wait for devices to follow before stopping")
	fs.BoolVar(&sf.drainOnExit, "drain-on-exit", true, "on SIGINT or SIGTERM, move every session to peers before leaving the cluster and stopping (with peers only)")
	fs.DurationVar(&sf.drainTimeout, "drain-timeout", time.Minute, "longest time the drain on exit may take, --drain-grace included; then shutdown goes on")
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
	gossip, p := clusterFlags(sf, &cfg)
	problems = append(problems, p...)
	// Stand-ins let Validate check everything else without repeating the
	// problems of missing files reported here.
	check := cfg
	if certs, p := loadMWSCert(sf, cfg.Name); len(p) > 0 {
		problems = append(problems, p...)
		check.TLS, check.MuxTLS = &tls.Config{}, &tls.Config{}
		if check.Name == "" {
			check.Name = "unknown"
		}
	} else {
		cfg.TLS, cfg.MuxTLS, cfg.Name = certs.server, certs.mux, certs.name
		check.TLS, check.MuxTLS, check.Name = certs.server, certs.mux, certs.name
		if gossip != nil {
			cfg.Cluster.PeerTLS = certs.peer
		}
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

	lis, err := net.Listen("tcp", sf.listen)
	if err != nil {
		return fmt.Errorf("serve: --listen %s: %w", sf.listen, err)
	}
	cfg.Cluster.Addr = sf.advertise
	if cfg.Cluster.Addr == "" && !wildcardHost(lis.Addr().String()) {
		cfg.Cluster.Addr = lis.Addr().String()
	}
	// Logs of the cluster and the exit drain name this MWS, as the
	// server's do.
	mlog := log.With("mws", cfg.Name)
	var members *gossipMembers
	if gossip != nil {
		members, err = startGossip(ctx, *gossip, &cfg, log, mlog)
		if err != nil {
			lis.Close()
			return err
		}
	}
	// An operator's drain with exit set ends serve like a signal, without
	// a second drain.
	operatorExit := make(chan struct{})
	var exitOnce sync.Once
	cfg.Cluster.OnDrained = func() { exitOnce.Do(func() { close(operatorExit) }) }

	srv, err := New(cfg, log)
	if err != nil {
		lis.Close()
		members.leave(ctx, mlog)
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	if sf.readyFile != "" {
		if err := cliflag.WriteReadyFile(sf.readyFile, lis.Addr().String()); err != nil {
			log.Error("writing the ready file", "file", sf.readyFile, "error", err)
			members.leave(ctx, mlog)
			return errors.Join(err, runShutdown(ctx, srv, served, sf.grace))
		}
		defer os.Remove(sf.readyFile)
	}
	drain := sf.drainOnExit
	select {
	case err := <-served:
		members.leave(ctx, mlog)
		srv.Close(context.Background())
		return err
	case <-ctx.Done():
	case <-operatorExit:
		mlog.Info("drained on the operator's request; stopping")
		drain = false
	}
	if members != nil {
		if drain {
			drainOnExit(ctx, srv, members.g, sf.drainTimeout, mlog)
		}
		members.leave(ctx, mlog)
	}
	log.Info("shutting down", "grace", sf.grace)
	return runShutdown(ctx, srv, served, sf.grace)
}

func runShutdown(ctx context.Context, srv *Server, served <-chan error, grace time.Duration) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	return errors.Join(srv.Close(cctx), <-served)
}

// drainOnExit moves every session to peers before the MWS stops, if it has
// a live peer that takes sessions. A drain that fails or takes longer than
// timeout is logged; the sessions left stay here.
func drainOnExit(ctx context.Context, srv *Server, m Membership, timeout time.Duration, log *slog.Logger) {
	if _, ok := leastLoaded(m.Peers()); !ok {
		log.Warn("no live peer takes sessions: stopping without a drain", "sessions", srv.Stats().Sessions)
		return
	}
	log.Info("draining before exit: moving every session to peers", "sessions", srv.Stats().Sessions, "timeout", timeout)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := srv.drain(dctx, nil, true); err != nil {
		log.Warn("drain before exit did not finish: stopping anyway", "error", err, "sessions_left", srv.Stats().Sessions)
		return
	}
	log.Info("drain before exit done")
}

// gossipLeaveTimeout bounds leaving the cluster at exit.
const gossipLeaveTimeout = 10 * time.Second

// gossipMembers is this MWS's membership of a gossip cluster.
type gossipMembers struct {
	c *cluster.Cluster
	g *Gossip
}

// startGossip starts the cluster membership of cfg's MWS and makes it
// cfg.Cluster.Membership. The MWS is advertised as draining until the
// server publishes its load, so that no peer moves sessions to it before
// it serves.
func startGossip(ctx context.Context, gc cluster.Config, cfg *Config, log, mlog *slog.Logger) (*gossipMembers, error) {
	gc.Name = cfg.Name
	gc.GRPCAddr = cfg.Cluster.Addr
	gc.Load = cluster.Load{MaxSessions: cfg.MaxSessions, Draining: true}
	gc.Logger = log
	c, err := cluster.Start(ctx, gc)
	switch {
	case errors.Is(err, cluster.ErrJoin):
		return nil, oneLineError{"serve: no --seed let this MWS join the cluster: are they up, and do they use the same gossip key (--gossip-key-file)? ", err}
	case err != nil:
		return nil, oneLineError{fmt.Sprintf("serve: gossip on --gossip-listen %s: ", net.JoinHostPort(gc.BindAddr, strconv.Itoa(gc.BindPort))), err}
	}
	mlog.Info("joined the cluster", "gossip", c.Addr(), "grpc", gc.GRPCAddr, "members", len(c.Members()))
	g := NewGossip(c, mlog)
	cfg.Cluster.Membership = g
	return &gossipMembers{c: c, g: g}, nil
}

// oneLineError is prefix and err on one line: memberlist reports the
// failures of a join as a multi-line list ("1 error occurred:\n\t* ...").
type oneLineError struct {
	prefix string
	err    error
}

// errorListHead is the head of a multi-line error list.
var errorListHead = regexp.MustCompile(`\d+ errors? occurred:$`)

func (e oneLineError) Error() string {
	var parts []string
	for _, line := range strings.Split(e.err.Error(), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "* ")
		line = strings.TrimSpace(errorListHead.ReplaceAllString(line, ""))
		if line != "" {
			parts = append(parts, line)
		}
	}
	return e.prefix + strings.Join(parts, " ")
}

func (e oneLineError) Unwrap() error { return e.err }

// leave leaves the cluster at once, so that peers stop counting on this
// MWS. It does nothing on a nil m.
func (m *gossipMembers) leave(ctx context.Context, log *slog.Logger) {
	if m == nil {
		return
	}
	m.g.Close()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gossipLeaveTimeout)
	defer cancel()
	if err := m.c.Close(cctx); err != nil {
		log.Warn("leaving the cluster", "error", err)
		return
	}
	log.Info("left the cluster")
}

// clusterFlags checks the cluster flags, sets the ticket secret in cfg and
// returns the gossip configuration to start (nil: no cluster; Name,
// GRPCAddr, Load and Logger are set at start), or every problem.
func clusterFlags(sf *serveFlags, cfg *Config) (*cluster.Config, []string) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if sf.advertise != "" {
		if err := checkDialAddr(sf.advertise); err != nil {
			add("--advertise %q: %v", sf.advertise, err)
		}
	} else if sf.gossipListen != "" && wildcardHost(sf.listen) {
		add("--advertise is required with --gossip-listen when --listen %q is a wildcard address: peers and devices need an address to reach this MWS", sf.listen)
	}
	if sf.ticketSecretFile != "" {
		if secret, err := readTicketSecret(sf.ticketSecretFile); err != nil {
			add("--ticket-secret-file %s: %v", sf.ticketSecretFile, err)
		} else {
			cfg.Cluster.TicketSecret = secret
		}
	}
	if sf.drainTimeout <= 0 {
		add("--drain-timeout %v: want > 0", sf.drainTimeout)
	}
	if sf.gossipListen == "" {
		for _, f := range []struct {
			flag string
			set  bool
		}{{"--gossip-advertise", sf.gossipAdvertise != ""}, {"--seed", len(sf.seeds) > 0},
			{"--gossip-key-file", sf.gossipKeyFile != ""}, {"--gossip-insecure", sf.gossipInsecure}} {
			if f.set {
				add("%s needs --gossip-listen (without it this MWS is in no cluster)", f.flag)
			}
		}
		return nil, problems
	}
	before := len(problems)
	gc := cluster.NewDefaultConfig()
	if host, port, err := splitIPPort(sf.gossipListen); err != nil {
		add("--gossip-listen %q: %v", sf.gossipListen, err)
	} else {
		if host == "" {
			host = "0.0.0.0"
		}
		gc.BindAddr, gc.BindPort = host, port
	}
	if sf.gossipAdvertise != "" {
		v := sf.gossipAdvertise
		host, port, err := splitIPPort(v)
		if err != nil && net.ParseIP(v) != nil {
			host, port, err = v, 0, nil // a bare IP address
		}
		switch {
		case err != nil:
			add("--gossip-advertise %q: %v", v, err)
		case host == "" || net.ParseIP(host).IsUnspecified():
			add("--gossip-advertise %q: want the IP address peers reach, not a wildcard", v)
		case port != 0 && gc.BindPort == 0:
			add("--gossip-advertise %q: a port needs an explicit --gossip-listen port (not 0)", v)
		default:
			gc.AdvertiseAddr, gc.AdvertisePort = host, port
		}
	}
	for _, seed := range sf.seeds {
		if err := checkDialAddr(seed); err != nil {
			add("--seed %q: %v", seed, err)
		}
	}
	gc.Seeds = slices.Clone(sf.seeds)
	switch {
	case sf.gossipKeyFile == "" && !sf.gossipInsecure:
		add("--gossip-key-file is required with --gossip-listen (or --gossip-insecure for unencrypted gossip)")
	case sf.gossipKeyFile != "" && sf.gossipInsecure:
		add("--gossip-key-file and --gossip-insecure: choose one")
	case sf.gossipInsecure:
		gc.Insecure = true
	default:
		keys, err := readGossipKeys(sf.gossipKeyFile)
		if err != nil {
			add("--gossip-key-file %s: %v", sf.gossipKeyFile, err)
		}
		gc.SecretKeys = keys
	}
	if len(problems) > before {
		return nil, problems
	}
	// What the flags above do not catch; name and address are checked
	// elsewhere.
	probe := gc
	probe.Name, probe.GRPCAddr = "probe", "probe.invalid:1"
	if err := probe.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			add("gossip: %s", line)
		}
		return nil, problems
	}
	return &gc, problems
}

// maxSecretFileBytes bounds the gossip key and ticket secret files.
const maxSecretFileBytes = 4096

// readSecretFile reads a small secret file.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return nil, pe.Err // the caller names the file
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretFileBytes {
		return nil, fmt.Errorf("larger than %d bytes: not a key file", maxSecretFileBytes)
	}
	return b, nil
}

// readTicketSecret reads the TLS ticket secret: the file's bytes without a
// trailing newline, at least 32 of them.
func readTicketSecret(path string) ([]byte, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	b = trimNewline(b)
	if len(b) < 32 {
		return nil, fmt.Errorf("%d bytes, want at least 32 (make one with \"head -c 48 /dev/urandom | base64\")", len(b))
	}
	return b, nil
}

// readGossipKeys reads the gossip keys: one or more base64 keys, one per
// line, each of 16, 24 or 32 bytes (the first encrypts, all decrypt), or
// one raw key of 16, 24 or 32 bytes (a trailing newline is ignored). A
// file that reads as base64 is taken as base64.
func readGossipKeys(path string) ([][]byte, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	if keys := base64Keys(b); keys != nil {
		return keys, nil
	}
	for _, raw := range [][]byte{b, trimNewline(b)} {
		if validKeyLen(len(raw)) {
			return [][]byte{bytes.Clone(raw)}, nil
		}
	}
	return nil, fmt.Errorf("%d bytes: want a key of 16, 24 or 32 bytes, raw or base64 (base64 keys one per line); make one with \"head -c 32 /dev/urandom | base64\"", len(b))
}

// base64Keys returns the keys of a file of base64 keys, one per line, or
// nil if it is not one.
func base64Keys(b []byte) [][]byte {
	var keys [][]byte
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil || !validKeyLen(len(k)) {
			return nil
		}
		keys = append(keys, k)
	}
	return keys
}

func validKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

func trimNewline(b []byte) []byte {
	b, _ = bytes.CutSuffix(b, []byte("\n"))
	b, _ = bytes.CutSuffix(b, []byte("\r"))
	return b
}

// splitIPPort splits an "ip:port" address whose host is an IP address or
// empty and whose port is 0-65535.
func splitIPPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("host %q: want an IP address", host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 0-65535", portStr)
	}
	return host, port, nil
}

// checkDialAddr checks an address others dial: a host that is not a
// wildcard and a port 1-65535.
func checkDialAddr(addr string) error {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("missing host")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("host %s is a wildcard; want an address others can reach", host)
	}
	if port, err := strconv.Atoi(portStr); err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("port %q: want 1-65535", portStr)
	}
	return nil
}

// wildcardHost reports whether a listen address has no host or a wildcard
// IP (any interface).
func wildcardHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// mwsCerts are the TLS configs derived from the MWS's key pair.
type mwsCerts struct {
	// server faces devices and peers; mux and peer are the client configs
	// towards the mux and towards peer MWSs.
	server, mux, peer *tls.Config
	name              string
}

// loadMWSCert loads the MWS's key pair and derives the TLS configs and the
// name, or reports every problem.
func loadMWSCert(sf *serveFlags, name string) (mwsCerts, []string) {
	var problems []string
	for _, f := range []struct{ flag, v string }{{"--cert", sf.cert}, {"--key", sf.key}, {"--ca", sf.ca}} {
		if f.v == "" {
			problems = append(problems, f.flag+" is required (issue it with \"imash-mws ca issue --role mws\")")
		}
	}
	if len(problems) > 0 {
		return mwsCerts{}, problems
	}
	cert, pool, err := pki.LoadKeyPair(sf.cert, sf.key, sf.ca)
	if err != nil {
		return mwsCerts{}, []string{err.Error()}
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	switch {
	case err != nil:
		return mwsCerts{}, []string{"--cert " + sf.cert + ": " + err.Error()}
	case id.Role != pki.RoleMWS:
		return mwsCerts{}, []string{fmt.Sprintf("--cert %s: certificate is for %s, want role mws", sf.cert, id)}
	case name != "" && name != id.Name:
		return mwsCerts{}, []string{fmt.Sprintf("--name %q differs from the name %q in the certificate", name, id.Name)}
	}
	return mwsCerts{
		server: pki.ServerTLS(cert, pool),
		mux:    pki.ClientTLS(cert, pool, pki.RoleMux),
		peer:   pki.ClientTLS(cert, pool, pki.RoleMWS),
		name:   id.Name,
	}, nil
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
	{"TicketSecret", "--ticket-secret-file"}, {"MoveTimeout", "--move-timeout"},
	{"MaxMoveBytes", "--max-move-bytes, --max-move-objects"}, {"BalanceInterval", "--balance-interval"},
	{"DrainGrace", "--drain-grace"}, {"DenyAbove", "--deny-above"},
	{"OverloadAbove", "--overload-above, --overload-target"}, {"AdmissionSlack", "--admission-slack"}, {"Replicas", "--replicas"},
}

// runFlagHint appends the flag that sets the field a Validate message is
// about, so that an operator need not know Config's field names.
func runFlagHint(line string) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(line, "cache: "), "cluster: ")
	for _, h := range runFlagHints {
		if after, ok := strings.CutPrefix(rest, h.field); ok && (strings.HasPrefix(after, " ") || strings.HasPrefix(after, ":")) {
			return line + " (" + h.flag + ")"
		}
	}
	return line
}

// serveAbout is the part of serve's help that flags alone do not tell.
const serveAbout = `
Serve a middleware server until SIGINT or SIGTERM. Alone by default; with
--gossip-listen it joins the MWS cluster through --seed (gossip encrypted
with --gossip-key-file) and tells peers it is reached at --advertise. In a
cluster, sessions move between MWSs (overload, admission, operator), and a
signal first drains: every session moves to a peer and devices follow
(--drain-on-exit, --drain-timeout, --drain-grace); then the MWS leaves the
cluster and shuts down (--shutdown-grace). A second signal stops at once.
`

func printServeUsage(w io.Writer) {
	cfg := NewDefaultConfig()
	fs := newServeFlagSet(&cfg, &serveFlags{})
	fmt.Fprintln(w, "usage: imash-mws serve [flags]")
	fmt.Fprint(w, serveAbout)
	fmt.Fprintln(w, "\nFlags (also IMASH_MWS_<FLAG> environment variables and --config JSON keys):")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// runNoUsers stands in for a user file that could not be loaded while the
// rest of the configuration is validated; it is never served.
type runNoUsers struct{}

func (runNoUsers) Verify(string, string) error { return errors.New("no user file") }
