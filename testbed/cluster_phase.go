package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/testbed/legacy"
)

// The cluster phase runs with two or more MWSs, after the links phase, in
// three parts, each with devices of its own:
//
//   - MASH (cluster_mash.go): the operator moves one session among the MWSs again
//     and again, at random points of a raw-stream transfer both ways, while
//     the app does back-to-back round trips on a second stream (the stall
//     it sees) and a Get between moves;
//   - handoffs (cluster_handoffs.go): a session holding an image and a raw stream
//     mid-transfer goes by CASH to a device on the same MWS, then by FASH
//     to a device served by the second MWS;
//   - drain (cluster_drain.go): the last MWS, holding --drain-sessions sessions,
//     is drained, and every session must answer at a peer.

// Backends of the cluster phase, started only with two or more MWSs.
const (
	mashStreamBackend    = "mash-stream"    // a legacy stream server: the MASH part's bulk transfer
	echoBackend          = "echo"           // a legacy echo server: the MASH part's round trips
	handoffStreamBackend = "handoff-stream" // a legacy stream server: the handoff part's stream
)

// Sizes of the cluster phase's transfers, each way.
const (
	mashStreamBytes    = 4 << 20
	handoffStreamBytes = 1 << 20
)

// clusterWait bounds each wait of the cluster phase for something that
// does not depend on how many moves or sessions it was asked for: a device
// coming online, a handoff arriving, an echo round trip.
const clusterWait = time.Minute

// Seeds of the cluster phase's payloads, added to --seed.
const (
	mashDownSeed = 101 + iota
	mashUpSeed
	handoffDownSeed
	handoffUpSeed
)

// clusterResult is what the cluster phase measured: "cluster" in --json.
type clusterResult struct {
	// MWSs names the cluster's MWSs.
	MWSs []string `json:"mws"`
	// Skipped says why the phase did not run (one MWS); the parts are
	// then nil.
	Skipped string `json:"skipped,omitempty"`
	// MASH is nil with --mash-moves 0, Drain with --drain-sessions 0.
	MASH     *mashResult     `json:"mash"`
	Handoffs *handoffsResult `json:"handoffs"`
	Drain    *drainResult    `json:"drain"`
}

// startClusterBackends starts the cluster phase's legacy servers and adds
// them to backends.
func (e *testbedEnv) startClusterBackends(seed uint64, backends map[string]string) (err error) {
	if e.mashStream, err = legacy.NewStreamServer(legacy.StreamConfig{SendBytes: mashStreamBytes, Seed: seed + mashDownSeed, CloseWriteAfterSend: true}); err != nil {
		return err
	}
	if e.handoffStream, err = legacy.NewStreamServer(legacy.StreamConfig{SendBytes: handoffStreamBytes, Seed: seed + handoffDownSeed, CloseWriteAfterSend: true}); err != nil {
		return err
	}
	if e.echo, err = legacy.NewEchoServer(); err != nil {
		return err
	}
	backends[mashStreamBackend] = e.mashStream.Addr()
	backends[handoffStreamBackend] = e.handoffStream.Addr()
	backends[echoBackend] = e.echo.Addr()
	return nil
}

// runCluster runs the cluster phase; with one MWS it only says so. On an
// error the result holds the parts that completed.
func runCluster(ctx context.Context, env *testbedEnv, cfg demoConfig) (*clusterResult, error) {
	res := &clusterResult{}
	for _, s := range env.cluster.MWS {
		res.MWSs = append(res.MWSs, s.Name())
	}
	if len(res.MWSs) < 2 {
		res.Skipped = fmt.Sprintf("--mws %d: MASH, FASH and drain need at least 2 MWSs", len(res.MWSs))
		return res, nil
	}
	var err error
	if cfg.MASHMoves > 0 {
		if res.MASH, err = runMASH(ctx, env, cfg.MASHMoves, cfg.Seed); err != nil {
			return res, fmt.Errorf("cluster: MASH: %w", err)
		}
	}
	if res.Handoffs, err = runClusterHandoffs(ctx, env, cfg.Seed); err != nil {
		return res, fmt.Errorf("cluster: handoffs: %w", err)
	}
	if cfg.DrainSessions > 0 {
		if res.Drain, err = runDrain(ctx, env, cfg.DrainSessions); err != nil {
			return res, fmt.Errorf("cluster: drain: %w", err)
		}
	}
	return res, nil
}

// payload returns n bytes of legacy.RandomStream(seed) and their SHA-256.
func payload(seed uint64, n int) ([]byte, [32]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(legacy.RandomStream(seed), b); err != nil {
		return nil, [32]byte{}, err
	}
	return b, sha256.Sum256(b), nil
}

// smallestImage is the image the cluster phase's Gets fetch between and
// after moves: the cheapest proof that a session answers.
func smallestImage(set *legacy.ImageSet) *legacy.Image {
	var best *legacy.Image
	for _, img := range set.Images() {
		if best == nil || len(img.Bytes) < len(best.Bytes) {
			best = img
		}
	}
	return best
}

// getImage fetches img through sess and checks it is the original.
func getImage(ctx context.Context, sess *clientlib.Session, img *legacy.Image) error {
	obj, err := sess.Get(ctx, imagesBackend, "/images/"+img.Name)
	if err != nil {
		return fmt.Errorf("get %s: %w", img.Name, err)
	}
	if obj.Adapted || !bytes.Equal(obj.Body, img.Bytes) {
		return fmt.Errorf("%w: get %s: %s, the image is %s", ErrMismatch, img.Name, describe(obj.Body), describe(img.Bytes))
	}
	return nil
}

// waitStreamConn waits for the legacy stream connection of index i of srv
// to finish and checks that it received up (whose SHA-256 is upSum) and
// that the device read exactly what it sent (downSum over downBytes).
func waitStreamConn(ctx context.Context, srv *legacy.StreamServer, i int, upBytes int64, upSum [32]byte, downBytes int64, downSum [32]byte) error {
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	lc, err := srv.WaitConn(ctx, i)
	if err != nil {
		return err
	}
	select {
	case <-lc.Done():
	case <-ctx.Done():
		return fmt.Errorf("the legacy stream did not finish: %w", ctx.Err())
	}
	if err := lc.Err(); err != nil {
		return fmt.Errorf("legacy server: %w", err)
	}
	if rs := lc.ReceivedSum(); lc.Received() != upBytes || rs != upSum {
		return fmt.Errorf("%w: up: sent %d bytes (sha256 %x…), the legacy server received %d (sha256 %x…)", ErrMismatch, upBytes, upSum[:8], lc.Received(), rs[:8])
	}
	if ss := lc.SentSum(); lc.Sent() != downBytes || ss != downSum {
		return fmt.Errorf("%w: down: the legacy server sent %d bytes (sha256 %x…), the device read %d (sha256 %x…)", ErrMismatch, lc.Sent(), ss[:8], downBytes, downSum[:8])
	}
	return nil
}

// closeSession closes sess with a bounded wait, for deferred cleanup.
func closeSession(sess *clientlib.Session) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return sess.Close(ctx)
}

// errTimeout is the error of a bounded wait that ran out.
var errTimeout = errors.New("timed out")

// us is a duration in whole microseconds, for the JSON records.
func us(d time.Duration) int64 { return d.Microseconds() }
