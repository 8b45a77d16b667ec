package clientlib

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/grpc/status"

	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// CacheOutcome tells how the MWS answered a Get.
type CacheOutcome = mwsv1.CacheOutcome

// Object is a fetched server object.
type Object struct {
	Body        []byte
	Status      int
	ContentType string
	Header      http.Header
	// Digest ("sha256:<hex>") names the copy the MWS keeps; a savepoint
	// refers to the object by it. Empty when the MWS keeps no copy.
	Digest string
	Cache  CacheOutcome
	// Adapted reports that Body is a variant the MWS made for this device
	// from the original (of OriginalContentType and OriginalSize); Digest
	// still names the original. BudgetMet is false when the device's byte
	// budget could not be met.
	Adapted             bool
	OriginalContentType string
	OriginalSize        int64
	BudgetMet           bool
}

// GetOption adjusts a Get.
type GetOption func(*mwsv1.GetRequest)

// WithHeader passes a request header (e.g. Accept) to the legacy server.
func WithHeader(name, value string) GetOption {
	return func(r *mwsv1.GetRequest) {
		if r.Headers == nil {
			r.Headers = map[string]string{}
		}
		r.Headers[name] = value
	}
}

// ErrTooLarge is returned when an object exceeds Config.MaxObjectBytes.
var ErrTooLarge = errors.New("clientlib: object exceeds MaxObjectBytes")

// Get fetches path from the named HTTP backend through the MWS.
func (s *Session) Get(ctx context.Context, backend, path string, opts ...GetOption) (*Object, error) {
	req := &mwsv1.GetRequest{SessionId: s.id, Backend: backend, Path: path}
	for _, o := range opts {
		o(req)
	}
	var obj *Object
	err := s.retry(ctx, func(r *route) error {
		var err error
		obj, err = s.get(ctx, r, req)
		return err
	})
	if err != nil && ctx.Err() != nil {
		// The caller's deadline or cancellation, whatever the MWS saw.
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return obj, err
}

func (s *Session) get(ctx context.Context, r *route, req *mwsv1.GetRequest) (*Object, error) {
	backend, path := req.Backend, req.Path
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := r.api.Get(s.ctx(ctx), req)
	if err != nil {
		return nil, err
	}
	first, err := st.Recv()
	if err != nil {
		return nil, err
	}
	meta := first.GetMeta()
	if meta == nil {
		return nil, errors.New("clientlib: Get: first message carries no metadata")
	}
	if meta.Size > s.c.cfg.MaxObjectBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, meta.Size)
	}
	var body bytes.Buffer
	if meta.Size > 0 {
		body.Grow(int(meta.Size))
	}
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if int64(body.Len()+len(m.GetChunk())) > s.c.cfg.MaxObjectBytes {
			return nil, ErrTooLarge
		}
		body.Write(m.GetChunk())
	}
	if meta.Size >= 0 && int64(body.Len()) != meta.Size {
		return nil, fmt.Errorf("clientlib: Get %s%s: %d body bytes, metadata says %d", backend, path, body.Len(), meta.Size)
	}
	h := http.Header{}
	for k, v := range meta.Headers {
		h.Set(k, v)
	}
	return &Object{Body: body.Bytes(), Status: int(meta.Status), ContentType: meta.ContentType, Header: h, Digest: meta.Digest, Cache: meta.Cache,
		Adapted: meta.Adapted, OriginalContentType: meta.OriginalContentType, OriginalSize: meta.OriginalSize, BudgetMet: meta.BudgetMet}, nil
}
