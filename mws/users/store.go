package users

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often, at most, a Store looks at its file for
// changes when CheckInterval is zero.
const DefaultCheckInterval = time.Second

// StoreConfig configures a Store. The zero value is ready to use.
type StoreConfig struct {
	// CheckInterval is the least time between two looks (one stat) at the
	// file, made by Verify; zero means DefaultCheckInterval. Shorter picks
	// up an operator's change sooner at the cost of more stats under load.
	CheckInterval time.Duration
	// Now returns the current time; nil means time.Now. Tests inject a
	// fake clock.
	Now func() time.Time
	// Logger receives reloads and reload failures (key "file"); nil
	// discards them.
	Logger *slog.Logger
}

// Store is a user file on disk that reloads itself when it changes, so that
// operators can add or remove users without restarting the MWS. Verify
// looks at the file at most once per CheckInterval and re-reads it when its
// size, modification time or identity (a rename over it, as Save and
// htpasswd do) changed. A changed file that does not parse is logged and
// ignored: the last good contents stay in use until the file is fixed.
// A Store is safe for concurrent use.
type Store struct {
	path     string
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger

	file atomic.Pointer[File]

	// mu serialises checks and reloads and guards the fields below.
	mu        sync.Mutex
	lastCheck time.Time
	// seen is the version of the file last loaded or last tried, so that a
	// broken file is reported once, not at every check.
	seen    os.FileInfo
	lastErr string
}

// NewStore loads the user file at path. Unlike a later reload, a file that
// is missing or does not parse here is an error.
func NewStore(path string, cfg StoreConfig) (*Store, error) {
	if cfg.CheckInterval < 0 {
		return nil, fmt.Errorf("users: store: CheckInterval %v is negative", cfg.CheckInterval)
	}
	s := &Store{path: path, interval: cfg.CheckInterval, now: cfg.Now, log: cfg.Logger}
	if s.interval == 0 {
		s.interval = DefaultCheckInterval
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastCheck = s.now()
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Verify is File.Verify on the current contents of the file, after looking
// for changes if CheckInterval has passed since the last look.
func (s *Store) Verify(user, password string) error {
	s.maybeReload()
	return s.file.Load().Verify(user, password)
}

// Users returns the user names of the current contents, sorted.
func (s *Store) Users() []string { return s.file.Load().Users() }

// Reload re-reads the file now, whether or not it changed. On error the
// previous contents stay in use.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastCheck = s.now()
	return s.load()
}

func (s *Store) maybeReload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	// A clock that went backwards counts as due, so a jump cannot stall
	// reloads.
	if d := now.Sub(s.lastCheck); d >= 0 && d < s.interval {
		return
	}
	s.lastCheck = now
	fi, err := os.Stat(s.path)
	if err != nil {
		s.report(err)
		return
	}
	if sameVersion(fi, s.seen) {
		return
	}
	s.load() // reports its own errors
}

// load reads and parses the file; the caller holds mu. The version is taken
// from the open file, so a replacement racing with the read is seen by the
// next check rather than missed.
func (s *Store) load() error {
	fh, err := os.Open(s.path)
	if err != nil {
		return s.report(fmt.Errorf("users: %w", err))
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return s.report(fmt.Errorf("users: %w", err))
	}
	s.seen = fi
	f, err := Parse(fh, s.path)
	if err != nil {
		return s.report(err)
	}
	n := len(f.hashes) // before f is shared
	if s.file.Swap(f) != nil {
		s.log.Info("users: reloaded user file", "file", s.path, "users", n)
	}
	s.lastErr = ""
	return nil
}

// report logs err unless it is the one last logged, and returns it.
func (s *Store) report(err error) error {
	if msg := err.Error(); msg != s.lastErr {
		s.lastErr = msg
		if s.file.Load() != nil {
			s.log.Warn("users: user file not reloaded; keeping the previous contents", "file", s.path, "err", err)
		}
	}
	return err
}

func sameVersion(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
