package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/testbed/legacy"
)

// Stream directions of a streamResult.
const (
	dirUp   = "up"   // device → legacy server
	dirDown = "down" // legacy server → device
)

// streamResult is one timed transfer through a raw byte stream.
type streamResult struct {
	Path      string  `json:"path"`      // "direct" or "imash"
	Direction string  `json:"direction"` // "up" or "down"
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	MiBps     float64 `json:"mib_per_s"`
	// SHA256 is the hash of the bytes the receiving end read; both ends'
	// hashes and the expected one agreed, or the run failed.
	SHA256 string `json:"sha256"`
}

// halfConn is a byte stream that can be half-closed: *net.TCPConn and
// *clientlib.Conn.
type halfConn interface {
	net.Conn
	CloseWrite() error
}

// streamBench pushes data both ways through raw byte streams, to the
// legacy sink and from the legacy source, through imash and directly, and
// checks every transfer with SHA-256 at both ends.
type streamBench struct {
	source, sink *legacy.StreamServer
	session      *clientlib.Session
	// bytes is the size of each transfer; upload is the payload sent up
	// and downSum the SHA-256 of what the source sends down.
	bytes   int64
	upload  []byte
	downSum [32]byte
	// sourceConns and sinkConns count the connections made so far, to
	// find each one's server side.
	sourceConns, sinkConns int
}

// newStreamBench prepares transfers of mib MiB for a source that sends
// RandomStream(seed); the upload payload is RandomStream(seed+1).
func newStreamBench(source, sink *legacy.StreamServer, session *clientlib.Session, mib int, seed uint64) (*streamBench, error) {
	n := int64(mib) << 20
	b := &streamBench{source: source, sink: sink, session: session, bytes: n, upload: make([]byte, n)}
	if _, err := io.ReadFull(legacy.RandomStream(seed+1), b.upload); err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.CopyN(h, legacy.RandomStream(seed), n); err != nil {
		return nil, err
	}
	copy(b.downSum[:], h.Sum(nil))
	return b, nil
}

// run does, for each direction, one transfer per path, the path order of
// each direction given by imashFirst.
func (b *streamBench) run(ctx context.Context, imashFirst [2]bool) ([]streamResult, error) {
	var out []streamResult
	for i, dir := range []string{dirUp, dirDown} {
		paths := []string{pathDirect, pathImash}
		if imashFirst[i] {
			paths[0], paths[1] = paths[1], paths[0]
		}
		for _, path := range paths {
			r, err := b.transfer(ctx, path, dir)
			if err != nil {
				return out, fmt.Errorf("raw stream %s %s: %w", dir, path, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// dial opens a raw stream to backend over path.
func (b *streamBench) dial(ctx context.Context, path, backend string, srv *legacy.StreamServer) (halfConn, error) {
	if path == pathImash {
		return b.session.Dial(ctx, backend)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", srv.Addr())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// transfer times one transfer: up sends the payload to the sink, which
// closes the connection once it has read it all, so the time to EOF is the
// time for the last byte to arrive; down half-closes at once and reads the
// source's bytes until its EOF. The clock starts once the stream is open.
func (b *streamBench) transfer(ctx context.Context, path, dir string) (streamResult, error) {
	srv, backend, idx := b.sink, sinkBackend, &b.sinkConns
	if dir == dirDown {
		srv, backend, idx = b.source, sourceBackend, &b.sourceConns
	}
	conn, err := b.dial(ctx, path, backend, srv)
	if err != nil {
		return streamResult{}, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	server, err := srv.WaitConn(ctx, *idx)
	if err != nil {
		return streamResult{}, err
	}
	*idx++

	start := time.Now()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	if dir == dirUp {
		if _, err := io.CopyBuffer(onlyWriter{conn}, bytes.NewReader(b.upload), buf); err != nil {
			return streamResult{}, fmt.Errorf("write: %w", err)
		}
		h.Write(b.upload)
	}
	if err := conn.CloseWrite(); err != nil {
		return streamResult{}, fmt.Errorf("close write: %w", err)
	}
	got, err := io.CopyBuffer(h, onlyReader{conn}, buf)
	elapsed := time.Since(start)
	if err != nil {
		return streamResult{}, fmt.Errorf("read: %w", err)
	}
	select {
	case <-server.Done():
	case <-ctx.Done():
		return streamResult{}, ctx.Err()
	}
	if err := server.Err(); err != nil {
		return streamResult{}, fmt.Errorf("legacy server: %w", err)
	}

	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	if dir == dirUp {
		if rs := server.ReceivedSum(); got != 0 || server.Received() != b.bytes || rs != sum {
			return streamResult{}, fmt.Errorf("%w: sent %d bytes (sha256 %x…), the sink received %d (sha256 %x…) and sent back %d",
				ErrMismatch, b.bytes, sum[:8], server.Received(), rs[:8], got)
		}
	} else {
		ss := server.SentSum()
		if got != b.bytes || server.Sent() != b.bytes || ss != sum || sum != b.downSum {
			return streamResult{}, fmt.Errorf("%w: the source sent %d bytes (sha256 %x…), %d arrived (sha256 %x…), expected sha256 %x…",
				ErrMismatch, server.Sent(), ss[:8], got, sum[:8], b.downSum[:8])
		}
	}
	secs := elapsed.Seconds()
	return streamResult{
		Path: path, Direction: dir, Bytes: b.bytes, Seconds: secs,
		MiBps: float64(b.bytes) / (1 << 20) / secs, SHA256: fmt.Sprintf("%x", sum),
	}, nil
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so that io.CopyBuffer
// uses the given buffer on both paths alike.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }
