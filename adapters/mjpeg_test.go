package adapters

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"mime/multipart"
	"net/textproto"
	"testing"

	"github.com/imashproject/imash/profiles"
)

// mjpegStream builds an MJPEG stream of n 640x480 frames.
func mjpegStream(t testing.TB, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.SetBoundary("frame"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, 640, 480))
		for y := range 480 {
			for x := range 640 {
				img.Set(x, y, color.RGBA{uint8(x + i*10), uint8(y), uint8(i * 20), 255})
			}
		}
		var f bytes.Buffer
		if err := jpeg.Encode(&f, img, &jpeg.Options{Quality: 80}); err != nil {
			t.Fatal(err)
		}
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/jpeg"}})
		if err != nil {
			t.Fatal(err)
		}
		pw.Write(f.Bytes())
	}
	mw.Close()
	return buf.Bytes()
}

func TestTranscodeMJPEG(t *testing.T) {
	a, err := New(NewDefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := mjpegStream(t, 30)
	pda := profiles.Constraints{MaxWidth: 240, MaxHeight: 320, ColorDepth: 12, Formats: []string{"image/jpeg"}, MaxFrameRate: 10}
	for _, tc := range []struct {
		name       string
		c          profiles.Constraints
		sourceRate float64
		wantFrames int
		maxWidth   int
	}{
		{"pda at a third of the rate", pda, 30, 10, 240},
		{"pda, rate unknown", pda, 0, 30, 240},
		{"no frame-rate adaptation allowed", func() profiles.Constraints {
			c := pda
			c.Allowed = []string{"resize", "recolor", "reencode", "convert"}
			return c
		}(), 30, 30, 240},
		{"workstation", profiles.Constraints{MaxWidth: 1600, MaxHeight: 1200}, 30, 30, 640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			st, err := a.TranscodeMJPEG(context.Background(), bytes.NewReader(in), "frame", tc.c, &out, MJPEGOptions{SourceFrameRate: tc.sourceRate})
			if err != nil {
				t.Fatal(err)
			}
			if st.FramesIn != 30 || st.FramesOut != tc.wantFrames {
				t.Fatalf("frames in %d out %d, want 30 and %d", st.FramesIn, st.FramesOut, tc.wantFrames)
			}
			mr := multipart.NewReader(&out, "frame")
			n := 0
			for {
				p, err := mr.NextPart()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				frame, _ := io.ReadAll(p)
				cfg, err := jpeg.DecodeConfig(bytes.NewReader(frame))
				if err != nil {
					t.Fatalf("frame %d: %v", n, err)
				}
				if cfg.Width > tc.maxWidth {
					t.Fatalf("frame %d is %d wide, want at most %d", n, cfg.Width, tc.maxWidth)
				}
				n++
			}
			if n != tc.wantFrames {
				t.Fatalf("the output holds %d frames, stats say %d", n, tc.wantFrames)
			}
		})
	}
}

func TestTranscodeMJPEGBadInput(t *testing.T) {
	a, err := New(NewDefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := mjpegStream(t, 2)
	for _, tc := range []struct {
		name     string
		in       []byte
		boundary string
		opts     MJPEGOptions
	}{
		{"no boundary", in, "", MJPEGOptions{}},
		{"wrong boundary", in, "other", MJPEGOptions{}},
		{"truncated", in[:len(in)/2], "frame", MJPEGOptions{}},
		{"frame over the limit", in, "frame", MJPEGOptions{MaxFrameBytes: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.TranscodeMJPEG(context.Background(), bytes.NewReader(tc.in), tc.boundary, profiles.Constraints{MaxWidth: 240, MaxHeight: 320}, io.Discard, tc.opts)
			if !errors.Is(err, ErrBadStream) && !errors.As(err, new(*DecodeError)) {
				t.Fatalf("got %v, want ErrBadStream or a decode error", err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.TranscodeMJPEG(ctx, bytes.NewReader(in), "frame", profiles.Constraints{}, io.Discard, MJPEGOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// FuzzTranscodeMJPEG: a stream is untrusted bytes; no input may panic.
func FuzzTranscodeMJPEG(f *testing.F) {
	f.Add(mjpegStream(f, 1))
	f.Add([]byte("--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n--frame--\r\n"))
	a, err := New(NewDefaultConfig(), nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = a.TranscodeMJPEG(context.Background(), bytes.NewReader(data), "frame",
			profiles.Constraints{MaxWidth: 64, MaxHeight: 64, MaxFrameRate: 5}, io.Discard, MJPEGOptions{SourceFrameRate: 10, MaxFrameBytes: 1 << 20})
	})
}
