package httpproxy_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/clientlib/httpproxy"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// env is a cluster with legacy backends and a proxy serving one session.
//
// Backends: "images" (the legacy image server), "echo" (answers with the
// request it got, as JSON, no-store), "down" (nothing listens), "raw" (a
// mux backend that is not an HTTP backend of the MWS).
type env struct {
	set    *legacy.ImageSet
	hs     *legacy.HTTPServer
	cl     *cluster.Cluster
	client *clientlib.Client
	sess   *clientlib.Session
	proxy  *httptest.Server
	// http fetches through the proxy.
	http *http.Client
}

// echoed is what the echo backend answers.
type echoed struct {
	URI    string
	Header http.Header
}

func newEnv(t *testing.T, opts httpproxy.Options) *env {
	t.Helper()
	ctx := t.Context()
	set, err := legacy.GenerateImages(7, 4, 2<<10, 300<<10)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Close() })
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(echoed{URI: r.RequestURI, Header: r.Header})
	}))
	t.Cleanup(echo.Close)
	cl, err := cluster.Start(cluster.Options{
		Backends: map[string]string{
			"images": hs.Addr(), "echo": echo.Listener.Addr().String(),
			"down": closedAddr(t), "raw": hs.Addr(),
		},
		HTTPBackends: []string{"images", "echo", "down"},
		Users:        map[string]string{"alice": "secret"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	cert, roots, err := cl.DeviceCert("laptop-1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientlib.Dial(ctx, cl.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(ctx, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	sess, err := c.OpenSession(ctx, "proxy")
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewServer(httpproxy.New(sess, opts))
	t.Cleanup(ps.Close)
	pu, _ := url.Parse(ps.URL)
	hc := &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(pu)},
		Timeout:   time.Minute,
	}
	t.Cleanup(hc.CloseIdleConnections)
	return &env{set: set, hs: hs, cl: cl, client: c, sess: sess, proxy: ps, http: hc}
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
