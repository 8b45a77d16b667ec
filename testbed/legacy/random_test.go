package legacy

import (
	"bytes"
	"io"
	"testing"
)

func TestRandomStream(t *testing.T) {
	const n = 1 << 20
	want, _ := randomPrefix(t, 42, n)
	if bytes.Equal(want[:64], make([]byte, 64)) {
		t.Fatal("stream starts with zeros")
	}
	for _, tc := range []struct {
		name    string
		readLen int
	}{
		{name: "bytes", readLen: 1},
		{name: "odd", readLen: 7},
		{name: "page", readLen: 4096},
		{name: "chunk", readLen: 64 << 10},
		{name: "whole", readLen: n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := RandomStream(42)
			got := make([]byte, 0, n)
			buf := make([]byte, tc.readLen)
			for len(got) < n {
				k, err := r.Read(buf[:min(tc.readLen, n-len(got))])
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:k]...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("reading in %d-byte steps gives different bytes", tc.readLen)
			}
		})
	}
	t.Run("seeds differ", func(t *testing.T) {
		other := make([]byte, 64)
		if _, err := io.ReadFull(RandomStream(43), other); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(other, want[:64]) {
			t.Fatal("seeds 42 and 43 give the same bytes")
		}
	})
}
