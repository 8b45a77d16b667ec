//go:build linux

package mws

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
)

// TestBodySamplersShareAConnection: bodies sent on one connection while a
// sampler follows it extend that sampler (their bytes queue behind each
// other) instead of starting one sampler each.
func TestBodySamplersShareAConnection(t *testing.T) {
	m := newNetMeter(0, nil, nil)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := m.listener(raw)
	defer lis.Close()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	mc, ok := server.(*meteredConn)
	if !ok {
		t.Fatalf("accepted %T, want a metered connection", server)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: client.LocalAddr()})

	const n = 1 << 20
	m.sendingBody(ctx, "pda", n)
	m.sendingBody(ctx, "pda", n)
	if !mc.bodySampling.Load() {
		t.Fatal("no sampler follows the bodies")
	}
	if got := mc.bodyTarget.Load(); got < 2*n {
		t.Fatalf("target %d: the second body does not queue behind the first (want at least %d)", got, 2*n)
	}
	// The bodies arrive: the one sampler ends.
	go io.Copy(io.Discard, client)
	buf := make([]byte, 64<<10)
	for sent := 0; sent < 2*n; sent += len(buf) {
		if _, err := server.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for mc.bodySampling.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the sampler did not end once the bodies were acknowledged")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
