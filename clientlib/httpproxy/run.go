package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/cliconf"
	"github.com/imashproject/imash/internal/cliflag"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
)

// PasswordEnv is the environment variable Run reads the password from when
// --password-file is not given.
const PasswordEnv = "IMASH_PROXY_PASSWORD"

// ErrUsage marks errors of the invocation itself (bad flag, invalid
// configuration); a main function exits with status 2 for them.
var ErrUsage = errors.New("usage")

type runFlags struct {
	mws, cert, key, ca      string
	user, passwordFile, app string
	labels                  cliconf.List
	listen                  string
	timeout, grace          time.Duration
	maxObject               int64
	maxHeader               int
	logLevel, logFormat     string
	readyFile               string
}

func newFlagSet(f *runFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("imash-proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.mws, "mws", "127.0.0.1:7800", "`address` of the MWS")
	fs.StringVar(&f.cert, "cert", "", "this device's certificate (PEM, role device) (required)")
	fs.StringVar(&f.key, "key", "", "the certificate's private key (PEM) (required)")
	fs.StringVar(&f.ca, "ca", "", "the cluster CA certificate (PEM) (required)")
	fs.StringVar(&f.user, "user", "", "imash user `name` to log in as (required)")
	fs.StringVar(&f.passwordFile, "password-file", "", "`file` whose first line is the password (default: the "+PasswordEnv+" environment variable)")
	fs.StringVar(&f.app, "app", "proxy", "application `name` of the session")
	fs.Var(&f.labels, "label", "session `label` for the MWS's handoff policies (repeatable)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:3128", "`address` to serve HTTP proxy clients on")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "longest time one request may take through the MWS (0: no limit)")
	f.maxObject = 256 << 20
	fs.Var(cliflag.Bytes(&f.maxObject), "max-object-bytes", "largest object body in `bytes` fetched; larger ones fail with 502")
	f.maxHeader = 16 << 10
	fs.Var(cliflag.BytesInt(&f.maxHeader), "max-header-bytes", "largest request header block in `bytes` a client may send")
	fs.DurationVar(&f.grace, "shutdown-grace", 10*time.Second, "how long shutdown waits for requests in flight")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.readyFile, "ready-file", "", "once serving, write the bound address (host:port) to this `file` and remove it at exit")
	fs.String("config", "", "JSON config `file` whose keys are these flag names")
	return fs
}

// Usage prints the flags of imash-proxy to w.
func Usage(w io.Writer) {
	fs := newFlagSet(&runFlags{})
	fmt.Fprint(w, `usage: imash-proxy --cert device.pem --key device-key.pem --ca ca.pem --user NAME [flags]

imash-proxy logs in to an MWS, opens a session and serves it as an HTTP
forward proxy, so that unmodified programs fetch through imash:

  http_proxy=http://127.0.0.1:3128 curl http://images/images/img-001.jpg

The URL's host names the imash backend. Every flag can also be set as an
environment variable (IMASH_PROXY_<FLAG>, e.g. IMASH_PROXY_USER) or in a JSON
file given with --config. The password comes from --password-file or from
`+PasswordEnv+`.

Flags:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// Run is imash-proxy. It logs in, opens a session, serves the proxy on
// --listen until ctx ends, then closes the session and returns nil. Logs
// go to stderr; help goes to stdout. Every configuration problem is
// reported at once, as an error matching ErrUsage.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	probe := newFlagSet(&runFlags{})
	if err := probe.Parse(args); err != nil || probe.NArg() > 0 {
		if errors.Is(err, flag.ErrHelp) {
			Usage(stdout)
			return nil
		}
		if err == nil {
			err = fmt.Errorf("unexpected argument %q", probe.Arg(0))
		}
		Usage(stderr)
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	f := &runFlags{}
	fs := newFlagSet(f)
	var problems []string
	if err := cliconf.Parse(fs, args, "IMASH_PROXY", "config"); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	log, err := cliflag.NewLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		problems = append(problems, err.Error())
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	ccfg := clientlib.Config{MaxObjectBytes: f.maxObject, Log: log}
	for _, r := range []struct{ flag, v string }{{"--cert", f.cert}, {"--key", f.key}, {"--ca", f.ca}} {
		if r.v == "" {
			problems = append(problems, r.flag+" is required (issue a device certificate with \"imash-mws ca issue --role device\")")
		}
	}
	if f.cert != "" && f.key != "" && f.ca != "" {
		cert, pool, err := pki.LoadKeyPair(f.cert, f.key, f.ca)
		if err != nil {
			problems = append(problems, err.Error())
		} else if id, err := pki.IdentityFromCert(cert.Leaf); err != nil {
			problems = append(problems, fmt.Sprintf("--cert %s: %v", f.cert, err))
		} else if id.Role != pki.RoleDevice {
			problems = append(problems, fmt.Sprintf("--cert %s: certificate is for %s, want role device", f.cert, id))
		} else {
			ccfg.Certificate, ccfg.Roots = cert, pool
		}
	}
	if f.user == "" {
		problems = append(problems, "--user is required")
	}
	password, err := readPassword(f.passwordFile)
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, a := range []struct{ flag, v string }{{"--mws", f.mws}, {"--listen", f.listen}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			problems = append(problems, fmt.Sprintf("%s %q: %v", a.flag, a.v, err))
		}
	}
	if f.app == "" {
		problems = append(problems, "--app must not be empty")
	}
	if f.timeout < 0 {
		problems = append(problems, fmt.Sprintf("--timeout %v: want >= 0", f.timeout))
	}
	if f.grace <= 0 {
		problems = append(problems, fmt.Sprintf("--shutdown-grace %v: want > 0", f.grace))
	}
	if f.maxObject < 1 {
		problems = append(problems, fmt.Sprintf("--max-object-bytes %d: want at least 1", f.maxObject))
	}
	if f.maxHeader < 1<<10 {
		problems = append(problems, fmt.Sprintf("--max-header-bytes %d: want at least 1KiB", f.maxHeader))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: invalid configuration (\"imash-proxy -h\" lists the flags):\n  %s", ErrUsage, strings.Join(problems, "\n  "))
	}
	return serve(ctx, f, ccfg, password, log)
}

// readPassword reads the first line of path, or PasswordEnv if path is "".
func readPassword(path string) (string, error) {
	if path == "" {
		pw, ok := os.LookupEnv(PasswordEnv)
		if !ok || pw == "" {
			return "", errors.New("no password: give --password-file or set " + PasswordEnv)
		}
		return pw, nil
	}
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--password-file: %w", err)
	}
	defer fh.Close()
	line, err := bufio.NewReader(io.LimitReader(fh, 4<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("--password-file: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", fmt.Errorf("--password-file %s: the first line is empty", path)
	}
	return line, nil
}

func serve(ctx context.Context, f *runFlags, ccfg clientlib.Config, password string, log *slog.Logger) error {
	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer lis.Close()
	c, err := clientlib.Dial(ctx, f.mws, ccfg)
	if err != nil {
		return err
	}
	defer c.Close()
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := login(lctx, c, f.user, password, log); err != nil {
		return fmt.Errorf("log in as %s at %s: %w", f.user, f.mws, err)
	}
	sess, err := c.OpenSession(lctx, f.app, f.labels...)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	log.Info("session opened", "session", sess.ID(), "mws", c.MWS(), "device", c.Device(), "user", f.user)

	var mu sync.Mutex
	var lastLogin time.Time
	relogin := func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		// Requests failing together need one login, not one each.
		if time.Since(lastLogin) < 5*time.Second {
			return nil
		}
		if err := c.Login(ctx, f.user, password); err != nil {
			return err
		}
		lastLogin = time.Now()
		return nil
	}
	srv := &http.Server{
		Handler:           New(sess, Options{Timeout: f.timeout, Relogin: relogin, Log: log}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    f.maxHeader,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("proxy serving", "addr", lis.Addr().String())
	if f.readyFile != "" {
		if err := cliflag.WriteReadyFile(f.readyFile, lis.Addr().String()); err != nil {
			return errors.Join(err, shutdown(ctx, srv, served, sess, f.grace))
		}
		defer os.Remove(f.readyFile)
	}
	select {
	case err := <-served:
		return errors.Join(err, closeSession(ctx, sess, f.grace))
	case <-ctx.Done():
	}
	log.Info("shutting down", "session", sess.ID())
	return shutdown(ctx, srv, served, sess, f.grace)
}

// login logs in, waiting for an MWS that is not reachable yet (started at
// the same time as the proxy) until ctx ends. Any other refusal is final.
func login(ctx context.Context, c *clientlib.Client, user, password string, log *slog.Logger) error {
	for {
		err := c.Login(ctx, user, password)
		if err == nil || rpcerr.Code(err) != codes.Unavailable {
			return err
		}
		log.Warn("MWS not reachable yet; retrying", "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// shutdown stops taking requests, lets those in flight finish within
// grace, and closes the session at the MWS.
func shutdown(ctx context.Context, srv *http.Server, served <-chan error, sess *clientlib.Session, grace time.Duration) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := srv.Shutdown(cctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, closeSession(cctx, sess, grace))
}

func closeSession(ctx context.Context, sess *clientlib.Session, grace time.Duration) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := sess.Close(cctx); err != nil {
		return fmt.Errorf("close session: %w", err)
	}
	return nil
}
