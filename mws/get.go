package mws

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws/objcache"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// hopByHop are request headers a device may not pass to a legacy server.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Host": true,
	"Proxy-Connection": true, "Content-Length": true,
}

func (d *deviceService) Get(req *mwsv1.GetRequest, out mwsv1.Device_GetServer) error {
	s := d.s
	ctx := out.Context()
	p := principalFrom(ctx)
	ss, err := s.sessionCall(ctx, req.GetSessionId(), true)
	if err != nil {
		return err
	}
	defer ss.endCall()
	if !s.http[req.GetBackend()] {
		return rpcerr.New(codes.NotFound, "UNKNOWN_BACKEND", "no HTTP backend named %q", req.GetBackend())
	}
	hreq, err := s.buildRequest(req)
	if err != nil {
		return err
	}
	res, err := s.cache.Fetch(ctx, req.GetBackend(), hreq, p.user)
	if err != nil {
		return upstreamStatus(req.GetBackend(), err)
	}
	meta := &mwsv1.ObjectMeta{Status: int32(res.StatusCode), Headers: map[string]string{}}
	for k, vs := range res.Header {
		meta.Headers[k] = strings.Join(vs, ", ")
	}
	meta.ContentType = res.Header.Get("Content-Type")
	body := []byte(nil)
	switch {
	case res.Object != nil:
		body = res.Object.Body
		meta.Size = res.Object.Size
		if res.Stored {
			meta.Digest = res.Object.Digest
			ss.addObject(res.Object.Digest)
		}
		meta.Cache = outcome(res.Outcome, res.Stored)
		meta.BudgetMet = true
		if res.StatusCode == 200 {
			v, ok, err := s.adaptFor(ctx, res.Object, p.device, hreq.Header)
			if err != nil {
				return err
			}
			if ok && v.Adapted {
				meta.Adapted, meta.OriginalContentType, meta.OriginalSize = true, meta.ContentType, meta.Size
				body, meta.ContentType, meta.Size = v.Data, v.ContentType, int64(len(v.Data))
				meta.Headers["Content-Type"] = v.ContentType
				delete(meta.Headers, "Content-Length")
				delete(meta.Headers, "Etag")
			}
			if ok {
				meta.BudgetMet = v.BudgetMet
			}
		}
	default:
		meta.Size = -1
		meta.Cache = mwsv1.CacheOutcome_CACHE_OUTCOME_UNCACHED
	}
	s.log.Debug("get", "session", ss.id, "backend", req.GetBackend(), "path", req.GetPath(), "status", res.StatusCode, "cache", meta.Cache.String(), "size", meta.Size)
	if err := out.Send(&mwsv1.GetResponse{Msg: &mwsv1.GetResponse_Meta{Meta: meta}}); err != nil {
		if res.Body != nil {
			res.Body.Close()
		}
		return err
	}
	if res.Object != nil {
		s.netmeter.sendingBody(ctx, p.device, len(body)) // goodput, while the body travels
		for len(body) > 0 {
			n := min(len(body), s.cfg.GetChunk)
			if err := out.Send(&mwsv1.GetResponse{Msg: &mwsv1.GetResponse_Chunk{Chunk: body[:n]}}); err != nil {
				return err
			}
			body = body[n:]
		}
		return nil
	}
	defer res.Body.Close()
	buf := make([]byte, s.cfg.GetChunk)
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			if serr := out.Send(&mwsv1.GetResponse{Msg: &mwsv1.GetResponse_Chunk{Chunk: buf[:n]}}); serr != nil {
				return serr
			}
			buf = make([]byte, s.cfg.GetChunk) // the sent slice belongs to gRPC now
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return upstreamStatus(req.GetBackend(), err)
		}
	}
}

// buildRequest validates a device's Get and turns it into the request for
// the legacy server.
func (s *Server) buildRequest(req *mwsv1.GetRequest) (*http.Request, error) {
	path := req.GetPath()
	if !strings.HasPrefix(path, "/") || len(path) > s.cfg.MaxPathBytes {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_PATH", "path must start with / and be at most %d bytes", s.cfg.MaxPathBytes)
	}
	u, err := url.ParseRequestURI(path)
	if err != nil || u.Host != "" || u.Scheme != "" {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_PATH", "path %q is not an origin-form request target", path)
	}
	if len(req.GetHeaders()) > s.cfg.MaxHeaders {
		return nil, rpcerr.New(codes.InvalidArgument, "TOO_MANY_HEADERS", "%d headers exceed the limit of %d", len(req.GetHeaders()), s.cfg.MaxHeaders)
	}
	h := http.Header{}
	total := 0
	for k, v := range req.GetHeaders() {
		total += len(k) + len(v)
		ck := http.CanonicalHeaderKey(k)
		if !validHeader(k, v) {
			return nil, rpcerr.New(codes.InvalidArgument, "BAD_HEADER", "header %q is not a valid HTTP header", k)
		}
		if !hopByHop[ck] {
			h.Set(ck, v)
		}
	}
	if total > s.cfg.MaxHeaderBytes {
		return nil, rpcerr.New(codes.InvalidArgument, "HEADERS_TOO_LARGE", "headers of %d bytes exceed the limit of %d", total, s.cfg.MaxHeaderBytes)
	}
	hreq, err := http.NewRequest(http.MethodGet, "http://"+req.GetBackend()+path, nil)
	if err != nil {
		return nil, rpcerr.New(codes.InvalidArgument, "BAD_PATH", "%v", err)
	}
	hreq.Header = h
	return hreq, nil
}

func validHeader(k, v string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return !strings.ContainsAny(v, "\r\n\x00")
}

func outcome(o objcache.Outcome, stored bool) mwsv1.CacheOutcome {
	switch {
	case o == objcache.Hit:
		return mwsv1.CacheOutcome_CACHE_OUTCOME_HIT
	case o == objcache.Revalidated:
		return mwsv1.CacheOutcome_CACHE_OUTCOME_REVALIDATED
	case !stored:
		return mwsv1.CacheOutcome_CACHE_OUTCOME_UNCACHED
	default:
		return mwsv1.CacheOutcome_CACHE_OUTCOME_MISS
	}
}

// upstreamStatus turns a failure to reach or read a legacy server into a
// typed status. A status from the mux (unknown backend, backend refusing)
// keeps its code and reason.
func upstreamStatus(backend string, err error) error {
	if rpcerr.Reason(err) != "" {
		return rpcerr.New(rpcerr.Code(err), rpcerr.Reason(err), "backend %q: %v", backend, err)
	}
	msg := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return rpcerr.New(codes.DeadlineExceeded, "UPSTREAM_TIMEOUT", "backend %q: %v", backend, err)
	case errors.Is(err, context.Canceled):
		return rpcerr.New(codes.Canceled, "CANCELED", "backend %q: %v", backend, err)
	case errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(msg, "unexpected EOF"):
		return rpcerr.New(codes.DataLoss, "UPSTREAM_TRUNCATED", "backend %q: response truncated: %v", backend, err)
	case strings.Contains(msg, "malformed"):
		return rpcerr.New(codes.Unavailable, "UPSTREAM_MALFORMED", "backend %q: malformed response: %v", backend, err)
	case errors.Is(err, objcache.ErrClosed):
		return rpcerr.New(codes.Unavailable, "SHUTTING_DOWN", "MWS is shutting down")
	}
	return rpcerr.New(codes.Unavailable, "UPSTREAM_ERROR", "backend %q: %v", backend, err)
}
