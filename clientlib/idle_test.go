package clientlib_test

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws"
)

// TestIdleSessionsEnd: a session nobody touches ends after the idle
// timeout and its legacy stream is closed; a session whose stream is being
// relayed stays.
func TestIdleSessionsEnd(t *testing.T) {
	e := newCASHEnv(t, 1<<20, func(c *mws.Config) { c.SessionIdleTimeout = 400 * time.Millisecond }, "pda")
	ctx := context.Background()
	c := e.devices["pda"].c
	idle, err := c.OpenSession(ctx, "forgotten")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := idle.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	conn.Detach() // the device goes away; the stream stays at the mux
	busy, err := c.OpenSession(ctx, "reading")
	if err != nil {
		t.Fatal(err)
	}
	live, err := busy.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	lc, err := e.stream.WaitConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lc.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the idle session's legacy connection is still open")
	}
	pollDeadline(t, "idle session ended", func() bool {
		list, err := c.Sessions(ctx)
		return err == nil && len(list) == 1 && list[0].ID == busy.ID()
	})
	if _, err := idle.Get(ctx, "images", "/images/"+e.set.Images()[0].Name); rpcerr.Code(err) != codes.NotFound {
		t.Fatalf("Get on the ended session: %v", err)
	}
	// The relayed session still works.
	if _, err := io.ReadFull(live, make([]byte, 1000)); err != nil {
		t.Fatalf("the busy session's stream: %v", err)
	}
}
