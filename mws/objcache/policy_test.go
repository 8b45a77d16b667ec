package objcache

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestStoredHeaderDropsHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":        {"X-Conn-Secret, keep-alive"},
		"X-Conn-Secret":     {"1"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Content-Type":      {"image/png"},
	}
	got := storedHeader(h)
	if len(got) != 1 || got.Get("Content-Type") != "image/png" {
		t.Fatalf("storedHeader = %v, want only Content-Type", got)
	}
	if h.Get("Connection") == "" {
		t.Fatal("storedHeader modified its argument")
	}
}

// FuzzVaryNames checks the hand-split Vary (and Connection) field lists:
// whatever a legacy server sends, the names are canonical, sorted and
// distinct, and "*" is recognised.
func FuzzVaryNames(f *testing.F) {
	for _, s := range []string{"Accept", "accept, Accept-Encoding", " , ,", "*", "Accept,*", "a,,b , c", "\x00,\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		names, star := varyNames(http.Header{"Vary": {v}})
		tokens := splitTokens([]string{v})
		if star != slices.Contains(tokens, "*") {
			t.Fatalf("star = %v for tokens %q", star, tokens)
		}
		if star && names != nil {
			t.Fatalf("names %q with star", names)
		}
		if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
			t.Fatalf("names %q not sorted and distinct", names)
		}
		for _, n := range names {
			if n == "" || n != http.CanonicalHeaderKey(n) || strings.TrimSpace(n) != n || strings.Contains(n, ",") {
				t.Fatalf("bad name %q in %q", n, names)
			}
		}
		_ = storedHeader(http.Header{"Connection": {v}, "Vary": {v}})
	})
}
