package legacy

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// image looks up the {name} path value, answering 404 if there is none.
func (s *HTTPServer) image(w http.ResponseWriter, r *http.Request) (*Image, bool) {
	img, ok := s.set.Image(r.PathValue("name"))
	if !ok {
		http.NotFound(w, r)
	}
	return img, ok
}

// markComplete records that the whole body of a 200 response was written.
func markComplete(w http.ResponseWriter) {
	if rec, ok := w.(*recorder); ok {
		rec.complete = true
	}
}

func setImageHeaders(h http.Header, img *Image, cacheControl string) {
	h.Set("Content-Type", "image/jpeg")
	h.Set("ETag", img.ETag)
	h.Set("Cache-Control", cacheControl)
}

// cached serves images through http.ServeContent, which implements the
// validators (If-None-Match, If-Modified-Since and friends) and Range.
func (s *HTTPServer) cached(cacheControl string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		img, ok := s.image(w, r)
		if !ok {
			return
		}
		setImageHeaders(w.Header(), img, cacheControl)
		http.ServeContent(w, r, img.Name, img.ModTime, bytes.NewReader(img.Bytes))
		if rec, ok := w.(*recorder); ok && rec.written == int64(len(img.Bytes)) {
			rec.complete = true
		}
	}
}

func (s *HTTPServer) index(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	for _, img := range s.set.images {
		fmt.Fprintf(&b, "%s %d\n", img.Name, len(img.Bytes))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := w.Write([]byte(b.String())); err == nil {
		markComplete(w)
	}
}

// slow paces the body at the requested rate by writing small chunks at
// their due time (relative to the start, so pauses do not accumulate
// drift) and flushing each one.
func (s *HTTPServer) slow(w http.ResponseWriter, r *http.Request) {
	bps, err := strconv.ParseInt(r.URL.Query().Get("bps"), 10, 64)
	if err != nil || bps <= 0 {
		http.Error(w, "bps must be a positive integer", http.StatusBadRequest)
		return
	}
	img, ok := s.image(w, r)
	if !ok {
		return
	}
	h := w.Header()
	setImageHeaders(h, img, s.maxAge)
	h.Set("Last-Modified", img.ModTime.UTC().Format(http.TimeFormat))
	h.Set("Content-Length", strconv.Itoa(len(img.Bytes)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	chunk := int(min(max(bps/20, 1), 64<<10))
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for off := 0; off < len(img.Bytes); {
		due := start.Add(time.Duration(int64(off) * int64(time.Second) / bps))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				return
			case <-s.done:
				return
			}
		}
		n := min(chunk, len(img.Bytes)-off)
		if _, err := w.Write(img.Bytes[off : off+n]); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		off += n
	}
	markComplete(w)
}

// truncated takes the connection over to send a response whose body stops
// halfway, which a well-behaved server could not produce.
func (s *HTTPServer) truncated(w http.ResponseWriter, r *http.Request) {
	img, ok := s.image(w, r)
	if !ok {
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nETag: %s\r\n\r\n",
		len(img.Bytes), img.ETag)
	if r.Method != http.MethodHead {
		_, _ = rw.Write(img.Bytes[:len(img.Bytes)/2])
	}
	_ = rw.Flush()
}

// garbageResponse starts with a status line no HTTP client accepts.
const garbageResponse = "HTPT/1.1 2OO 0K\r\nthis is not http\r\n\r\n\x00\x01\x02"

func (s *HTTPServer) garbage(w http.ResponseWriter, r *http.Request) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	_, _ = rw.WriteString(garbageResponse)
	_ = rw.Flush()
}
