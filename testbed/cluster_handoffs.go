package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/testbed/legacy"
)

// Devices of the handoff part: the source, a PDA (with the testbed PDA's
// profiles) on the first MWS; the CASH target on the same MWS; the FASH
// target on the second MWS.
const (
	handoffSource = "tablet"
	handoffNear   = "desk-1"
	handoffFar    = "desk-2"
)

// handoffNotes is the application object of the handoff part's savepoint.
var handoffNotes = bytes.Repeat([]byte("fracture healing well; next review in six weeks. "), 40)

// handoffImageMax bounds the image the handoff part's session holds: a
// mid-sized one, so that delivery does not dominate the timings.
const handoffImageMax = 256 << 10

// clusterHandoff is one handoff of the handoff part: the JSON records of
// "cluster.handoffs.handoffs".
type clusterHandoff struct {
	// Kind is "CASH" (the target device is on the source's MWS) or
	// "FASH" (it is served by another MWS).
	Kind    string `json:"kind"`
	From    string `json:"from"`
	FromMWS string `json:"from_mws"`
	To      string `json:"to"`
	ToMWS   string `json:"to_mws"`
	// The MWS's phases as the source learns them (clientlib.Timings);
	// MoveUS is the MASH within a FASH, 0 for a CASH.
	SkeletonUS    int64 `json:"skeleton_us"`
	StateUploadUS int64 `json:"state_upload_us"`
	MoveUS        int64 `json:"move_us"`
	AdaptationUS  int64 `json:"adaptation_us"`
	DeliveryUS    int64 `json:"delivery_us"`
	ResumeUS      int64 `json:"resume_us"`
	TotalUS       int64 `json:"total_us"`
	// ObservedUS is from the source's Handoff call until the target held
	// the session.
	ObservedUS int64 `json:"observed_us"`
	// StreamOffset is where the target resumed the raw stream: the bytes
	// the source had read.
	StreamOffset uint64 `json:"stream_offset"`
}

// handoffsResult is what the handoff part measured.
type handoffsResult struct {
	Handoffs []clusterHandoff `json:"handoffs"`
	// Image is the server object in the savepoint: ImageBytes at the
	// legacy server, SourceBytes the PDA's variant; each target received
	// the original from the MWS's copy.
	Image       string `json:"image"`
	ImageBytes  int    `json:"image_bytes"`
	SourceBytes int    `json:"source_bytes"`
	NotesBytes  int    `json:"notes_bytes"`
	// StreamBytes went each way through the raw stream, a third on each
	// device; ChecksumsOK says both directions' SHA-256 agreed at both
	// ends over LegacyStreamConns (1) legacy connections.
	StreamBytes       int64 `json:"stream_bytes"`
	ChecksumsOK       bool  `json:"checksums_ok"`
	LegacyStreamConns int64 `json:"legacy_stream_conns"`
	// LegacyRequests is what the legacy HTTP server received from the
	// first handoff until the FASH target held the session: 0, state
	// comes from the MWSs.
	LegacyRequests int64 `json:"legacy_requests"`
	// FinalDevice and FinalMWS hold the session at the end; TargetAnswered
	// says a Get through it there worked.
	FinalDevice    string `json:"final_device"`
	FinalMWS       string `json:"final_mws"`
	TargetAnswered bool   `json:"target_answered"`
}

// arrival is a handoff as its target saw it.
type arrival struct {
	r   *clientlib.Resumed
	err error
}

// runClusterHandoffs runs the handoff part: the PDA opens a session on the
// first MWS, fetches an image (its own variant), opens a raw stream and
// moves a third of it each way; the session goes by CASH to desk-1 on the
// same MWS, which moves the next third; then by FASH to desk-2, served by
// the second MWS, which moves the rest. Each target checks it received the
// original image, the notes and the stream at the right offset; both
// directions of the stream are checked end to end.
func runClusterHandoffs(ctx context.Context, env *testbedEnv, seed uint64) (res *handoffsResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*clusterWait)
	defer cancel()
	home, far := env.cluster.MWS[0].Name(), env.cluster.MWS[1].Name()
	res = &handoffsResult{StreamBytes: handoffStreamBytes, NotesBytes: len(handoffNotes)}
	pda, err := testbedProfiles("pda")
	if err != nil {
		return res, err
	}
	clients := map[string]*clientlib.Client{}
	defer func() {
		for _, c := range clients {
			err = errors.Join(err, c.Close())
		}
	}()
	for _, d := range []struct {
		name string
		at   int
		docs [][]byte
	}{{handoffSource, 0, pda}, {handoffNear, 0, nil}, {handoffFar, 1, nil}} {
		c, err := env.login(ctx, d.name, d.at, d.docs)
		if err != nil {
			return res, fmt.Errorf("device %s: %w", d.name, err)
		}
		clients[d.name] = c
	}

	// The targets serve offers until the part ends.
	arrived := map[string]chan arrival{}
	sctx, stopServing := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopServing(); wg.Wait() }()
	for _, name := range []string{handoffNear, handoffFar} {
		ch := make(chan arrival, 1)
		arrived[name] = ch
		c := clients[name]
		wg.Go(func() {
			_ = c.Serve(sctx, clientlib.Target{
				Resumed: func(r *clientlib.Resumed) { ch <- arrival{r: r} },
				Failed:  func(_ string, err error) { ch <- arrival{err: err} },
			})
		})
	}
	if err := waitDevicesAt(ctx, clients[handoffSource], map[string]string{handoffNear: home, handoffFar: far}); err != nil {
		return res, err
	}

	sess, err := clients[handoffSource].OpenSession(ctx, demoApp)
	if err != nil {
		return res, fmt.Errorf("open session: %w", err)
	}
	defer func() { err = errors.Join(err, closeSession(sess)) }()
	img := imageUpTo(env.images.Set(), handoffImageMax)
	res.Image, res.ImageBytes = img.Name, len(img.Bytes)
	obj, err := sess.Get(ctx, imagesBackend, "/images/"+img.Name)
	if err != nil {
		return res, fmt.Errorf("get %s: %w", img.Name, err)
	}
	if obj.Digest == "" {
		return res, fmt.Errorf("%s is not kept by the MWS", img.Name)
	}
	res.SourceBytes = len(obj.Body)

	conns0 := env.handoffStream.Accepted()
	conn, err := sess.Dial(ctx, handoffStreamBackend)
	if err != nil {
		return res, fmt.Errorf("dial %s: %w", handoffStreamBackend, err)
	}
	up, upSum, err := payload(seed+handoffUpSeed, handoffStreamBytes)
	if err != nil {
		conn.Close()
		return res, err
	}
	s := &thirds{up: up, down: sha256.New()}
	if err := s.next(conn); err != nil {
		conn.Close()
		return res, fmt.Errorf("%s: %w", handoffSource, err)
	}
	elements := []clientlib.Element{
		{Name: "image", Kind: clientlib.ServerObject, Digest: obj.Digest},
		{Name: "notes", Kind: clientlib.AppObject, ContentType: "text/plain", Data: handoffNotes},
	}
	provide := func(context.Context) ([]clientlib.Element, error) { return elements, nil }
	sess.SetSavepointProvider(provide)

	requests0 := env.images.Requests()
	from, fromMWS := handoffSource, home
	for _, step := range []struct{ kind, to, toMWS string }{{"CASH", handoffNear, home}, {"FASH", handoffFar, far}} {
		t0 := time.Now()
		out, err := sess.Handoff(ctx, step.to)
		if err != nil {
			conn.Close()
			return res, fmt.Errorf("%s from %s to %s: %w", step.kind, from, step.to, err)
		}
		var a arrival
		select {
		case a = <-arrived[step.to]:
		case <-ctx.Done():
			conn.Close()
			return res, fmt.Errorf("%s to %s: the target did not get the session: %w", step.kind, step.to, ctx.Err())
		}
		observed := time.Since(t0)
		conn.Detach() // the stream went with the session: the target resumes it
		if a.err != nil {
			return res, fmt.Errorf("%s to %s: target: %w", step.kind, step.to, a.err)
		}
		// From here the session and its stream are the target's.
		sess = a.r.Session
		el, err := checkHandoffArrival(a.r, img, obj.Digest, s.read)
		if err != nil {
			return res, fmt.Errorf("%s to %s: %w", step.kind, step.to, err)
		}
		if got := sess.MWS(); got != step.toMWS {
			return res, fmt.Errorf("%s to %s: the session is on %s, want %s", step.kind, step.to, got, step.toMWS)
		}
		t := out.Timings
		res.Handoffs = append(res.Handoffs, clusterHandoff{
			Kind: step.kind, From: from, FromMWS: fromMWS, To: step.to, ToMWS: step.toMWS,
			SkeletonUS: us(t.Skeleton), StateUploadUS: us(t.StateUpload), MoveUS: us(t.Move), AdaptationUS: us(t.Adaptation),
			DeliveryUS: us(t.Delivery), ResumeUS: us(t.Resume), TotalUS: us(t.Total), ObservedUS: us(observed),
			StreamOffset: el.StreamOffset,
		})
		if conn, err = a.r.Conn(ctx, el); err != nil {
			return res, fmt.Errorf("%s to %s: resuming the stream: %w", step.kind, step.to, err)
		}
		if err := s.next(conn); err != nil {
			conn.Close()
			return res, fmt.Errorf("%s: %w", step.to, err)
		}
		sess.SetSavepointProvider(provide)
		from, fromMWS = step.to, step.toMWS
	}
	defer conn.Close()
	res.LegacyRequests = env.images.Requests() - requests0
	res.FinalDevice, res.FinalMWS = from, sess.MWS()
	if s.read != handoffStreamBytes || s.written != handoffStreamBytes {
		return res, fmt.Errorf("the stream moved %d bytes down and %d up, want %d each", s.read, s.written, handoffStreamBytes)
	}
	var downSum [32]byte
	s.down.Sum(downSum[:0])
	if err := waitStreamConn(ctx, env.handoffStream, int(conns0), handoffStreamBytes, upSum, handoffStreamBytes, downSum); err != nil {
		return res, err
	}
	res.ChecksumsOK = true
	if res.LegacyStreamConns = env.handoffStream.Accepted() - conns0; res.LegacyStreamConns != 1 {
		return res, fmt.Errorf("the legacy stream server accepted %d connections, want 1", res.LegacyStreamConns)
	}
	if res.LegacyRequests != 0 {
		return res, fmt.Errorf("the legacy HTTP server saw %d requests during the handoffs; state must come from the MWSs", res.LegacyRequests)
	}
	if err := getImage(ctx, sess, img); err != nil {
		return res, fmt.Errorf("%s after the FASH: %w", from, err)
	}
	res.TargetAnswered = true
	return res, nil
}

// thirds moves a raw stream a third at a time each way, one third per
// device; the last third ends with a half-close and the server's EOF.
type thirds struct {
	up            []byte
	written, read int64
	down          hash.Hash
	step          int
}

func (s *thirds) next(c *clientlib.Conn) error {
	s.step++
	n := int64(len(s.up))
	upTo, downTo := n*int64(s.step)/3+int64(s.step)*7, n*int64(s.step)/3+int64(s.step)*13
	if s.step == 3 {
		upTo, downTo = n, n
	}
	if _, err := c.Write(s.up[s.written:upTo]); err != nil {
		return fmt.Errorf("stream write: %w", err)
	}
	s.written = upTo
	got, err := io.CopyN(s.down, c, downTo-s.read)
	s.read += got
	if err != nil {
		return fmt.Errorf("stream read at %d: %w", s.read, err)
	}
	if s.step < 3 {
		return nil
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("stream close write: %w", err)
	}
	if extra, err := io.Copy(io.Discard, c); err != nil || extra != 0 {
		return fmt.Errorf("%w: %d bytes after the stream's end (%v)", ErrMismatch, extra, err)
	}
	return nil
}

// checkHandoffArrival checks a target's elements: the original image from
// the MWS's copy, the notes, and the stream at offset read. It returns
// the stream's element.
func checkHandoffArrival(r *clientlib.Resumed, img *legacy.Image, digest string, read int64) (clientlib.DeliveredElement, error) {
	var stream clientlib.DeliveredElement
	seen := map[string]bool{}
	for _, e := range r.Elements {
		seen[e.Name] = true
		switch e.Kind {
		case clientlib.ServerObject:
			if e.Digest != digest || e.Adapted || !bytes.Equal(e.Data, img.Bytes) {
				return stream, fmt.Errorf("%w: image: %s (adapted %v, digest %s), want the original %s", ErrMismatch, describe(e.Data), e.Adapted, e.Digest, describe(img.Bytes))
			}
		case clientlib.AppObject:
			if !bytes.Equal(e.Data, handoffNotes) {
				return stream, fmt.Errorf("%w: notes: %s", ErrMismatch, describe(e.Data))
			}
		case clientlib.StreamState:
			stream = e
		}
	}
	if !seen["image"] || !seen["notes"] || stream.StreamID == "" {
		return stream, fmt.Errorf("elements %v arrived, want image, notes and a stream", seen)
	}
	if stream.StreamOffset != uint64(read) {
		return stream, fmt.Errorf("the stream resumes at %d, the source had read %d", stream.StreamOffset, read)
	}
	return stream, nil
}

// imageUpTo returns the largest image of at most max bytes, or the
// smallest if none is that small.
func imageUpTo(set *legacy.ImageSet, max int) *legacy.Image {
	var best *legacy.Image
	for _, img := range set.Images() {
		if len(img.Bytes) <= max && (best == nil || len(img.Bytes) > len(best.Bytes)) {
			best = img
		}
	}
	if best == nil {
		return smallestImage(set)
	}
	return best
}

// waitDevicesAt polls c's device list until each device of want is online
// at its MWS.
func waitDevicesAt(ctx context.Context, c *clientlib.Client, want map[string]string) error {
	deadline := time.Now().Add(clusterWait)
	for {
		list, err := c.Devices(ctx)
		if err != nil {
			return err
		}
		ready := 0
		for _, d := range list {
			if at, ok := want[d.Name]; ok && d.Online && d.MWS == at {
				ready++
			}
		}
		if ready == len(want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: devices %v are not online where expected: %+v", errTimeout, want, list)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}
