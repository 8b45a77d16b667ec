package legacy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// httpSet is a small image set, quick to generate even under -race.
func httpSet(t *testing.T) *ImageSet {
	t.Helper()
	set, err := GenerateImages(7, 5, paperMin, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func newHTTPServer(t *testing.T, opts HTTPOptions) *HTTPServer {
	t.Helper()
	s, err := NewHTTPServer(httpSet(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// newClient returns a client with its own connection pool, so tests do not
// share keep-alive connections.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// get performs a GET with extra headers and returns the response with its
// body read.
func get(t *testing.T, c *http.Client, url string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, body
}

// largest returns the set's biggest image, so bodies span many writes.
func largest(set *ImageSet) *Image {
	var big *Image
	for _, img := range set.Images() {
		if big == nil || len(img.Bytes) > len(big.Bytes) {
			big = img
		}
	}
	return big
}

func TestHTTPServerGet(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	c := newClient(t)
	img := largest(s.Set())
	path := "/images/" + img.Name

	resp, body := get(t, c, s.URL(path), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Bytes) {
		t.Fatalf("status %d, %d body bytes; want 200 and the %d image bytes", resp.StatusCode, len(body), len(img.Bytes))
	}
	for k, want := range map[string]string{
		"Content-Type":   "image/jpeg",
		"Content-Length": strconv.Itoa(len(img.Bytes)),
		"Etag":           img.ETag,
		"Last-Modified":  img.ModTime.UTC().Format(http.TimeFormat),
		"Cache-Control":  "max-age=3600",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// A second request reuses the kept-alive connection.
	get(t, c, s.URL(path), nil)
	waitFor(t, "two full responses", func() bool { return s.FullResponses() == 2 })
	for name, cnt := range map[string]struct{ got, want int64 }{
		"Requests":            {s.Requests(), 2},
		"RequestsFor":         {s.RequestsFor(path), 2},
		"RequestsFor(other)":  {s.RequestsFor("/images/nope.jpg"), 0},
		"NotModified":         {s.NotModified(), 0},
		"ConnectionsAccepted": {s.ConnectionsAccepted(), 1},
	} {
		if cnt.got != cnt.want {
			t.Errorf("%s = %d, want %d", name, cnt.got, cnt.want)
		}
	}
}

func TestHTTPServerConditional(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	c := newClient(t)
	img := s.Set().Images()[0]
	url := s.URL("/images/" + img.Name)
	var want304 int64
	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
	}{
		{name: "matching etag", header: map[string]string{"If-None-Match": img.ETag}, status: http.StatusNotModified},
		{name: "etag in list", header: map[string]string{"If-None-Match": `"x", ` + img.ETag}, status: http.StatusNotModified},
		{name: "other etag", header: map[string]string{"If-None-Match": `"0000"`}, status: http.StatusOK},
		{name: "not modified since", header: map[string]string{"If-Modified-Since": img.ModTime.UTC().Format(http.TimeFormat)}, status: http.StatusNotModified},
		{name: "modified since", header: map[string]string{"If-Modified-Since": img.ModTime.Add(-time.Hour).UTC().Format(http.TimeFormat)}, status: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, c, url, tc.header)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == http.StatusNotModified {
				want304++
				if len(body) != 0 || resp.Header.Get("Etag") != img.ETag {
					t.Errorf("304 with %d body bytes and ETag %q", len(body), resp.Header.Get("Etag"))
				}
			} else if !bytes.Equal(body, img.Bytes) {
				t.Errorf("200 with %d body bytes, want the image", len(body))
			}
			waitFor(t, "304 count", func() bool { return s.NotModified() == want304 })
		})
	}
	waitFor(t, "full responses", func() bool { return s.FullResponses() == 2 })
}

func TestHTTPServerCacheControl(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
		route  string
		want   string
	}{
		{name: "images default", route: "/images/", want: "max-age=3600"},
		{name: "images configured", maxAge: 90 * time.Second, route: "/images/", want: "max-age=90"},
		{name: "images negative", maxAge: -time.Second, route: "/images/", want: "max-age=0"},
		{name: "nostore", route: "/nostore/", want: "no-store"},
		{name: "private", route: "/private/", want: "private, max-age=60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newHTTPServer(t, HTTPOptions{MaxAge: tc.maxAge})
			img := s.Set().Images()[1]
			resp, body := get(t, newClient(t), s.URL(tc.route+img.Name), nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Bytes) {
				t.Fatalf("status %d with %d bytes", resp.StatusCode, len(body))
			}
			if got := resp.Header.Get("Cache-Control"); got != tc.want {
				t.Fatalf("Cache-Control %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHTTPServerIndex(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	resp, body := get(t, newClient(t), s.URL("/index"), nil)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	var want strings.Builder
	for _, img := range s.Set().Images() {
		want.WriteString(img.Name + " " + strconv.Itoa(len(img.Bytes)) + "\n")
	}
	if string(body) != want.String() {
		t.Fatalf("index:\n%s\nwant:\n%s", body, want.String())
	}
}

func TestHTTPServerErrors(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	c := newClient(t)
	name := s.Set().Images()[0].Name
	for _, tc := range []struct {
		path   string
		status int
	}{
		{path: "/images/missing.jpg", status: http.StatusNotFound},
		{path: "/slow/missing.jpg?bps=10", status: http.StatusNotFound},
		{path: "/slow/" + name, status: http.StatusBadRequest},
		{path: "/slow/" + name + "?bps=-3", status: http.StatusBadRequest},
		{path: "/elsewhere", status: http.StatusNotFound},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if resp, _ := get(t, c, s.URL(tc.path), nil); resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	if s.FullResponses() != 0 {
		t.Fatalf("FullResponses = %d after errors only", s.FullResponses())
	}
}

// rawGet sends one request on a fresh connection and returns the connection
// with a reader positioned at the response.
func rawGet(t *testing.T, addr, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: legacy\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func TestHTTPServerTruncated(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	img := largest(s.Set())
	path := "/truncated/" + img.Name

	t.Run("raw", func(t *testing.T) {
		_, r := rawGet(t, s.Addr(), path)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(img.Bytes)) {
			t.Fatalf("status %d, Content-Length %d; want 200 and %d", resp.StatusCode, resp.ContentLength, len(img.Bytes))
		}
		body, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("reading body: %v, want unexpected EOF", err)
		}
		if half := img.Bytes[:len(img.Bytes)/2]; !bytes.Equal(body, half) {
			t.Fatalf("got %d body bytes, want the first %d", len(body), len(half))
		}
	})
	t.Run("net/http", func(t *testing.T) {
		resp, err := newClient(t).Get(s.URL(path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("reading body: %v, want unexpected EOF", err)
		}
	})
	if got := s.RequestsFor(path); got != 2 {
		t.Errorf("RequestsFor = %d, want 2", got)
	}
	if got := s.FullResponses(); got != 0 {
		t.Errorf("FullResponses = %d, want 0", got)
	}
}

func TestHTTPServerGarbage(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	t.Run("raw", func(t *testing.T) {
		_, r := rawGet(t, s.Addr(), "/garbage")
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != garbageResponse {
			t.Fatalf("got %q, want %q then EOF", got, garbageResponse)
		}
	})
	t.Run("net/http", func(t *testing.T) {
		resp, err := newClient(t).Get(s.URL("/garbage"))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET succeeded with status %d", resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "malformed HTTP") {
			t.Fatalf("error %v, want a malformed-response error", err)
		}
	})
}

func TestHTTPServerSlow(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	img := largest(s.Set())
	bps := int64(len(img.Bytes)) * 5 // about 200ms for the whole body
	start := time.Now()
	resp, body := get(t, newClient(t), s.URL("/slow/"+img.Name+"?bps="+strconv.FormatInt(bps, 10)), nil)
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Bytes) {
		t.Fatalf("status %d with %d bytes", resp.StatusCode, len(body))
	}
	// The last chunk is due at (size - chunk) / bps; a lower bound is
	// safe on a loaded machine.
	if floor := time.Duration((int64(len(img.Bytes)) - bps/20) * int64(time.Second) / bps); elapsed < floor {
		t.Fatalf("took %v, faster than the %v pacing allows", elapsed, floor)
	}
	waitFor(t, "full response", func() bool { return s.FullResponses() == 1 })
}

// A paced response stops when the client goes away, and Close does not wait
// for one that would take hours.
func TestHTTPServerSlowStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(*HTTPServer, context.CancelFunc)
	}{
		{name: "client cancels", stop: func(_ *HTTPServer, cancel context.CancelFunc) { cancel() }},
		{name: "server closes", stop: func(s *HTTPServer, _ context.CancelFunc) { s.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newHTTPServer(t, HTTPOptions{})
			img := largest(s.Set())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("/slow/"+img.Name+"?bps=1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, first); err != nil || first[0] != img.Bytes[0] {
				t.Fatalf("first byte %x, %v", first, err)
			}
			if got := s.InFlight(); got != 1 {
				t.Fatalf("InFlight = %d during the response, want 1", got)
			}
			tc.stop(s, cancel)
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Fatal("body ended cleanly, want an error")
			}
			waitFor(t, "the handler to stop", func() bool { return s.InFlight() == 0 })
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s.FullResponses() != 0 {
				t.Fatalf("FullResponses = %d", s.FullResponses())
			}
		})
	}
}

func TestHTTPServerKeepAlive(t *testing.T) {
	s := newHTTPServer(t, HTTPOptions{})
	c := newClient(t)
	imgs := s.Set().Images()
	for _, img := range imgs[:2] {
		if resp, body := get(t, c, s.URL("/images/"+img.Name), nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Bytes) {
			t.Fatalf("%s: status %d, %d bytes", img.Name, resp.StatusCode, len(body))
		}
	}
	if got := s.ConnectionsAccepted(); got != 1 {
		t.Fatalf("ConnectionsAccepted = %d after two requests on one client, want 1", got)
	}
	if got := s.Requests(); got != 2 {
		t.Fatalf("Requests = %d, want 2", got)
	}
	waitFor(t, "two full responses", func() bool { return s.FullResponses() == 2 })
}
