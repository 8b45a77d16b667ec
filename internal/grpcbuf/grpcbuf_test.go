package grpcbuf

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	muxv1 "github.com/imashproject/imash/proto/imash/mux/v1"
)

func TestCodecRoundTrip(t *testing.T) {
	for _, size := range []int{0, 100, 64 << 10, 3 << 20} {
		in := &muxv1.Data{Offset: uint64(size), Data: bytes.Repeat([]byte{7}, size)}
		out, err := Codec{}.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		wire := out.Materialize()
		out.Free()
		// Decode it whole, and split across two buffers as it may arrive.
		for _, data := range []mem.BufferSlice{
			{mem.SliceBuffer(wire)},
			{mem.SliceBuffer(wire[:len(wire)/2]), mem.SliceBuffer(wire[len(wire)/2:])},
		} {
			var got muxv1.Data
			if err := (Codec{}).Unmarshal(data, &got); err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !proto.Equal(&got, in) {
				t.Fatalf("size %d: round trip differs", size)
			}
		}
	}
	if _, err := (Codec{}).Marshal("not a message"); err == nil {
		t.Fatal("marshalled a string")
	}
}
