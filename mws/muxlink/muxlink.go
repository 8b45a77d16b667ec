// Package muxlink is an MWS's side of the mux API: it opens legacy streams,
// attaches to them, relays their bytes with offsets and commits, and hands
// them to other MWSs. Stream gives message-level access (for relaying a raw
// stream to a device with the device's own acknowledgements); Conn turns a
// stream into a net.Conn that commits what it has read (for protocol
// handlers such as HTTP).
package muxlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/imashproject/imash/internal/grpcbuf"
	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

// MaxChunk is the largest data message this package sends; it must not
// exceed the mux's configured MaxChunk.
const MaxChunk = 64 << 10

// Client is an MWS's connection to one mux.
type Client struct {
	cc  *grpc.ClientConn
	api muxv1.MuxClient
	log *slog.Logger
}

// Dial connects to the mux at addr. tlsConf must present the MWS's
// certificate and accept only the mux role (pki.ClientTLS).
func Dial(addr string, tlsConf *tls.Config, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := append(grpcbuf.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("muxlink: dial %s: %w", addr, err)
	}
	return &Client{cc: cc, api: muxv1.NewMuxClient(cc), log: log.With("mux", addr)}, nil
}

// Close closes the connection to the mux. Streams are not closed at the mux:
// they stay open for another MWS (or this one, later) to pick up.
func (c *Client) Close() error { return c.cc.Close() }

// API returns the raw gRPC client, for calls this package does not wrap.
func (c *Client) API() muxv1.MuxClient { return c.api }

// Open dials backend through the mux and attaches to the new stream.
func (c *Client) Open(ctx context.Context, backend, label string) (*Stream, error) {
	r, err := c.api.Open(ctx, &muxv1.OpenRequest{Backend: backend, Label: label})
	if err != nil {
		return nil, err
	}
	s, err := c.Attach(ctx, r.StreamId, r.Epoch)
	if err != nil {
		// Do not leave an orphan behind.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = c.api.Close(cctx, &muxv1.CloseRequest{StreamId: r.StreamId, Epoch: r.Epoch})
		return nil, err
	}
	s.backend = backend
	return s, nil
}

// Attach attaches to a stream this MWS owns at epoch (after Open, a handover
// to it, or a takeover). The stream's channel lives until Detach, Close, or
// a cut; ctx bounds only the attach itself.
func (c *Client) Attach(ctx context.Context, id string, epoch uint64) (*Stream, error) {
	return c.attach(ctx, &muxv1.Hello{StreamId: id, Epoch: epoch})
}

// AttachStandby attaches ahead to a stream that is at epoch and about to
// be handed to this MWS: it returns when the handover is done, with the
// stream at the new epoch (see Hello.standby). ctx bounds the wait.
func (c *Client) AttachStandby(ctx context.Context, id string, epoch uint64) (*Stream, error) {
	return c.attach(ctx, &muxv1.Hello{StreamId: id, Epoch: epoch, Standby: true})
}

func (c *Client) attach(ctx context.Context, hello *muxv1.Hello) (*Stream, error) {
	id := hello.GetStreamId()
	chCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	ac, err := c.api.Attach(chCtx)
	if err == nil {
		err = ac.Send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Hello{Hello: hello}})
		if errors.Is(err, io.EOF) {
			err = nil // the mux ended the call: Recv returns its status
		}
	}
	var first *muxv1.AttachResponse
	if err == nil {
		first, err = ac.Recv()
	}
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		cancel()
		return nil, err
	}
	att := first.GetAttached()
	if att == nil {
		cancel()
		return nil, fmt.Errorf("muxlink: attach %s: first message is not Attached", id)
	}
	epoch := att.GetEpoch()
	s := &Stream{
		c: c, id: id, epoch: epoch, backend: att.Backend, ac: ac, cancel: cancel, detached: chCtx.Done(),
		msgs: make(chan *muxv1.AttachResponse, 16), recvDone: make(chan struct{}),
		downStart: att.DownOffset, upNext: att.UpOffset,
		log: c.log.With("stream", id, "epoch", epoch),
	}
	go s.recvLoop()
	return s, nil
}

// Stream is an attached legacy stream.
type Stream struct {
	c         *Client
	id        string
	epoch     uint64
	backend   string
	ac        muxv1.Mux_AttachClient
	cancel    context.CancelFunc
	detached  <-chan struct{} // closed by Detach (and a cut by Handover)
	log       *slog.Logger
	downStart uint64

	sendMu sync.Mutex
	upNext uint64 // next up offset Write will use

	msgs     chan *muxv1.AttachResponse
	recvDone chan struct{}
	recvErr  error // valid after recvDone
}

// ID is the mux's stream id.
func (s *Stream) ID() string { return s.id }

// Epoch is the ownership epoch this stream is attached at.
func (s *Stream) Epoch() uint64 { return s.epoch }

// Backend is the backend name.
func (s *Stream) Backend() string { return s.backend }

// DownStart is the down offset delivery started at (the last commit).
func (s *Stream) DownStart() uint64 { return s.downStart }

// UpStart is the up offset the mux expected when this channel attached.
func (s *Stream) UpStart() uint64 {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.upNext
}

func (s *Stream) recvLoop() {
	defer close(s.recvDone)
	defer close(s.msgs)
	for {
		m, err := s.ac.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.recvErr = err
			}
			return
		}
		// Nobody may read msgs any more once the channel is detached (the
		// relay that owned it returned): do not block on it forever.
		select {
		case s.msgs <- m:
		case <-s.detached:
			s.recvErr = errDetached
			return
		}
	}
}

// errDetached is the channel's error when it was detached while the mux
// still had messages for it.
var errDetached = errors.New("muxlink: stream detached")

// Recv returns the next message from the mux: Data, Eof, UpAck, Cut or
// Closed. It returns io.EOF after the channel ended cleanly (after a Cut or
// Closed), or the channel's error.
func (s *Stream) Recv(ctx context.Context) (*muxv1.AttachResponse, error) {
	select {
	case m, ok := <-s.msgs:
		if ok {
			return m, nil
		}
		<-s.recvDone
		if s.recvErr != nil {
			return nil, s.recvErr
		}
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Messages exposes the receive channel for select loops; it is closed when
// the channel ends (then RecvErr tells why).
func (s *Stream) Messages() <-chan *muxv1.AttachResponse { return s.msgs }

// RecvErr is the channel's error after Messages was closed (nil for a clean
// end).
func (s *Stream) RecvErr() error {
	<-s.recvDone
	return s.recvErr
}

func (s *Stream) send(m *muxv1.AttachRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.ac.Send(m)
}

// SendAt sends up bytes at an explicit offset (relaying a device's bytes,
// which carry their own offsets). Chunks larger than MaxChunk are split.
func (s *Stream) SendAt(off uint64, b []byte) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for len(b) > 0 {
		n := min(len(b), MaxChunk)
		if err := s.ac.Send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Data{Data: &muxv1.Data{Offset: off, Data: b[:n]}}}); err != nil {
			return err
		}
		off += uint64(n)
		b = b[n:]
	}
	s.upNext = max(s.upNext, off)
	return nil
}

// Write sends b after every byte sent so far.
func (s *Stream) Write(b []byte) (int, error) {
	s.sendMu.Lock()
	off := s.upNext
	s.sendMu.Unlock()
	if err := s.SendAt(off, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Commit tells the mux every down byte before off is processed.
func (s *Stream) Commit(off uint64) error {
	return s.send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_Commit{Commit: &muxv1.Commit{Offset: off}}})
}

// CloseWrite half-closes towards the legacy server after every byte before
// off.
func (s *Stream) CloseWrite(off uint64) error {
	return s.send(&muxv1.AttachRequest{Msg: &muxv1.AttachRequest_CloseWrite{CloseWrite: &muxv1.CloseWrite{Offset: off}}})
}

// Detach ends this channel without closing the stream at the mux: the
// stream keeps its legacy connection and can be attached again.
func (s *Stream) Detach() {
	s.cancel()
}

// Close closes the stream at the mux (and so the legacy connection). The
// channel then delivers Closed and ends; Detach stops it sooner.
func (s *Stream) Close(ctx context.Context) error {
	_, err := s.c.api.Close(ctx, &muxv1.CloseRequest{StreamId: s.id, Epoch: s.epoch})
	return err
}

// Handover grants the stream to the MWS named to, committing commit first.
// This channel is cut.
func (s *Stream) Handover(ctx context.Context, to string, commit uint64) (*muxv1.HandoverResponse, error) {
	r, err := s.c.api.Handover(ctx, &muxv1.HandoverRequest{StreamId: s.id, Epoch: s.epoch, To: to, HasCommit: true, CommitOffset: commit})
	if err == nil {
		s.cancel()
	}
	return r, err
}
