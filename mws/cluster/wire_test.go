package cluster

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	cs := []claim{
		{user: "alice", device: "phone", mws: "n1", instance: 7, ts: 1 << 60, online: true},
		{user: "bob", device: strings.Repeat("d", MaxIDBytes), mws: strings.Repeat("m", maxNameBytes), instance: math.MaxUint64, ts: 1},
	}
	for _, kind := range []byte{msgClaims, msgState} {
		m, err := decodeMessage(encodeClaims(kind, cs), 10)
		if err != nil {
			t.Fatalf("kind %d: %v", kind, err)
		}
		if m.kind != kind || !reflect.DeepEqual(m.claims, cs) {
			t.Errorf("kind %d: got %+v", kind, m)
		}
	}
	m, err := decodeMessage(encodeLeave("n2", 42), 10)
	if err != nil || m.kind != msgLeave || m.name != "n2" || m.instance != 42 {
		t.Errorf("leave: %+v, %v", m, err)
	}
	if len(encodeClaims(msgClaims, cs[1:])) > 1000 {
		t.Error("largest update does not fit one gossip packet")
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	good := encodeClaims(msgClaims, []claim{{user: "u", device: "d", mws: "m", ts: 1, online: true}})
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{9}},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(append([]byte{}, good...), 0)},
		{"bad flag", append(append([]byte{}, good[:len(good)-1]...), 2)},
		{"too many claims", encodeClaims(msgClaims, make([]claim, 3))},
		{"huge count", []byte{msgClaims, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"empty ids", encodeClaims(msgClaims, []claim{{}})},
		{"long user", encodeClaims(msgClaims, []claim{{user: strings.Repeat("u", MaxIDBytes+1), device: "d", mws: "m"}})},
		{"not UTF-8", encodeClaims(msgClaims, []claim{{user: "\xff", device: "d", mws: "m"}})},
		{"empty leave", encodeLeave("", 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := decodeMessage(tt.b, 2); err == nil {
				t.Errorf("accepted: %+v", m)
			}
		})
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeClaims(msgClaims, []claim{{user: "u", device: "d", mws: "m", instance: 1, ts: 2, online: true}}))
	f.Add(encodeClaims(msgState, []claim{{user: "u", device: "d", mws: "m"}, {user: "v", device: "e", mws: "n"}}))
	f.Add(encodeLeave("n1", 3))
	f.Add([]byte{msgClaims, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b, 64)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		var again []byte
		if m.kind == msgLeave {
			again = encodeLeave(m.name, m.instance)
		} else {
			again = encodeClaims(m.kind, m.claims)
		}
		if string(again) != string(b) {
			// Uvarints have non-minimal encodings; only check decoding again.
			m2, err := decodeMessage(again, 64)
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("re-decode: %+v, %v; want %+v", m2, err, m)
			}
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(nodeMeta{instance: 1, version: 2, grpcAddr: "h:1", load: Load{Sessions: 3, MaxSessions: 4, CPU: 0.5, Draining: true}}.encode())
	f.Add([]byte{metaFormat, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if err := m.load.validate(); err != nil {
			t.Fatalf("decoded an invalid load: %v", err)
		}
		m2, err := decodeMeta(m.encode())
		if err != nil || m2 != m {
			t.Fatalf("re-decode: %+v, %v; want %+v", m2, err, m)
		}
	})
}
