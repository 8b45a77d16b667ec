package legacy

import (
	"crypto/sha256"
	"io"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests; it is generous because the
// race detector and a loaded machine slow everything down.
const waitTimeout = 20 * time.Second

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitClosed waits for ch to be closed.
func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// isClosed reports whether ch is closed, without waiting.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// randomPrefix returns the first n bytes of RandomStream(seed) and their hash.
func randomPrefix(t testing.TB, seed uint64, n int64) ([]byte, [32]byte) {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(RandomStream(seed), b); err != nil {
		t.Fatal(err)
	}
	return b, sha256.Sum256(b)
}
