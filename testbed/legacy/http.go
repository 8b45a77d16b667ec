package legacy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxAge is the freshness lifetime /images/ responses advertise when
// HTTPOptions.MaxAge is zero.
const DefaultMaxAge = time.Hour

// HTTPOptions configures an HTTPServer. The zero value is valid.
type HTTPOptions struct {
	// MaxAge is advertised as Cache-Control: max-age on /images/ and
	// /slow/ responses, in whole seconds (rounded down). Zero means
	// DefaultMaxAge; negative advertises max-age=0.
	MaxAge time.Duration

	// Logger receives the net/http server's own error reports (accept
	// errors, handler panics) at level Warn. Nil discards them.
	Logger *slog.Logger
}

// HTTPServer is a legacy HTTP/1.1 server (keep-alive enabled) serving an
// ImageSet on 127.0.0.1 with a kernel-chosen port. Its routes:
//
//	GET /images/<name>   the JPEG; Content-Type image/jpeg, Content-Length,
//	                     ETag, Last-Modified, Cache-Control: max-age=<MaxAge>;
//	                     If-None-Match / If-Modified-Since answered with 304
//	                     and Range requests with 206 (http.ServeContent)
//	GET /index           text/plain, one "<name> <size>" line per image
//	GET /nostore/<name>  as /images/ with Cache-Control: no-store
//	GET /private/<name>  as /images/ with Cache-Control: private, max-age=60
//	GET /slow/<name>?bps=N
//	                     the JPEG paced at N bytes per second, with the
//	                     /images/ headers but no conditional handling; it
//	                     stops when the client goes away or on Close
//	GET /truncated/<name>
//	                     a 200 advertising the full Content-Length, after
//	                     which the connection is closed halfway through the
//	                     body
//	GET /garbage         a malformed status line, then the connection closes
//
// Unknown names answer 404, a bad bps 400. HEAD is accepted wherever GET is.
// Counters are atomic and safe to poll concurrently.
type HTTPServer struct {
	set    *ImageSet
	maxAge string // Cache-Control value for /images/
	srv    *http.Server
	ln     *countingListener
	mux    *http.ServeMux

	requests, full, notModified, inFlight atomic.Int64
	pathMu                                sync.Mutex
	paths                                 map[string]int64

	mu        sync.Mutex
	closed    bool
	handlers  sync.WaitGroup
	done      chan struct{} // closed by Close; stops /slow/
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// NewHTTPServer starts an HTTPServer for set.
func NewHTTPServer(set *ImageSet, opts HTTPOptions) (*HTTPServer, error) {
	if set == nil {
		return nil, fmt.Errorf("%w: nil ImageSet", ErrInvalidConfig)
	}
	maxAge := opts.MaxAge
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	tl, err := listenLoopback()
	if err != nil {
		return nil, fmt.Errorf("legacy: http server listen: %w", err)
	}
	s := &HTTPServer{
		set:       set,
		maxAge:    fmt.Sprintf("max-age=%d", max(0, int64(maxAge/time.Second))),
		ln:        &countingListener{Listener: tl},
		paths:     make(map[string]int64),
		done:      make(chan struct{}),
		serveDone: make(chan struct{}),
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /images/{name}", s.cached(s.maxAge))
	s.mux.HandleFunc("GET /nostore/{name}", s.cached("no-store"))
	s.mux.HandleFunc("GET /private/{name}", s.cached("private, max-age=60"))
	s.mux.HandleFunc("GET /index", s.index)
	s.mux.HandleFunc("GET /slow/{name}", s.slow)
	s.mux.HandleFunc("GET /truncated/{name}", s.truncated)
	s.mux.HandleFunc("GET /garbage", s.garbage)

	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.serveDone)
		_ = s.srv.Serve(s.ln) // returns http.ErrServerClosed after Close
	}()
	return s, nil
}

// Addr returns the host:port the server listens on.
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// URL returns the absolute http URL of path (which starts with "/").
func (s *HTTPServer) URL(path string) string { return "http://" + s.Addr() + path }

// Set returns the ImageSet being served.
func (s *HTTPServer) Set() *ImageSet { return s.set }

// Requests returns the number of requests received on any path, counted
// when the handler starts.
func (s *HTTPServer) Requests() int64 { return s.requests.Load() }

// RequestsFor returns the number of requests whose URL path (without the
// query) was exactly path, e.g. "/images/img-001.jpg".
func (s *HTTPServer) RequestsFor(path string) int64 {
	s.pathMu.Lock()
	defer s.pathMu.Unlock()
	return s.paths[path]
}

// FullResponses returns the number of 200 responses whose whole body was
// written: image, /index and completed /slow/ responses. HEAD, 206, 304,
// truncated and garbage responses do not count. The count is updated when
// the handler returns, after the last body byte was handed to the kernel.
func (s *HTTPServer) FullResponses() int64 { return s.full.Load() }

// InFlight returns the number of requests whose handlers are running now.
func (s *HTTPServer) InFlight() int64 { return s.inFlight.Load() }

// NotModified returns the number of 304 responses.
func (s *HTTPServer) NotModified() int64 { return s.notModified.Load() }

// ConnectionsAccepted returns the number of TCP connections accepted; with
// keep-alive, several requests share one connection.
func (s *HTTPServer) ConnectionsAccepted() int64 { return s.ln.accepted.Load() }

// Close closes the listener and every connection, stops /slow/ responses
// and waits for all handlers and the serving goroutine to return. It is
// idempotent.
func (s *HTTPServer) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
		if err := s.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = fmt.Errorf("legacy: http server close: %w", err)
		}
		s.handlers.Wait()
		<-s.serveDone
	})
	return s.closeErr
}

// ServeHTTP counts the request, runs the route and counts the outcome.
func (s *HTTPServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "server closing", http.StatusServiceUnavailable)
		return
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()

	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.requests.Add(1)
	s.pathMu.Lock()
	s.paths[r.URL.Path]++
	s.pathMu.Unlock()

	rec := &recorder{ResponseWriter: w}
	s.mux.ServeHTTP(rec, r)
	switch {
	case rec.status == http.StatusNotModified:
		s.notModified.Add(1)
	case rec.status == http.StatusOK && rec.complete && rec.err == nil:
		s.full.Add(1)
	}
}

// recorder notes the status, the body bytes written and the first write
// error; handlers set complete once the whole body was written.
type recorder struct {
	http.ResponseWriter
	status   int
	written  int64
	err      error
	complete bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.written += int64(n)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}
