package clientlib_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
)

// countingDialer dials plain TCP and counts the dials by address.
type countingDialer struct {
	mu    sync.Mutex
	dials map[string]int
}

func (d *countingDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	if d.dials == nil {
		d.dials = map[string]int{}
	}
	d.dials[addr]++
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", addr)
}

func (d *countingDialer) count(addr string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials[addr]
}

// TestDialerFollowsMASH gives a client a Dialer and moves its session to
// another MWS: the connection to the first MWS and the one the client
// opens to follow the session both go through the Dialer.
func TestDialerFollowsMASH(t *testing.T) {
	e := newMASHEnv(t, 1<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cert, roots, err := e.cl.DeviceCert("dialer-device")
	if err != nil {
		t.Fatal(err)
	}
	var d countingDialer
	c, err := clientlib.Dial(ctx, e.cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots, Dialer: d.dial})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := d.count(e.cl.MWSAddrs[0]); n != 0 {
		t.Fatalf("%d dials before the first call; the connection opens on first use", n)
	}
	if err := c.Login(ctx, "doc", "pw"); err != nil {
		t.Fatal(err)
	}
	if n := d.count(e.cl.MWSAddrs[0]); n == 0 {
		t.Fatal("logged in at mws-1 without dialing it through the Dialer")
	}
	sess, err := c.OpenSession(ctx, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	img := e.set.Images()[0]
	get := func() {
		t.Helper()
		obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(obj.Body, img.Bytes) {
			t.Fatalf("body of %d bytes differs from the image's %d", len(obj.Body), len(img.Bytes))
		}
	}
	get()
	from := sess.MWS()
	to := "mws-2"
	if from == to {
		to = "mws-3"
	}
	if _, err := e.server(from).MoveSession(ctx, sess.ID(), to, "operator"); err != nil {
		t.Fatal(err)
	}
	get() // follows the session
	if sess.MWS() != to {
		t.Fatalf("session on %s after the move to %s", sess.MWS(), to)
	}
	var toAddr string
	for i, s := range e.cl.MWS {
		if s.Name() == to {
			toAddr = e.cl.MWSAddrs[i]
		}
	}
	if n := d.count(toAddr); n == 0 {
		t.Fatalf("followed the session to %s (%s) without dialing it through the Dialer", to, toAddr)
	}
	if st := c.MoveStats(); st.Followed == 0 {
		t.Fatal("MoveStats counts no follow")
	}
}

// TestDialerError: a Dialer that fails makes the calls fail as the MWS
// being unreachable would.
func TestDialerError(t *testing.T) {
	e := newMASHEnv(t, 1<<20, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cert, roots, err := e.cl.DeviceCert("dialer-device")
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("no route to this MWS")
	var mu sync.Mutex
	calls := 0
	c, err := clientlib.Dial(ctx, e.cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots,
		Dialer: func(context.Context, string) (net.Conn, error) {
			mu.Lock()
			calls++
			mu.Unlock()
			return nil, refused
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(ctx, "doc", "pw"); rpcerr.Code(err) != codes.Unavailable {
		t.Fatalf("login through a failing Dialer = %v, want Unavailable", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls == 0 {
		t.Fatal("the Dialer was not called")
	}
}
