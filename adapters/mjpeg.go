package adapters

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"strconv"

	"github.com/imashproject/imash/profiles"
)

// ErrBadStream marks a malformed MJPEG stream.
var ErrBadStream = errors.New("adapters: malformed MJPEG stream")

// MJPEGOptions configure TranscodeMJPEG.
type MJPEGOptions struct {
	// SourceFrameRate is the input's frames per second (MJPEG over HTTP
	// carries no timestamps); with Constraints.MaxFrameRate below it,
	// frames are dropped evenly to meet it. Zero keeps every frame.
	SourceFrameRate float64
	// MaxFrameBytes bounds one input frame; a larger one is an error.
	MaxFrameBytes int64
}

// MJPEGStats count what a transcode did.
type MJPEGStats struct {
	FramesIn, FramesOut int
	BytesIn, BytesOut   int64
}

// TranscodeMJPEG adapts a multipart/x-mixed-replace MJPEG stream frame by
// frame (the frame is the unit a stream may be frozen and adapted at):
// every kept frame goes through Adapt with c, and frames are dropped evenly
// to bring SourceFrameRate down to c.MaxFrameRate. It reads parts separated
// by boundary from r and writes them, with the same boundary, to w, until
// r ends (nil) or ctx ends. A part that is not a JPEG passes through.
func (a *Adapter) TranscodeMJPEG(ctx context.Context, r io.Reader, boundary string, c profiles.Constraints, w io.Writer, opts MJPEGOptions) (MJPEGStats, error) {
	var st MJPEGStats
	if boundary == "" {
		return st, fmt.Errorf("%w: no boundary", ErrBadStream)
	}
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = 16 << 20
	}
	mr := multipart.NewReader(bufio.NewReader(r), boundary)
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(boundary); err != nil {
		return st, fmt.Errorf("%w: boundary %q: %v", ErrBadStream, boundary, err)
	}
	// keep decides per frame: with source rate S and target T < S, frame i
	// is kept when floor((i+1)·T/S) > floor(i·T/S), which spaces the kept
	// frames evenly.
	keep := func(i int) bool {
		S, T := opts.SourceFrameRate, c.MaxFrameRate
		if S <= 0 || T <= 0 || T >= S || !c.Allows("framerate") {
			return true
		}
		return int(float64(i+1)*T/S) > int(float64(i)*T/S)
	}
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return st, mw.Close()
		}
		if err != nil {
			return st, fmt.Errorf("%w: frame %d: %v", ErrBadStream, i, err)
		}
		frame, err := io.ReadAll(io.LimitReader(part, opts.MaxFrameBytes+1))
		if err != nil {
			return st, fmt.Errorf("%w: frame %d: %v", ErrBadStream, i, err)
		}
		if int64(len(frame)) > opts.MaxFrameBytes {
			return st, fmt.Errorf("%w: frame %d exceeds %d bytes", ErrBadStream, i, opts.MaxFrameBytes)
		}
		st.FramesIn++
		st.BytesIn += int64(len(frame))
		if !keep(i) {
			continue
		}
		// A part that is not a JPEG passes through as it came.
		out, ct := frame, part.Header.Get("Content-Type")
		if bytes.HasPrefix(frame, []byte{0xFF, 0xD8}) {
			res, err := a.Adapt(ctx, frame, c)
			if err != nil {
				return st, fmt.Errorf("frame %d: %w", i, err)
			}
			out, ct = res.Data, res.ContentType
		}
		h := textproto.MIMEHeader{}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		h.Set("Content-Length", strconv.Itoa(len(out)))
		pw, err := mw.CreatePart(h)
		if err != nil {
			return st, err
		}
		if _, err := pw.Write(out); err != nil {
			return st, err
		}
		st.FramesOut++
		st.BytesOut += int64(len(out))
	}
}
