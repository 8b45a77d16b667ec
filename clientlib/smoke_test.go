package clientlib_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

func TestEndToEndSmoke(t *testing.T) {
	set, err := legacy.GenerateImages(1, 5, 512, 200<<10)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	ss, err := legacy.NewStreamServer(legacy.StreamConfig{SendBytes: 1 << 20, Seed: 4, CloseWriteAfterSend: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cl, err := cluster.Start(cluster.Options{
		Backends:     map[string]string{"images": hs.Addr(), "stream": ss.Addr()},
		HTTPBackends: []string{"images"},
		Users:        map[string]string{"alice": "secret"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cert, roots, err := cl.DeviceCert("pda-1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientlib.Dial(ctx, cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(ctx, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenSession(ctx, "minibrowser")
	if err != nil {
		t.Fatal(err)
	}
	img := set.Images()[0]
	for i, want := range []mwsv1.CacheOutcome{mwsv1.CacheOutcome_CACHE_OUTCOME_MISS, mwsv1.CacheOutcome_CACHE_OUTCOME_HIT} {
		obj, err := s.Get(ctx, "images", "/images/"+img.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(obj.Body, img.Bytes) || obj.Cache != want {
			t.Fatalf("get %d: %d bytes, cache %v", i, len(obj.Body), obj.Cache)
		}
	}
	if n := hs.RequestsFor("/images/" + img.Name); n != 1 {
		t.Fatalf("legacy server saw %d requests", n)
	}
	conn, err := s.Dial(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, conn); err != nil {
		t.Fatal(err)
	}
	lc, _ := ss.WaitConn(ctx, 0)
	<-lc.Done()
	if [32]byte(h.Sum(nil)) != lc.SentSum() || lc.ReceivedSum() != sha256.Sum256([]byte("hello")) {
		t.Fatal("stream bytes differ")
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
}
