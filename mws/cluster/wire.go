package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Directory and leave messages travel as memberlist user messages
// (broadcasts, direct TCP sends) and as the push-pull user state. Wire form
// (integers uvarint, strings uvarint length + UTF-8 bytes):
//
//	msgClaims|msgState  count claim*
//	claim               user device mws instance ts online(0|1)
//	msgLeave            name instance
const (
	msgClaims byte = 1 // updates, gossiped
	msgLeave  byte = 2 // a node is about to leave gracefully
	msgState  byte = 3 // a full directory, exchanged on push-pull
)

// MaxIDBytes bounds a user or device identifier in the directory, so that
// a directory update always fits in one gossip packet.
const MaxIDBytes = 256

const (
	maxNameBytes = 64
	// minClaimBytes is the smallest encoded claim; it bounds the count a
	// message can claim to hold before anything is allocated.
	minClaimBytes = 3*2 + 3
	// maxStateBytes bounds the push-pull state, under memberlist's 20 MiB
	// limit for the whole exchange.
	maxStateBytes = 16 << 20
)

var errMessage = errors.New("cluster: malformed directory message")

// claim is one MWS's word about one device: it serves it (online) or
// served it and no longer does. Only that MWS writes it; the newest claim
// per (user, device, mws) wins.
type claim struct {
	user, device string
	mws          string
	// instance is the writer's run (nodeMeta.instance).
	instance uint64
	// ts is the writer's hybrid logical clock at the write, in Unix
	// nanoseconds.
	ts     uint64
	online bool
}

// newer orders the versions of one (user, device, mws) claim; any total
// order works as long as every node uses the same one.
func (c claim) newer(o claim) bool {
	if c.ts != o.ts {
		return c.ts > o.ts
	}
	if c.instance != o.instance {
		return c.instance > o.instance
	}
	return !c.online && o.online
}

type message struct {
	kind     byte
	claims   []claim
	name     string // msgLeave
	instance uint64 // msgLeave
}

func appendClaim(b []byte, c claim) []byte {
	b = appendStr(b, c.user)
	b = appendStr(b, c.device)
	b = appendStr(b, c.mws)
	b = binary.AppendUvarint(b, c.instance)
	b = binary.AppendUvarint(b, c.ts)
	if c.online {
		return append(b, 1)
	}
	return append(b, 0)
}

func encodeClaims(kind byte, cs []claim) []byte {
	b := []byte{kind}
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		b = appendClaim(b, c)
	}
	return b
}

func encodeLeave(name string, instance uint64) []byte {
	b := appendStr([]byte{msgLeave}, name)
	return binary.AppendUvarint(b, instance)
}

// decodeMessage parses a message from a peer. It never panics, allocates
// in proportion to len(b), and rejects more than maxClaims claims.
func decodeMessage(b []byte, maxClaims int) (message, error) {
	r := reader{b: b}
	m := message{kind: r.byte()}
	switch m.kind {
	case msgClaims, msgState:
		n := r.intUpTo(maxClaims)
		if r.err == nil && n > len(r.b)/minClaimBytes {
			r.fail(errShort)
		}
		if r.err != nil {
			break
		}
		m.claims = make([]claim, 0, n)
		for range n {
			c := claim{
				user:     r.str(MaxIDBytes),
				device:   r.str(MaxIDBytes),
				mws:      r.str(maxNameBytes),
				instance: r.uvarint(),
				ts:       r.uvarint(),
			}
			switch r.byte() {
			case 0:
			case 1:
				c.online = true
			default:
				r.fail(errors.New("bad online flag"))
			}
			if r.err == nil && (c.user == "" || c.device == "" || c.mws == "") {
				r.fail(errors.New("empty identifier"))
			}
			if r.err != nil {
				break
			}
			m.claims = append(m.claims, c)
		}
	case msgLeave:
		m.name = r.str(maxNameBytes)
		m.instance = r.uvarint()
		if r.err == nil && m.name == "" {
			r.fail(errors.New("empty name"))
		}
	default:
		if r.err == nil {
			r.fail(fmt.Errorf("unknown type %d", m.kind))
		}
	}
	if r.err != nil {
		return message{}, fmt.Errorf("%w: %v", errMessage, r.err)
	}
	if len(r.b) != 0 {
		return message{}, fmt.Errorf("%w: %d trailing bytes", errMessage, len(r.b))
	}
	return m, nil
}
