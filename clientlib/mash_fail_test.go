package clientlib_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/legacy"
)

// operatorAPI is the Operator API of the MWS of index mwsIndex, called with
// an operator certificate.
func operatorAPI(t testing.TB, e *mashEnv, mwsIndex int) mwsv1.OperatorClient {
	t.Helper()
	cert, err := e.cl.OperatorCert("ops")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.cl.MWSAddrs[mwsIndex],
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(cert, e.cl.CA.Pool(), pki.RoleMWS))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return mwsv1.NewOperatorClient(cc)
}

// rawDevice is the Device API of one MWS, called below clientlib with a
// device's certificate.
type rawDevice struct {
	api  mwsv1.DeviceClient
	cred string
}

func dialRaw(t testing.TB, e *mashEnv, name string, mwsIndex int) *rawDevice {
	t.Helper()
	cert, roots, err := e.cl.DeviceCert(name)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.cl.MWSAddrs[mwsIndex],
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(cert, roots, pki.RoleMWS))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &rawDevice{api: mwsv1.NewDeviceClient(cc)}
}

// login logs the user in; later calls carry the credential.
func (d *rawDevice) login(t testing.TB, ctx context.Context) {
	t.Helper()
	r, err := d.api.Login(ctx, &mwsv1.LoginRequest{User: "doc", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	d.cred = r.GetCredential()
}

// redirect asks for the session id with a Get and returns the
// SESSION_MOVED metadata the MWS answers with: where the session went and
// the move token its device is to present there.
func (d *rawDevice) redirect(t testing.TB, ctx context.Context, id string) map[string]string {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.cred)
	st, err := d.api.Get(ctx, &mwsv1.GetRequest{SessionId: id, Backend: "images", Path: "/index"})
	if err == nil {
		_, err = st.Recv()
	}
	if rpcerr.Reason(err) != "SESSION_MOVED" {
		t.Fatalf("asking a moved session's old MWS: %v", err)
	}
	m := rpcerr.Meta(err)
	if m["token"] == "" || m["session_id"] != id {
		t.Fatalf("redirect without a token: %v", m)
	}
	return m
}

// cutRelay is a TCP relay in front of an address: it forwards every
// connection and counts the bytes sent towards the address, on all
// connections together; once more than limit of them would have passed, it
// closes its listener and every connection instead of forwarding them.
// Once more than holdAfter of them have passed, it stops relaying the
// bytes coming back (it drops them).
type cutRelay struct {
	ln        net.Listener
	target    string
	limit     int64
	holdAfter atomic.Int64
	sent      atomic.Int64
	cut       chan struct{} // closed by the cut
	once      sync.Once
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

func newCutRelay(t testing.TB, target string, limit int64) *cutRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &cutRelay{ln: ln, target: target, limit: limit, cut: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	r.holdAfter.Store(math.MaxInt64)
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		r.cutAll()
		r.wg.Wait()
	})
	return r
}

func (r *cutRelay) Addr() string { return r.ln.Addr().String() }

func (r *cutRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		if !r.track(c, u) {
			return
		}
		r.wg.Add(2)
		go func() { // towards the target, counted
			defer r.wg.Done()
			buf := make([]byte, 16<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if r.sent.Add(int64(n)) > r.limit {
						r.cutAll()
						return
					}
					if _, werr := u.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					u.Close()
					return
				}
			}
		}()
		go func() { // back, until held
			defer r.wg.Done()
			defer c.Close()
			buf := make([]byte, 16<<10)
			for {
				n, err := u.Read(buf)
				if n > 0 && r.sent.Load() <= r.holdAfter.Load() {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// track records a relayed pair; false when the relay was cut meanwhile.
func (r *cutRelay) track(c, u net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.cut:
		c.Close()
		u.Close()
		return false
	default:
	}
	r.conns[c], r.conns[u] = struct{}{}, struct{}{}
	return true
}

// cutAll closes the listener and every connection.
func (r *cutRelay) cutAll() {
	r.once.Do(func() {
		r.mu.Lock()
		close(r.cut)
		r.ln.Close()
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
	})
}

func (r *cutRelay) wasCut() bool {
	select {
	case <-r.cut:
		return true
	default:
		return false
	}
}

// gatedStreamLoad writes the first half of upData and reads the first half
// of the down bytes on conn, closes mid, waits for resume, then writes and
// reads the rest (half-closing after the last write). Everything read goes
// into h.
func gatedStreamLoad(wg *sync.WaitGroup, conn *clientlib.Conn, upData []byte, down int64, h io.Writer, mid func(), resume <-chan struct{}, errs chan<- error) {
	var halves sync.WaitGroup
	halves.Add(2)
	go func() {
		halves.Wait()
		mid()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		half := len(upData) / 2
		write := func(p []byte) error {
			for len(p) > 0 {
				n := min(len(p), 64<<10)
				if _, err := conn.Write(p[:n]); err != nil {
					return fmt.Errorf("write: %w", err)
				}
				p = p[n:]
			}
			return nil
		}
		err := write(upData[:half])
		halves.Done()
		if err != nil {
			errs <- err
			return
		}
		<-resume
		if err := write(upData[half:]); err != nil {
			errs <- err
			return
		}
		if err := conn.CloseWrite(); err != nil {
			errs <- err
		}
	}()
	go func() {
		defer wg.Done()
		_, err := io.CopyN(h, conn, down/2)
		halves.Done()
		if err != nil {
			errs <- fmt.Errorf("read: %w", err)
			return
		}
		<-resume
		if _, err := io.Copy(h, conn); err != nil {
			errs <- fmt.Errorf("read: %w", err)
		}
	}()
}

// getAll fetches every image of the set through sess and checks the bodies.
func getAll(t testing.TB, ctx context.Context, e *mashEnv, sess *clientlib.Session) int {
	t.Helper()
	n := 0
	for _, img := range e.set.Images() {
		obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
		if err != nil {
			t.Fatalf("get %s on %s: %v", img.Name, sess.MWS(), err)
		}
		if !bytes.Equal(obj.Body, img.Bytes) {
			t.Fatalf("get %s: body differs", img.Name)
		}
		n += len(obj.Body)
	}
	return n
}

// TestMASHTargetDiesMidMove: the target MWS is reached through a relay that
// cuts every connection once more than cutAfter bytes were sent towards
// it: more than asking it (PrepareMove) takes, much less than the
// session's objects (a few hundred KB) that are shipped next, so the
// target becomes unreachable after it accepted the move, during the state
// ship. The operator's Move
// gets a typed error; the session stays at the source and keeps working,
// its open raw stream included (same legacy connection, same bytes both
// ways); other sessions are untouched; the target frees the skeleton it
// had prepared, and a later move to it succeeds.
func TestMASHTargetDiesMidMove(t *testing.T) {
	const down = 8 << 20
	const cutAfter = 48 << 10
	e := newMASHEnv(t, down, func(c *mws.Config) { c.Cluster.MoveTimeout = 8 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := e.device(t, "laptop", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	if state := getAll(t, ctx, e, sess); state < 3*cutAfter {
		t.Fatalf("the session holds %d bytes of objects: too few to be cut during the state ship", state)
	}
	// Bystanders: another session at the source, and one at the target.
	other, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	desk := e.device(t, "desk", 1)
	atTarget, err := desk.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	for _, s := range []*clientlib.Session{other, atTarget} {
		if _, err := s.Get(ctx, "images", "/images/"+img.Name); err != nil {
			t.Fatal(err)
		}
	}

	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	upData := make([]byte, 2<<20)
	if _, err := io.ReadFull(legacy.RandomStream(11), upData); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	h := sha256.New()
	mid := make(chan struct{})
	resume := make(chan struct{})
	gatedStreamLoad(&wg, conn, upData, down, h, func() { close(mid) }, resume, errs)
	select {
	case <-mid:
	case err := <-errs:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("stream stalled before the move")
	}

	// The source now reaches mws-2 through the relay.
	relay := newCutRelay(t, e.cl.MWSAddrs[1], cutAfter)
	e.cl.Peers.Add("mws-2", relay.Addr())
	op := operatorAPI(t, e, 0)
	_, err = op.Move(ctx, &mwsv1.MoveRequest{SessionId: sess.ID(), To: "mws-2"})
	if !relay.wasCut() {
		t.Fatalf("the move ended before the relay cut (%d bytes relayed): %v", relay.sent.Load(), err)
	}
	if rpcerr.Code(err) != codes.Unavailable || rpcerr.Reason(err) != "PEER_UNAVAILABLE" {
		t.Fatalf("move to a target that died mid-move: %v (code %v, reason %q)", err, rpcerr.Code(err), rpcerr.Reason(err))
	}
	t.Logf("move failed after %d bytes towards the target: %v", relay.sent.Load(), err)
	// The target had accepted: it holds a place for the session (it
	// publishes its load, reservations included, to its peers).
	targetLoad := func() int32 {
		r, err := op.Members(ctx, &mwsv1.MembersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.GetMembers() {
			if m.GetName() == "mws-2" {
				return m.GetSessions()
			}
		}
		t.Fatal("mws-2 is not a member")
		return 0
	}
	pollDeadline(t, "the target's reservation", func() bool { return targetLoad() == 2 })

	// The session is still the source's, and it works there.
	src, dst := e.cl.MWS[0], e.cl.MWS[1]
	if n := src.Stats().Sessions; n != 2 {
		t.Fatalf("the source holds %d sessions, want 2", n)
	}
	if n := dst.Stats().Sessions; n != 1 {
		t.Fatalf("the target holds %d sessions, want its own 1", n)
	}
	close(resume)
	endStreamLoad(t, ctx, &wg, errs, e.stream, h, upData)
	getAll(t, ctx, e, sess)
	if sess.MWS() != "mws-1" {
		t.Fatalf("session on %s after the failed move", sess.MWS())
	}
	for _, s := range []*clientlib.Session{other, atTarget} {
		if _, err := s.Get(ctx, "images", "/images/"+img.Name); err != nil {
			t.Fatalf("bystander session on %s: %v", s.MWS(), err)
		}
	}

	// Reachable again: the target frees the place it reserved for the
	// session once the skeleton expires (the source could not abort it),
	// and a new move there succeeds (no leftover of the first one).
	e.cl.Peers.Add("mws-2", e.cl.MWSAddrs[1])
	pollDeadline(t, "the target's skeleton to expire", func() bool { return targetLoad() == 1 })
	if _, err := op.Move(ctx, &mwsv1.MoveRequest{SessionId: sess.ID(), To: "mws-2"}); err != nil {
		t.Fatalf("move once the target is reachable: %v", err)
	}
	getAll(t, ctx, e, sess)
	if sess.MWS() != "mws-2" || dst.Stats().Sessions != 2 || src.Stats().Sessions != 1 {
		t.Fatalf("after the second move: session on %s, source holds %d, target %d", sess.MWS(), src.Stats().Sessions, dst.Stats().Sessions)
	}
	for _, s := range []*clientlib.Session{other, atTarget} {
		if _, err := s.Get(ctx, "images", "/images/"+img.Name); err != nil {
			t.Fatalf("bystander session on %s: %v", s.MWS(), err)
		}
	}
}

// TestMASHReplayedAndForeignTokens: the move token a device gets for a
// MASH (read here from the SESSION_MOVED redirect its old MWS gives it) is
// refused at an MWS that did not issue it, refused and burnt when another
// device shows it, and refused when shown again after the device used it.
// None of this changes the session, its stream or anyone else's session.
func TestMASHReplayedAndForeignTokens(t *testing.T) {
	e := newMASHEnv(t, 1<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.device(t, "laptop", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.OpenSession(ctx, "viewer") // stays on mws-1
	if err != nil {
		t.Fatal(err)
	}
	desk := e.device(t, "desk", 1)
	deskSess, err := desk.OpenSession(ctx, "viewer") // on mws-2
	if err != nil {
		t.Fatal(err)
	}
	get := func(s *clientlib.Session) { t.Helper(); getOne(t, ctx, e, s) }
	get(sess)
	op1, op2 := operatorAPI(t, e, 0), operatorAPI(t, e, 1)
	laptopAt := []*rawDevice{dialRaw(t, e, "laptop", 0), dialRaw(t, e, "laptop", 1), dialRaw(t, e, "laptop", 2)}
	deskAt := []*rawDevice{nil, dialRaw(t, e, "desk", 1), dialRaw(t, e, "desk", 2)}
	laptopAt[0].login(t, ctx)
	laptopAt[1].login(t, ctx)

	// Move 1: mws-1 → mws-2. The device has not followed yet: it learns
	// where to go on its next call, as the raw client does here.
	if _, err := op1.Move(ctx, &mwsv1.MoveRequest{SessionId: sess.ID(), To: "mws-2"}); err != nil {
		t.Fatal(err)
	}
	m := laptopAt[0].redirect(t, ctx, sess.ID())
	if m["mws"] != "mws-2" || m["addr"] != e.cl.MWSAddrs[1] {
		t.Fatalf("redirected to %v", m)
	}
	tok1 := m["token"]

	// (c) Issued by mws-2, shown at mws-3 by the right device: unknown
	// there. mws-3 gains nothing.
	_, err = laptopAt[2].api.MoveIn(ctx, &mwsv1.MoveInRequest{Token: tok1})
	if rpcerr.Code(err) != codes.Unauthenticated || rpcerr.Reason(err) != "BAD_MOVE_TOKEN" {
		t.Fatalf("mws-2's token at mws-3: %v", err)
	}
	if n := e.cl.MWS[2].Stats().Sessions; n != 0 {
		t.Fatalf("mws-3 holds %d sessions", n)
	}

	// (b) Shown at mws-2 by another device before the real one follows:
	// refused as not for this device (so mws-2 still knew it after (c)).
	// moveTable.use burns a token shown by the wrong device, so that a
	// leaked token cannot be tried again: the real device's own try with
	// it is refused too, and it follows with its session key instead
	// (route.go falls back to the key on BAD_MOVE_TOKEN).
	_, err = deskAt[1].api.MoveIn(ctx, &mwsv1.MoveInRequest{Token: tok1})
	if rpcerr.Code(err) != codes.PermissionDenied || rpcerr.Reason(err) != "TOKEN_NOT_FOR_DEVICE" {
		t.Fatalf("laptop's token shown by desk: %v", err)
	}
	_, err = laptopAt[1].api.MoveIn(ctx, &mwsv1.MoveInRequest{Token: tok1})
	if rpcerr.Code(err) != codes.Unauthenticated || rpcerr.Reason(err) != "BAD_MOVE_TOKEN" {
		t.Fatalf("a burnt token: %v", err)
	}
	followed := c.MoveStats().Followed
	get(sess)
	if sess.MWS() != "mws-2" || c.MoveStats().Followed != followed+1 {
		t.Fatalf("session on %s, %d follows", sess.MWS(), c.MoveStats().Followed)
	}
	get(other)
	get(deskSess)

	// Move 2: mws-2 → mws-3, with a raw stream open: the stream follows by
	// itself with the token, and the next call finds the session there.
	conn, err := sess.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op2.Move(ctx, &mwsv1.MoveRequest{SessionId: sess.ID(), To: "mws-3"}); err != nil {
		t.Fatal(err)
	}
	m = laptopAt[1].redirect(t, ctx, sess.ID())
	if m["mws"] != "mws-3" {
		t.Fatalf("redirected to %v", m)
	}
	tok2 := m["token"]
	get(sess)
	if sess.MWS() != "mws-3" {
		t.Fatalf("session on %s after the second move", sess.MWS())
	}
	followed = c.MoveStats().Followed

	// (a) The used token, shown again by the same device and by another:
	// refused; the session's key does not change (the device's next call
	// needs no follow).
	for _, d := range []*rawDevice{laptopAt[2], deskAt[2]} {
		_, err = d.api.MoveIn(ctx, &mwsv1.MoveInRequest{Token: tok2})
		if rpcerr.Code(err) != codes.Unauthenticated || rpcerr.Reason(err) != "BAD_MOVE_TOKEN" {
			t.Fatalf("a used token shown again: %v", err)
		}
	}
	// The old token of the first move is spent as well.
	_, err = laptopAt[1].api.MoveIn(ctx, &mwsv1.MoveInRequest{Token: tok1})
	if rpcerr.Reason(err) != "BAD_MOVE_TOKEN" {
		t.Fatalf("the first move's token: %v", err)
	}
	get(sess)
	if sess.MWS() != "mws-3" || c.MoveStats().Followed != followed {
		t.Fatalf("session on %s, %d follows (want %d)", sess.MWS(), c.MoveStats().Followed, followed)
	}
	for i, n := range []int{1, 1, 1} {
		if got := e.cl.MWS[i].Stats().Sessions; got != n {
			t.Fatalf("%s holds %d sessions, want %d", e.cl.MWS[i].Name(), got, n)
		}
	}
	get(other)
	get(deskSess)

	// The stream went through both moves intact.
	upData := make([]byte, 512<<10)
	if _, err := io.ReadFull(legacy.RandomStream(12), upData); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	var done atomic.Bool
	h := sha256.New()
	startStreamLoad(&wg, conn, upData, h, errs, &done)
	endStreamLoad(t, ctx, &wg, errs, e.stream, h, upData)
}

// TestMASHTargetLostAfterInstall: the target installs the shipped session,
// then becomes unreachable before its answer reaches the source (the relay
// drops everything coming back from the target once the state is on its
// way, and is cut once the target holds the session). The source cannot
// abort the move there and keeps the session, as it must; once the target
// is reachable again the abort, sent again, reaches it and it drops its
// copy.
func TestMASHTargetLostAfterInstall(t *testing.T) {
	e := newMASHEnv(t, 1<<10, func(c *mws.Config) {
		c.Cluster.MoveTimeout = 3 * time.Second
		// Only the move's own calls cross the relay.
		c.Cluster.Replicas = 0
		if c.Name == "mws-2" {
			c.MaxSessionsPerUser = 1
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.device(t, "laptop", 0)
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	// A state small enough to be shipped whole without flow-control
	// window updates from the target, and no object: the move is then
	// PrepareMove and CompleteMove alone, without objects sent ahead.
	imgs := e.set.Images()
	small := imgs[0]
	for _, img := range imgs {
		if len(img.Bytes) < len(small.Bytes) {
			small = img
		}
	}
	if len(small.Bytes) > 16<<10 {
		t.Fatalf("smallest image has %d bytes", len(small.Bytes))
	}
	// A session of the same user fills mws-2's per-user limit: moves
	// there are refused after PrepareMove was sent, which measures its size
	// on the relayed connection.
	desk := e.device(t, "desk", 1)
	deskSess, err := desk.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	relay := newCutRelay(t, e.cl.MWSAddrs[1], math.MaxInt64)
	e.cl.Peers.Add("mws-2", relay.Addr())
	op := operatorAPI(t, e, 0)
	move := func() error {
		_, err := op.Move(ctx, &mwsv1.MoveRequest{SessionId: sess.ID(), To: "mws-2"})
		return err
	}
	var sent [2]int64
	for i := range sent {
		if err := move(); rpcerr.Reason(err) != "TOO_MANY_USER_SESSIONS" {
			t.Fatalf("move to a full target: %v", err)
		}
		sent[i] = relay.sent.Load()
	}
	if err := deskSess.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Past the next PrepareMove, within the CompleteMove that follows it
	// (some 200 bytes without objects): the margin covers a ping's
	// acknowledgement the transport may send meanwhile.
	relay.holdAfter.Store(sent[1] + (sent[1] - sent[0]) + 100)
	moved := make(chan error, 1)
	go func() { moved <- move() }()
	src, dst := e.cl.MWS[0], e.cl.MWS[1]
	pollDeadline(t, "the target to install the session", func() bool { return dst.Stats().Sessions == 1 })
	relay.cutAll()
	err = <-moved
	if rpcerr.Reason(err) != "PEER_UNAVAILABLE" {
		t.Fatalf("move whose answer was lost: %v", err)
	}
	if src.Stats().Sessions != 1 {
		t.Fatal("the source dropped the session")
	}
	obj, err := sess.Get(ctx, "images", "/images/"+small.Name)
	if err != nil || !bytes.Equal(obj.Body, small.Bytes) || sess.MWS() != "mws-1" {
		t.Fatalf("session on %s after the failed move: %v", sess.MWS(), err)
	}
	// Reachable again: the target is to hold no copy of the session.
	e.cl.Peers.Add("mws-2", e.cl.MWSAddrs[1])
	pollDeadline(t, "the target to drop its copy", func() bool { return dst.Stats().Sessions == 0 })
	if err := move(); err != nil {
		t.Fatalf("move once the target is reachable: %v", err)
	}
}
