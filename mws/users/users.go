// Package users is the MWS's user database: an htpasswd-style file of
// bcrypt hashes that operators edit with Apache's "htpasswd -B" or with the
// "user" command of this package.
//
// The format is one user per line,
//
//	# comments and blank lines are kept
//	alice:$2y$10$...
//
// and only bcrypt hashes ($2y$, $2a$, $2b$) are accepted: htpasswd's MD5,
// SHA-1 and crypt hashes are too weak to keep. The file is parsed as
// untrusted input: malformed lines are errors naming the line, never
// skipped.
package users

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/imashproject/imash/internal/atomicfile"
)

const (
	// maxLineLen bounds one line of a user file; a bcrypt line is under 130
	// bytes, and a longer one is garbage that should not fill memory.
	maxLineLen = 64 << 10
	// maxParseErrors bounds how many bad lines one error reports.
	maxParseErrors = 10
)

// File is a parsed user file. The zero File is empty and ready to use. It
// is safe for concurrent use; Verify runs bcrypt outside the lock, so slow
// logins never hold up Set or other logins.
type File struct {
	mu sync.RWMutex
	// lines keeps the file's order, comments and blank lines, so that
	// Save changes only the lines of users that changed.
	lines  []line
	hashes map[string]string
	// costs counts users per bcrypt cost, for the cost of the dummy hash.
	costs map[int]int
}

type line struct {
	user string // "" for a comment or blank line
	text string // the comment or blank line, verbatim
}

// Load reads and parses the user file at path.
func Load(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	defer fh.Close()
	return Parse(fh, path)
}

// Parse parses a user file read from r; name is used in error messages.
// Every bad line (up to ten) is reported, each as a *ParseError with its
// line number: a line that is not name:hash, a user name that is not 1-64
// of [A-Za-z0-9._@-], a user named twice, a hash that is not bcrypt, or a
// bcrypt cost outside MinCost..MaxCost.
func Parse(r io.Reader, name string) (*File, error) {
	f := &File{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineLen)
	seen := map[string]int{}
	var errs []error
	n := 0
	for sc.Scan() {
		n++
		raw := sc.Text()
		t := strings.TrimSpace(raw)
		if t == "" || t[0] == '#' {
			f.lines = append(f.lines, line{text: raw})
			continue
		}
		if err := f.parseLine(t, n, seen); err != nil {
			errs = append(errs, &ParseError{File: name, Line: n, Err: err})
			if len(errs) == maxParseErrors {
				errs = append(errs, fmt.Errorf("users: %s: too many errors", name))
				return nil, errors.Join(errs...)
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line longer than %d bytes", maxLineLen)
		}
		errs = append(errs, &ParseError{File: name, Line: n + 1, Err: err})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f, nil
}

func (f *File) parseLine(t string, n int, seen map[string]int) error {
	user, hash, ok := strings.Cut(t, ":")
	if !ok {
		// The line is not echoed: it may be a password typed by mistake.
		return errors.New("want name:hash")
	}
	if err := checkName(user); err != nil {
		return err
	}
	if prev, dup := seen[user]; dup {
		return fmt.Errorf("user %q already defined on line %d", user, prev)
	}
	cost, err := parseHash(hash)
	if err != nil {
		return fmt.Errorf("user %q: %w", user, err)
	}
	seen[user] = n
	f.add(user, hash, cost)
	f.lines = append(f.lines, line{user: user})
	return nil
}

// add records a user's hash; the caller holds mu and manages lines.
func (f *File) add(user, hash string, cost int) {
	if f.hashes == nil {
		f.hashes = map[string]string{}
		f.costs = map[int]int{}
	}
	if old, ok := f.hashes[user]; ok {
		f.dropCost(old)
	}
	f.hashes[user] = hash
	f.costs[cost]++
}

func (f *File) dropCost(hash string) {
	cost := hashCost(hash)
	if f.costs[cost]--; f.costs[cost] <= 0 {
		delete(f.costs, cost)
	}
}

// hashCost is the cost of a hash already checked by parseHash.
func hashCost(hash string) int { return int(hash[4]-'0')*10 + int(hash[5]-'0') }

// typicalCost is the most common cost in the file (the higher on a tie),
// or DefaultCost if it is empty: an unknown user then takes as long as most
// known users with a wrong password. The caller holds mu.
func (f *File) typicalCost() int {
	best, bestN := DefaultCost, 0
	for c, n := range f.costs {
		if n > bestN || (n == bestN && c > best) {
			best, bestN = c, n
		}
	}
	return best
}

// Verify checks a user's password. It returns nil on a match, an error
// matching ErrUnknownUser if there is no such user, and one matching
// ErrWrongPassword otherwise. An unknown user costs one bcrypt comparison
// against a dummy hash of the file's typical cost, so the time taken does
// not tell an attacker which user names exist. Names and passwords that
// Set would refuse never match; the error then also matches ErrInvalidName
// or ErrInvalidPassword.
func (f *File) Verify(user, password string) error {
	f.mu.RLock()
	hash, known := f.hashes[user]
	cost := f.typicalCost()
	f.mu.RUnlock()
	if !known {
		hash = dummyHash(cost)
	}
	// Always compare, even when the answer is already known, so that every
	// failure takes one bcrypt comparison.
	cmpErr := compareHash(hash, password)
	switch {
	case !known:
		if err := checkName(user); err != nil {
			return fmt.Errorf("users: %w: %w", ErrUnknownUser, err)
		}
		return fmt.Errorf("users: %w %q", ErrUnknownUser, user)
	case checkPassword(password) != nil:
		return fmt.Errorf("users: user %q: %w: %w", user, ErrWrongPassword, checkPassword(password))
	case cmpErr != nil:
		return fmt.Errorf("users: user %q: %w", user, ErrWrongPassword)
	}
	return nil
}

// Set creates user or changes their password, hashing it with bcrypt at
// cost (zero means DefaultCost). It refuses a name that is not 1-64 of
// [A-Za-z0-9._@-] (ErrInvalidName), a password that is empty or longer than
// 72 bytes (ErrInvalidPassword) and a cost outside MinCost..MaxCost
// (ErrInvalidCost). Nothing is written until Save.
func (f *File) Set(user, password string, cost int) error {
	if cost == 0 {
		cost = DefaultCost
	}
	if err := errors.Join(checkName(user), checkPassword(password), checkCost(cost)); err != nil {
		return fmt.Errorf("users: set: %w", err)
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return fmt.Errorf("users: set: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.hashes[user]; !ok {
		f.lines = append(f.lines, line{user: user})
	}
	f.add(user, hash, cost)
	return nil
}

// Delete removes user, or returns an error matching ErrUnknownUser. Nothing
// is written until Save.
func (f *File) Delete(user string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	hash, ok := f.hashes[user]
	if !ok {
		return fmt.Errorf("users: delete: %w %q", ErrUnknownUser, short(user))
	}
	f.dropCost(hash)
	delete(f.hashes, user)
	f.lines = slices.DeleteFunc(f.lines, func(l line) bool { return l.user == user })
	return nil
}

// has reports whether user is in the file.
func (f *File) has(user string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.hashes[user]
	return ok
}

// Users returns the user names, sorted.
func (f *File) Users() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]string, 0, len(f.hashes))
	for u := range f.hashes {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// Save writes the file to path with mode 0600, atomically: a concurrent
// reader (an MWS reloading it) sees the old or the new file, never a
// partial one. Comments and the order of lines are kept; new users are
// appended.
func (f *File) Save(path string) error {
	if err := atomicfile.Write(path, f.marshal(), 0o600); err != nil {
		return fmt.Errorf("users: save: %w", err)
	}
	return nil
}

func (f *File) marshal() []byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var b bytes.Buffer
	for _, l := range f.lines {
		if l.user == "" {
			b.WriteString(l.text)
		} else {
			b.WriteString(l.user + ":" + f.hashes[l.user])
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}
