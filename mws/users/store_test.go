package users

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer is a bytes.Buffer safe for a logger used from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newTestStore(t *testing.T) (s *Store, path string, clock *fakeClock, log *syncBuffer) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "users.htpasswd")
	var f File
	if err := f.Set("alice", "a", MinCost); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	clock = &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	log = &syncBuffer{}
	s, err := NewStore(path, StoreConfig{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, path, clock, log
}

func edit(t *testing.T, path string, change func(*File) error) {
	t.Helper()
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := change(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
}

func TestStoreReloadsChangedFile(t *testing.T) {
	s, path, clock, log := newTestStore(t)
	if err := s.Verify("alice", "a"); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	edit(t, path, func(f *File) error { return f.Set("bob", "b", MinCost) })
	// Within the interval the file is not looked at.
	clock.Advance(500 * time.Millisecond)
	if err := s.Verify("bob", "b"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("Verify before the interval: %v, want ErrUnknownUser", err)
	}
	clock.Advance(500 * time.Millisecond)
	if err := s.Verify("bob", "b"); err != nil {
		t.Fatalf("Verify after the interval: %v", err)
	}
	if !strings.Contains(log.String(), "reloaded") {
		t.Errorf("reload not logged: %s", log)
	}

	edit(t, path, func(f *File) error { return f.Delete("alice") })
	clock.Advance(time.Second)
	if err := s.Verify("alice", "a"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("deleted user: %v, want ErrUnknownUser", err)
	}
	if got := s.Users(); len(got) != 1 || got[0] != "bob" {
		t.Errorf("Users = %v", got)
	}
}

func TestStoreKeepsLastGoodContents(t *testing.T) {
	s, path, clock, log := newTestStore(t)

	if err := os.WriteFile(path, []byte("alice:$apr1$x$y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clock.Advance(time.Second)
		if err := s.Verify("alice", "a"); err != nil {
			t.Fatalf("Verify with a broken file: %v, want the last good contents", err)
		}
	}
	if n := strings.Count(log.String(), "not reloaded"); n != 1 {
		t.Errorf("broken file logged %d times, want once:\n%s", n, log)
	}
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("Reload of a broken file: %v, want a parse error with its line", err)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := s.Verify("alice", "a"); err != nil {
		t.Errorf("Verify with the file gone: %v", err)
	}

	var f File
	if err := f.Set("carol", "c", MinCost); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := s.Verify("carol", "c"); err != nil {
		t.Errorf("Verify after the file was fixed: %v", err)
	}
}

func TestStoreClockBackwards(t *testing.T) {
	s, path, clock, _ := newTestStore(t)
	edit(t, path, func(f *File) error { return f.Set("bob", "b", MinCost) })
	clock.Advance(-time.Hour)
	if err := s.Verify("bob", "b"); err != nil {
		t.Errorf("Verify after the clock went back: %v", err)
	}
}

func TestNewStoreErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewStore(filepath.Join(dir, "missing"), StoreConfig{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var pe *ParseError
	if _, err := NewStore(bad, StoreConfig{}); !errors.As(err, &pe) {
		t.Errorf("bad file: %v, want a *ParseError", err)
	}
	if _, err := NewStore(bad, StoreConfig{CheckInterval: -1}); err == nil {
		t.Error("negative CheckInterval accepted")
	}
}

func TestStoreConcurrentVerify(t *testing.T) {
	s, path, clock, _ := newTestStore(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				clock.Advance(100 * time.Millisecond)
				if err := s.Verify("alice", "a"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 5 {
		edit(t, path, func(f *File) error { return f.Set("bob", string(rune('a'+i)), MinCost) })
	}
	wg.Wait()
}
