package httpproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib/httpproxy"
)

func get(t *testing.T, c *http.Client, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func TestProxyMatchesDirectFetch(t *testing.T) {
	e := newEnv(t, httpproxy.Options{})
	for _, img := range e.set.Images()[:3] {
		t.Run(img.Name, func(t *testing.T) {
			path := "/images/" + img.Name
			direct, directBody := get(t, http.DefaultClient, http.MethodGet, e.hs.URL(path), nil)
			if direct.StatusCode != http.StatusOK || !bytes.Equal(directBody, img.Bytes) {
				t.Fatalf("direct fetch: %d, %d bytes", direct.StatusCode, len(directBody))
			}
			sum := sha256.Sum256(img.Bytes)
			for _, wantCache := range []string{"MISS", "HIT"} {
				res, body := get(t, e.http, http.MethodGet, "http://images"+path, nil)
				if res.StatusCode != http.StatusOK {
					t.Fatalf("%s: status %d: %s", wantCache, res.StatusCode, body)
				}
				if !bytes.Equal(body, directBody) {
					t.Fatalf("%s: proxied body (%d bytes) differs from the direct one (%d bytes)", wantCache, len(body), len(directBody))
				}
				checks := []struct{ header, want string }{
					{httpproxy.HeaderCache, wantCache},
					{httpproxy.HeaderDigest, "sha256:" + hex.EncodeToString(sum[:])},
					{"Content-Type", direct.Header.Get("Content-Type")},
					{"ETag", direct.Header.Get("ETag")},
					{"Last-Modified", direct.Header.Get("Last-Modified")},
					{"Cache-Control", direct.Header.Get("Cache-Control")},
					{"Content-Length", strconv.Itoa(len(img.Bytes))},
				}
				for _, c := range checks {
					if got := res.Header.Get(c.header); got != c.want || got == "" {
						t.Errorf("%s: %s = %q, want %q", wantCache, c.header, got, c.want)
					}
				}
			}
			// One request from the direct fetch, one from the MWS's miss.
			if n := e.hs.RequestsFor(path); n != 2 {
				t.Fatalf("legacy server saw %d requests for %s, want 2", n, path)
			}
		})
	}
}

func TestProxyHead(t *testing.T) {
	e := newEnv(t, httpproxy.Options{})
	img := e.set.Images()[1]
	res, body := get(t, e.http, http.MethodHead, "http://images/images/"+img.Name, nil)
	if res.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD: status %d, %d body bytes", res.StatusCode, len(body))
	}
	if res.ContentLength != int64(len(img.Bytes)) || res.Header.Get("Content-Type") != "image/jpeg" || res.Header.Get(httpproxy.HeaderCache) == "" {
		t.Fatalf("HEAD headers: length %d (want %d), %v", res.ContentLength, len(img.Bytes), res.Header)
	}
	// The HEAD filled the cache: the GET after it is a hit.
	res, body = get(t, e.http, http.MethodGet, "http://images/images/"+img.Name, nil)
	if !bytes.Equal(body, img.Bytes) || res.Header.Get(httpproxy.HeaderCache) != "HIT" {
		t.Fatalf("GET after HEAD: %d bytes, cache %q", len(body), res.Header.Get(httpproxy.HeaderCache))
	}
}

func TestProxyForwardsEndToEndHeaders(t *testing.T) {
	e := newEnv(t, httpproxy.Options{})
	res, body := get(t, e.http, http.MethodGet, "http://echo/echo?q=1&r=two", map[string]string{
		"Accept":              "image/webp,image/*;q=0.8",
		"X-Custom":            "kept",
		"Connection":          "X-Per-Hop",
		"X-Per-Hop":           "dropped",
		"Proxy-Authorization": "Basic c2VjcmV0",
	})
	if res.StatusCode != http.StatusOK || res.Header.Get(httpproxy.HeaderCache) != "UNCACHED" {
		t.Fatalf("status %d, cache %q: %s", res.StatusCode, res.Header.Get(httpproxy.HeaderCache), body)
	}
	var got echoed
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if got.URI != "/echo?q=1&r=two" {
		t.Errorf("legacy server got request target %q", got.URI)
	}
	for _, c := range []struct{ header, want string }{
		{"Accept", "image/webp,image/*;q=0.8"},
		{"X-Custom", "kept"},
		{"X-Per-Hop", ""},
		{"Proxy-Authorization", ""},
		{"Proxy-Connection", ""},
	} {
		if v := got.Header.Get(c.header); v != c.want {
			t.Errorf("legacy server got %s = %q, want %q", c.header, v, c.want)
		}
	}
}

// rawRequest sends one request as raw bytes, for request forms net/http's
// client does not produce.
func rawRequest(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestProxyErrors(t *testing.T) {
	e := newEnv(t, httpproxy.Options{Timeout: 2 * time.Second})
	img := e.set.Images()[0].Name
	addr := e.proxy.Listener.Addr().String()
	manyHeaders := ""
	for i := range 40 {
		manyHeaders += fmt.Sprintf("X-H-%d: v\r\n", i)
	}
	tests := []struct {
		name       string
		raw        string
		wantStatus int
		// wantReason is the X-Imash-Error header and part of the body;
		// empty for answers of the legacy server itself. orReason is
		// an answer as good: which side's deadline fires first is a race.
		wantReason, orReason string
		wantHeader           [2]string
	}{
		{name: "unknown backend (NotFound)", raw: "GET http://nosuch/x HTTP/1.1\r\nHost: nosuch\r\n\r\n",
			wantStatus: 502, wantReason: "UNKNOWN_BACKEND"},
		{name: "backend not HTTP (NotFound)", raw: "GET http://raw/x HTTP/1.1\r\nHost: raw\r\n\r\n",
			wantStatus: 502, wantReason: "UNKNOWN_BACKEND"},
		{name: "backend down (Unavailable)", raw: "GET http://down/x HTTP/1.1\r\nHost: down\r\n\r\n",
			wantStatus: 502, wantReason: "BACKEND_UNAVAILABLE"},
		{name: "malformed legacy response (Unavailable)", raw: "GET http://images/garbage HTTP/1.1\r\nHost: images\r\n\r\n",
			wantStatus: 502, wantReason: "UPSTREAM_MALFORMED"},
		{name: "slow legacy server (DeadlineExceeded)", raw: "GET http://images/slow/" + img + "?bps=100 HTTP/1.1\r\nHost: images\r\n\r\n",
			wantStatus: 504, wantReason: "DEADLINE_EXCEEDED", orReason: "UPSTREAM_TIMEOUT"},
		{name: "too many headers (InvalidArgument)", raw: "GET http://images/images/" + img + " HTTP/1.1\r\nHost: images\r\n" + manyHeaders + "\r\n",
			wantStatus: 400, wantReason: "TOO_MANY_HEADERS"},
		{name: "legacy 404 passes through", raw: "GET http://images/images/nosuch.jpg HTTP/1.1\r\nHost: images\r\n\r\n",
			wantStatus: 404},
		{name: "POST", raw: "POST http://images/images/x HTTP/1.1\r\nHost: images\r\nContent-Length: 2\r\n\r\nhi",
			wantStatus: 405, wantReason: "METHOD_NOT_ALLOWED", wantHeader: [2]string{"Allow", "GET, HEAD"}},
		{name: "CONNECT", raw: "CONNECT images:443 HTTP/1.1\r\nHost: images:443\r\n\r\n",
			wantStatus: 501, wantReason: "CONNECT_UNSUPPORTED"},
		{name: "origin form", raw: "GET /images/" + img + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\n",
			wantStatus: 400, wantReason: "NOT_A_PROXY_REQUEST"},
		{name: "https URL", raw: "GET https://images/x HTTP/1.1\r\nHost: images\r\n\r\n",
			wantStatus: 400, wantReason: "SCHEME_UNSUPPORTED"},
		{name: "port in URL", raw: "GET http://images:8080/x HTTP/1.1\r\nHost: images:8080\r\n\r\n",
			wantStatus: 400, wantReason: "BAD_BACKEND"},
		{name: "GET with a body", raw: "GET http://images/images/" + img + " HTTP/1.1\r\nHost: images\r\nContent-Length: 3\r\n\r\nabc",
			wantStatus: 400, wantReason: "REQUEST_BODY_UNSUPPORTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := rawRequest(t, addr, tt.raw)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %q", res.StatusCode, tt.wantStatus, body)
			}
			want := tt.wantReason
			if got := res.Header.Get(httpproxy.HeaderError); got != want {
				if tt.orReason == "" || got != tt.orReason {
					t.Errorf("%s = %q, want %q", httpproxy.HeaderError, got, want)
				}
				want = got
			}
			if want != "" && (!strings.Contains(body, want) || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain")) {
				t.Errorf("body %q (%s) does not name %s", body, res.Header.Get("Content-Type"), want)
			}
			if h := tt.wantHeader; h[0] != "" && res.Header.Get(h[0]) != h[1] {
				t.Errorf("%s = %q, want %q", h[0], res.Header.Get(h[0]), h[1])
			}
		})
	}
}

func TestProxyLogsInAgainWhenTheCredentialIsRevoked(t *testing.T) {
	var relogins atomic.Int32
	var e *env
	e = newEnv(t, httpproxy.Options{Relogin: func(ctx context.Context) error {
		relogins.Add(1)
		return e.client.Login(ctx, "alice", "secret")
	}})
	img := e.set.Images()[2]
	if err := e.client.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	res, body := get(t, e.http, http.MethodGet, "http://images/images/"+img.Name, nil)
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, img.Bytes) {
		t.Fatalf("after logout: status %d, %d bytes: %.200s", res.StatusCode, len(body), body)
	}
	if n := relogins.Load(); n != 1 {
		t.Fatalf("Relogin called %d times, want 1", n)
	}
}

func TestProxyWithoutReloginReportsTheRefusedCredential(t *testing.T) {
	e := newEnv(t, httpproxy.Options{})
	if err := e.client.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	res, body := get(t, e.http, http.MethodGet, "http://images/images/"+e.set.Images()[0].Name, nil)
	if res.StatusCode != http.StatusBadGateway || res.Header.Get(httpproxy.HeaderError) != "NO_CREDENTIAL" {
		t.Fatalf("status %d, reason %q: %s", res.StatusCode, res.Header.Get(httpproxy.HeaderError), body)
	}
}
