package mux

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/imashproject/imash/internal/cliconf"
	"github.com/imashproject/imash/internal/cliflag"
	"github.com/imashproject/imash/internal/pki"
)

// Run is imash-mux: it parses args (flags, IMASH_MUX_* environment
// variables, an optional --config JSON file), serves until ctx ends, then
// shuts down gracefully.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	def := NewDefaultConfig()
	fs := flag.NewFlagSet("imash-mux", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var backends cliconf.List
	listen := fs.String("listen", "127.0.0.1:7700", "address to serve MWSs on")
	fs.Var(&backends, "backend", "legacy backend NAME=HOST:PORT (repeatable)")
	certFile := fs.String("cert", "", "this mux's certificate (PEM, role mux)")
	keyFile := fs.String("key", "", "this mux's private key (PEM)")
	caFile := fs.String("ca", "", "the cluster CA certificate (PEM)")
	retention := fs.Int("retention", def.Retention, "bytes retained per stream for its owner before the legacy server is held back")
	upQueue := fs.Int("up-queue", def.UpQueue, "bytes queued per stream towards the legacy server before the owner is held back")
	maxChunk := fs.Int("max-chunk", def.MaxChunk, "largest data message in bytes")
	maxStreams := fs.Int("max-streams", def.MaxStreams, "most streams held at once")
	orphan := fs.Duration("orphan-timeout", def.OrphanTimeout, "how long a stream without an attached owner is kept")
	standby := fs.Duration("standby-timeout", def.StandbyTimeout, "how long an MWS about to be handed a stream may wait attached for the handover")
	dial := fs.Duration("dial-timeout", def.DialTimeout, "timeout for connecting to a legacy server")
	grace := fs.Duration("shutdown-grace", def.ShutdownGrace, "how long shutdown waits for calls in flight")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	fs.String("config", "", "JSON config file whose keys are these flag names")
	if err := cliconf.Parse(fs, args, "IMASH_MUX", "config"); err != nil {
		return err
	}

	log, err := cliflag.NewLogger(stderr, *logLevel, *logFormat)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	cfg := def
	cfg.Retention, cfg.UpQueue, cfg.MaxChunk, cfg.MaxStreams = *retention, *upQueue, *maxChunk, *maxStreams
	cfg.OrphanTimeout, cfg.StandbyTimeout, cfg.DialTimeout, cfg.ShutdownGrace = *orphan, *standby, *dial, *grace
	for _, b := range backends {
		pb, err := ParseBackend(b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cfg.Backends = append(cfg.Backends, pb)
	}
	if *certFile == "" || *keyFile == "" || *caFile == "" {
		errs = append(errs, errors.New("--cert, --key and --ca are required (issue them with `imash-mws ca`)"))
	} else {
		cert, pool, err := pki.LoadKeyPair(*certFile, *keyFile, *caFile)
		if err != nil {
			errs = append(errs, err)
		} else {
			cfg.TLS = pki.ServerTLS(cert, pool)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	srv, err := New(cfg, log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("imash-mux: listen: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	return srv.Close(context.WithoutCancel(ctx))
}
