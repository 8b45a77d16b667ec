package cluster

import (
	"fmt"
	"testing"
)

func BenchmarkDirectoryLookup(b *testing.B) {
	d := newDirectory(100000, func(string, uint64) bool { return true })
	for i := range 10000 {
		for _, mws := range []string{"a", "b"} {
			d.merge(claim{user: fmt.Sprint("user", i%1000), device: fmt.Sprint("dev", i), mws: mws, instance: 1, ts: uint64(i + 1), online: true})
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, ok := d.lookup(fmt.Sprint("user", i%1000), fmt.Sprint("dev", i%10000)); !ok {
			b.Fatal("missing")
		}
	}
}

func BenchmarkMergeRemote(b *testing.B) {
	c := &Cluster{log: testLogger(b)}
	c.dir = newDirectory(1<<20, func(string, uint64) bool { return true })
	msg := encodeClaims(msgClaims, []claim{{user: "alice", device: "phone", mws: "n1", instance: 1, ts: 1, online: true}})
	b.ReportAllocs()
	for b.Loop() {
		m, err := decodeMessage(msg, maxBroadcastClaims)
		if err != nil {
			b.Fatal(err)
		}
		c.mergeRemote(m.claims)
	}
}
