package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// Load is what an MWS advertises about its capacity.
type Load struct {
	// Sessions is the number of sessions it holds; MaxSessions how many it
	// accepts (0: none, so LeastLoaded never picks it).
	Sessions    int
	MaxSessions int
	// CPU is the process's CPU use, 0 (idle) to 1 (all cores busy); see
	// CPUSampler.
	CPU float64
	// Draining means it takes no new sessions and is moving its sessions
	// away (rolling upgrade, operator request).
	Draining bool
}

// nodeMeta is the node metadata memberlist carries in every alive message.
// Wire form (all integers uvarint):
//
//	format(1) flags(1) instance version sessions maxSessions cpu(0-10000) len(grpc) grpc
type nodeMeta struct {
	// instance identifies this run of the node: a restart under the same
	// name gets a new one, so directory entries of the old run read offline.
	instance uint64
	// version counts SetLoad calls.
	version  uint64
	grpcAddr string
	load     Load
}

const (
	metaFormat    = 1
	flagDraining  = 1 << 0
	cpuResolution = 10000
)

var errMeta = errors.New("cluster: malformed node metadata")

func (m nodeMeta) encode() []byte {
	b := make([]byte, 0, 32+len(m.grpcAddr))
	b = append(b, metaFormat)
	var flags byte
	if m.load.Draining {
		flags |= flagDraining
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, m.instance)
	b = binary.AppendUvarint(b, m.version)
	b = binary.AppendUvarint(b, uint64(max(m.load.Sessions, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.load.MaxSessions, 0)))
	b = binary.AppendUvarint(b, uint64(math.Round(min(max(m.load.CPU, 0), 1)*cpuResolution)))
	b = binary.AppendUvarint(b, uint64(len(m.grpcAddr)))
	return append(b, m.grpcAddr...)
}

// decodeMeta parses metadata from a peer. It never panics and rejects
// anything this version would not have produced.
func decodeMeta(b []byte) (nodeMeta, error) {
	r := reader{b: b}
	var m nodeMeta
	if r.byte() != metaFormat {
		return nodeMeta{}, fmt.Errorf("%w: unknown format", errMeta)
	}
	flags := r.byte()
	if flags&^flagDraining != 0 {
		return nodeMeta{}, fmt.Errorf("%w: unknown flags %#x", errMeta, flags)
	}
	m.load.Draining = flags&flagDraining != 0
	m.instance = r.uvarint()
	m.version = r.uvarint()
	m.load.Sessions = r.intUpTo(math.MaxInt32)
	m.load.MaxSessions = r.intUpTo(math.MaxInt32)
	m.load.CPU = float64(r.intUpTo(cpuResolution)) / cpuResolution
	m.grpcAddr = r.str(maxGRPCAddrBytes)
	if r.err != nil {
		return nodeMeta{}, fmt.Errorf("%w: %v", errMeta, r.err)
	}
	if len(r.b) != 0 {
		return nodeMeta{}, fmt.Errorf("%w: %d trailing bytes", errMeta, len(r.b))
	}
	return m, nil
}

// reader decodes the package's wire formats; the first error sticks and
// later reads return zero values, so decoders check r.err once at the end.
type reader struct {
	b   []byte
	err error
}

var (
	errShort    = errors.New("truncated")
	errTooLarge = errors.New("value out of range")
	errUTF8     = errors.New("string is not UTF-8")
)

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail(errShort)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errShort)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) intUpTo(limit int) int {
	v := r.uvarint()
	if v > uint64(limit) {
		r.fail(errTooLarge)
		return 0
	}
	return int(v)
}

func (r *reader) str(limit int) string {
	n := r.intUpTo(limit)
	if len(r.b) < n {
		r.fail(errShort)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	if !utf8.ValidString(s) {
		r.fail(errUTF8)
		return ""
	}
	return s
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
