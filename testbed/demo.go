package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// Names of the demo's legacy backends, user and devices.
const (
	imagesBackend = "images" // the legacy HTTP image server
	sourceBackend = "source" // a legacy TCP server that sends a stream
	sinkBackend   = "sink"   // a legacy TCP server that reads a stream
	demoUser      = "demo"
	demoPassword  = "demo-password"
	demoApp       = "minibrowser"
)

// demoDevices are the demo's two devices, in the order they browse.
var demoDevices = [2]string{"workstation", "pda"}

// closeTimeout bounds the testbed's teardown.
const closeTimeout = 10 * time.Second

// testbedEnv is a running in-process testbed: legacy servers, the cluster
// (CA, mux, cfg.MWSs MWSs) and the logged-in devices.
type testbedEnv struct {
	images       *legacy.HTTPServer
	source, sink *legacy.StreamServer // nil when the stream phase is off
	// mashStream, echo and handoffStream are the cluster phase's legacy
	// servers; nil with one MWS.
	mashStream, handoffStream *legacy.StreamServer
	echo                      *legacy.EchoServer
	cluster                   *cluster.Cluster
	devices                   map[string]*device
}

// startTestbed starts the legacy servers, the cluster and the devices. On
// error everything started is stopped.
func startTestbed(ctx context.Context, cfg demoConfig, set *legacy.ImageSet, log *slog.Logger) (env *testbedEnv, err error) {
	env = &testbedEnv{devices: make(map[string]*device)}
	defer func() {
		if err != nil {
			_ = env.close()
		}
	}()
	env.images, err = legacy.NewHTTPServer(set, legacy.HTTPOptions{Logger: log.With("component", "legacy-http")})
	if err != nil {
		return env, err
	}
	backends := map[string]string{imagesBackend: env.images.Addr()}
	if cfg.StreamMiB > 0 {
		env.source, err = legacy.NewStreamServer(legacy.StreamConfig{SendBytes: int64(cfg.StreamMiB) << 20, Seed: cfg.Seed, CloseWriteAfterSend: true})
		if err != nil {
			return env, err
		}
		env.sink, err = legacy.NewStreamServer(legacy.StreamConfig{})
		if err != nil {
			return env, err
		}
		backends[sourceBackend], backends[sinkBackend] = env.source.Addr(), env.sink.Addr()
	}
	if cfg.MWSs > 1 {
		if err := env.startClusterBackends(cfg.Seed, backends); err != nil {
			return env, err
		}
	}
	env.cluster, err = cluster.Start(cluster.Options{
		Backends:     backends,
		HTTPBackends: []string{imagesBackend},
		Users:        map[string]string{demoUser: demoPassword},
		MWSs:         cfg.MWSs,
		TuneMWS: func(c *mws.Config) {
			c.ProbeInterval = demoProbeInterval
			// The drained MWS and its peers hold the drain's sessions
			// beside the user's others.
			c.MaxSessionsPerUser += cfg.DrainSessions
		},
		Log: log,
	})
	if err != nil {
		return env, fmt.Errorf("starting the cluster: %w", err)
	}
	for _, name := range demoDevices {
		d, err := env.connect(ctx, name)
		if err != nil {
			return env, fmt.Errorf("device %s: %w", name, err)
		}
		env.devices[name] = d
	}
	return env, nil
}

// connect gives device name its own certificate, logs the demo user in at
// the first MWS and opens a session; its direct baseline gets its own
// keep-alive HTTP client.
func (e *testbedEnv) connect(ctx context.Context, name string) (*device, error) {
	c, err := e.login(ctx, name, 0, nil)
	if err != nil {
		return nil, err
	}
	d := &device{name: name, client: c, direct: &http.Client{Transport: &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1,
	}}}
	if d.session, err = c.OpenSession(ctx, demoApp); err != nil {
		c.Close()
		return nil, fmt.Errorf("open session: %w", err)
	}
	return d, nil
}

// login gives device name its own certificate, dials the MWS of index
// mwsIndex with the profile documents docs (none: the MWS's defaults) and
// logs the demo user in.
func (e *testbedEnv) login(ctx context.Context, name string, mwsIndex int, docs [][]byte) (*clientlib.Client, error) {
	cert, roots, err := e.cluster.DeviceCert(name)
	if err != nil {
		return nil, err
	}
	c, err := clientlib.Dial(ctx, e.cluster.MWSAddrs[mwsIndex], clientlib.Config{Certificate: cert, Roots: roots, Profiles: docs})
	if err != nil {
		return nil, err
	}
	if err := c.Login(ctx, demoUser, demoPassword); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	return c, nil
}

// warmUp fetches the legacy server's index once per device through imash
// and directly, so that connection set-up (TLS to the MWS, the MWS's and
// the devices' first legacy connections) is not charged to the first
// measured request, and checks that it lists the served images.
func (e *testbedEnv) warmUp(ctx context.Context) error {
	want := e.images.Set().Len()
	for _, name := range demoDevices {
		d := e.devices[name]
		obj, err := d.session.Get(ctx, imagesBackend, "/index")
		if err != nil {
			return fmt.Errorf("warm-up: %s: imash: %w", name, err)
		}
		direct, _, err := fetchDirect(ctx, d.direct, e.images.URL("/index"))
		if err != nil {
			return fmt.Errorf("warm-up: %s: %w", name, err)
		}
		if !bytes.Equal(obj.Body, direct) {
			return fmt.Errorf("%w: warm-up: %s: /index through imash is %s, directly %s", ErrMismatch, name, describe(obj.Body), describe(direct))
		}
		if got := bytes.Count(direct, []byte("\n")); got != want {
			return fmt.Errorf("warm-up: /index lists %d images, want %d", got, want)
		}
	}
	return nil
}

// close stops the devices, the cluster and the legacy servers.
func (e *testbedEnv) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	for _, name := range demoDevices {
		d := e.devices[name]
		if d == nil {
			continue
		}
		if err := d.session.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("device %s: close session: %w", name, err))
		}
		if err := d.client.Close(); err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", name, err))
		}
		d.direct.CloseIdleConnections()
	}
	if e.cluster != nil {
		if err := e.cluster.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cluster: %w", err))
		}
	}
	if e.images != nil {
		errs = append(errs, e.images.Close())
	}
	for _, s := range []*legacy.StreamServer{e.source, e.sink, e.mashStream, e.handoffStream} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if e.echo != nil {
		errs = append(errs, e.echo.Close())
	}
	return errors.Join(errs...)
}

// demoResult is everything the report needs.
type demoResult struct {
	cfg      demoConfig
	set      *legacy.ImageSet
	plan     []request
	records  []record
	streams  []streamResult
	handoffs *handoffResult
	// linkObject is the image of the links phase and links its results.
	linkObject *legacy.Image
	links      []linkResult
	// cluster is the cluster phase's results.
	cluster *clusterResult
	// workload counts what the servers saw during the workload; final
	// is every counter after the links phase (the cluster phase reports
	// its own).
	workload, final counters
	phases          phases
}

// phases are the wall-clock durations of the demo's steps.
type phases struct {
	generate, start, workload, streams, handoffs, links, cluster, total time.Duration
}

// runDemo is the demo command: build the testbed, run the workload and
// the raw streams, report.
func runDemo(ctx context.Context, cfg demoConfig, stdout, stderr io.Writer) (err error) {
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("demo interrupted: %w", err)
		}
	}()
	began := time.Now()
	level := slog.LevelWarn
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	res := &demoResult{cfg: cfg}

	fmt.Fprintf(stderr, "imash-testbed: generating %d images (seed %d)…\n", cfg.Images, cfg.Seed)
	res.set, err = legacy.GenerateImages(cfg.Seed, cfg.Images, MinObjectBytes, MaxObjectBytes)
	if err != nil {
		return fmt.Errorf("generating images: %w", err)
	}
	res.phases.generate = time.Since(began)
	if err := ctx.Err(); err != nil {
		return err
	}

	mark := time.Now()
	env, err := startTestbed(ctx, cfg, res.set, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := env.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tearing the testbed down: %w", cerr))
		}
	}()
	if err := env.warmUp(ctx); err != nil {
		return err
	}
	res.phases.start = time.Since(mark)

	var mean time.Duration
	if cfg.Paced {
		mean = cfg.MeanDelay
	}
	res.plan = planWorkload(res.set.Images(), workloadOptions{Devices: demoDevices, Seed: cfg.Seed, MeanDelay: mean})
	fmt.Fprintf(stderr, "imash-testbed: %d requests, each through imash and directly…\n", len(res.plan))
	before := env.snapshot()
	mark = time.Now()
	res.records, err = runWorkload(ctx, res.plan, env.devices, env.images)
	res.phases.workload = time.Since(mark)
	res.workload = env.snapshot().since(before)
	if err != nil {
		return errors.Join(err, res.writeJSON())
	}

	if cfg.StreamMiB > 0 {
		fmt.Fprintf(stderr, "imash-testbed: raw streams, %d MiB each way per path…\n", cfg.StreamMiB)
		mark = time.Now()
		res.streams, err = runStreams(ctx, cfg, env)
		res.phases.streams = time.Since(mark)
		if err != nil {
			return errors.Join(err, res.writeJSON())
		}
	}
	if cfg.Handoffs > 0 {
		fmt.Fprintf(stderr, "imash-testbed: %d handoffs between %s and %s…\n", cfg.Handoffs, demoDevices[0], demoDevices[1])
		mark = time.Now()
		res.handoffs, err = runHandoffs(ctx, env, cfg.Handoffs)
		res.phases.handoffs = time.Since(mark)
		if err != nil {
			return errors.Join(err, res.writeJSON())
		}
	}
	res.linkObject = linkObject(res.set)
	state := "on"
	if !cfg.Links {
		state = "off"
	}
	fmt.Fprintf(stderr, "imash-testbed: links %s: workstation, desktop, laptop and pda fetch %s…\n", state, res.linkObject.Name)
	mark = time.Now()
	res.links, err = runLinks(ctx, env, cfg.Links, res.linkObject, log)
	res.phases.links = time.Since(mark)
	if err != nil {
		return errors.Join(err, res.writeJSON())
	}
	res.final = env.snapshot()
	if cfg.MWSs > 1 {
		fmt.Fprintf(stderr, "imash-testbed: cluster of %d MWSs: %d MASH moves, FASH beside CASH, drain of %d sessions…\n", cfg.MWSs, cfg.MASHMoves, cfg.DrainSessions)
	}
	mark = time.Now()
	res.cluster, err = runCluster(ctx, env, cfg)
	res.phases.cluster = time.Since(mark)
	if err != nil {
		return errors.Join(err, res.writeJSON())
	}
	res.phases.total = time.Since(began)
	res.writeReport(stdout)
	return res.writeJSON()
}

// runStreams times the raw streams of the workstation's session; which
// path goes first in each direction is seeded.
func runStreams(ctx context.Context, cfg demoConfig, env *testbedEnv) ([]streamResult, error) {
	b, err := newStreamBench(env.source, env.sink, env.devices[demoDevices[0]].session, cfg.StreamMiB, cfg.Seed)
	if err != nil {
		return nil, err
	}
	return b.run(ctx, [2]bool{cfg.Seed%2 == 0, cfg.Seed%2 == 1})
}
