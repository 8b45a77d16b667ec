// Package httpproxy is imash's black-box mode: an HTTP forward proxy that
// lets an unmodified program (curl, a browser, any http_proxy-aware tool)
// fetch objects through an imash session, and so through the MWS's cache
// and across handoffs, without linking clientlib.
//
// The host of a proxied URL names the imash backend, not a DNS name:
//
//	http://images/images/img-001.jpg  →  backend "images", path "/images/img-001.jpg"
//
// Only GET and HEAD of http:// URLs are proxied; a HEAD is answered from a
// GET through the MWS, without the body.
package httpproxy

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
)

// Response headers the proxy adds.
const (
	// HeaderCache tells how the MWS answered: HIT, MISS, REVALIDATED or
	// UNCACHED.
	HeaderCache = "X-Imash-Cache"
	// HeaderDigest is the digest ("sha256:<hex>") of the copy the MWS
	// keeps; absent when it keeps none.
	HeaderDigest = "X-Imash-Digest"
	// HeaderError is the machine-readable reason of a failure answered by
	// the proxy itself (e.g. UNKNOWN_BACKEND).
	HeaderError = "X-Imash-Error"
)

// Options configures a proxy handler. The zero value is ready to use.
type Options struct {
	// Timeout bounds one request through the MWS; when it passes, the
	// client gets 504. Zero means only the client's own patience bounds it.
	Timeout time.Duration
	// Relogin, if not nil, is called when the MWS refuses the session's
	// credential (codes.Unauthenticated, e.g. it expired); if it returns
	// nil the request is tried once more. It may be called concurrently
	// and must log in the same user on the same client, which keeps the
	// session valid.
	Relogin func(ctx context.Context) error
	// Log receives one line per request at Debug and failures at Warn (key
	// "backend", "path", "status"). Nil discards.
	Log *slog.Logger
}

// New returns an HTTP forward-proxy handler fetching through sess. Serve it
// with an http.Server whose limits (MaxHeaderBytes, ReadHeaderTimeout) suit
// the clients; the handler is safe for concurrent use.
func New(sess *clientlib.Session, opts Options) http.Handler {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &proxy{sess: sess, opts: opts, log: log}
}

type proxy struct {
	sess *clientlib.Session
	opts Options
	log  *slog.Logger
}

// hopByHop are the headers of one connection, never forwarded (RFC 9110
// section 7.6.1), plus those the proxy sets itself.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true,
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodConnect:
		p.fail(w, r, http.StatusNotImplemented, "CONNECT_UNSUPPORTED",
			"imash proxies plain http:// URLs only; https tunnels (CONNECT) are not supported")
		return
	default:
		w.Header().Set("Allow", "GET, HEAD")
		p.fail(w, r, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED",
			"method "+r.Method+" is not supported: imash fetches objects with GET and HEAD only")
		return
	}
	backend, path, reason, msg := target(r)
	if reason != "" {
		p.fail(w, r, http.StatusBadRequest, reason, msg)
		return
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		p.fail(w, r, http.StatusBadRequest, "REQUEST_BODY_UNSUPPORTED", "a "+r.Method+" request must not carry a body")
		return
	}
	obj, err := p.get(r.Context(), backend, path, forwardHeaders(r.Header))
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away; nobody reads an answer
		}
		status, reason := statusFor(err)
		p.log.Warn("proxy get failed", "backend", backend, "path", path, "status", status, "reason", reason, "error", err)
		p.fail(w, r, status, reason, rpcMessage(err))
		return
	}
	h := w.Header()
	for k, vs := range obj.Header {
		if !hopByHop[http.CanonicalHeaderKey(k)] {
			h[k] = vs
		}
	}
	if obj.ContentType != "" && h.Get("Content-Type") == "" {
		h.Set("Content-Type", obj.ContentType)
	}
	if c := cacheName(obj.Cache); c != "" {
		h.Set(HeaderCache, c)
	}
	if obj.Digest != "" {
		h.Set(HeaderDigest, obj.Digest)
	}
	h.Add("Via", "1.1 imash")
	if bodyAllowed(obj.Status) {
		h.Set("Content-Length", strconv.Itoa(len(obj.Body)))
	}
	p.log.Debug("proxy get", "backend", backend, "path", path, "status", obj.Status, "cache", h.Get(HeaderCache), "size", len(obj.Body))
	w.WriteHeader(obj.Status)
	if r.Method == http.MethodHead || !bodyAllowed(obj.Status) {
		return
	}
	_, _ = w.Write(obj.Body)
}

// get fetches through the session, logging in again once if the MWS no
// longer accepts the credential.
func (p *proxy) get(ctx context.Context, backend, path string, hdr map[string]string) (*clientlib.Object, error) {
	if p.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.opts.Timeout)
		defer cancel()
	}
	opts := make([]clientlib.GetOption, 0, len(hdr))
	for k, v := range hdr {
		opts = append(opts, clientlib.WithHeader(k, v))
	}
	obj, err := p.sess.Get(ctx, backend, path, opts...)
	if err != nil && p.opts.Relogin != nil && rpcerr.Code(err) == codes.Unauthenticated {
		p.log.Info("credential refused; logging in again", "reason", rpcerr.Reason(err))
		if lerr := p.opts.Relogin(ctx); lerr != nil {
			return nil, lerr
		}
		obj, err = p.sess.Get(ctx, backend, path, opts...)
	}
	return obj, err
}

// target splits an absolute-form request target into backend and
// origin-form path, or says why it cannot.
func target(r *http.Request) (backend, path, reason, msg string) {
	u := r.URL
	if !u.IsAbs() || u.Host == "" {
		return "", "", "NOT_A_PROXY_REQUEST", "request target " + strconv.Quote(r.RequestURI) +
			" is not an absolute http:// URL; use this server as an HTTP proxy (e.g. http_proxy=http://" + r.Host + ")"
	}
	if !strings.EqualFold(u.Scheme, "http") {
		return "", "", "SCHEME_UNSUPPORTED", "only http:// URLs are proxied, not " + u.Scheme + "://"
	}
	if port := u.Port(); port != "" && port != "80" {
		return "", "", "BAD_BACKEND", "the host of the URL names an imash backend and carries no port; drop :" + port
	}
	if u.User != nil {
		return "", "", "BAD_BACKEND", "user information in the URL is not supported"
	}
	return u.Hostname(), u.RequestURI(), "", ""
}

// forwardHeaders keeps the end-to-end request headers, joining repeated
// ones.
func forwardHeaders(in http.Header) map[string]string {
	drop := map[string]bool{}
	for _, v := range in.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			drop[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	out := make(map[string]string, len(in))
	for k, vs := range in {
		ck := http.CanonicalHeaderKey(k)
		if hopByHop[ck] || drop[ck] || len(vs) == 0 {
			continue
		}
		out[ck] = strings.Join(vs, ", ")
	}
	return out
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// cacheName turns CACHE_OUTCOME_HIT into HIT; "" for an unspecified one.
func cacheName(o clientlib.CacheOutcome) string {
	if o == 0 {
		return ""
	}
	return strings.TrimPrefix(o.String(), "CACHE_OUTCOME_")
}

// fail answers with a short text naming the reason.
func (p *proxy) fail(w http.ResponseWriter, r *http.Request, status int, reason, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(HeaderError, reason)
	body := "imash-proxy: " + strconv.Itoa(status) + " " + http.StatusText(status) + ": " + reason + ": " + msg + "\n"
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}
