package users

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Limits on bcrypt costs. Every increment doubles the time of one Verify.
const (
	// MinCost is bcrypt's own minimum (4); fit for tests only.
	MinCost = bcrypt.MinCost
	// MaxCost is the highest cost accepted in a file or by Set: 17, the
	// limit of Apache's htpasswd -C. A line with cost 31 would make every
	// login for that user take days.
	MaxCost = 17
	// DefaultCost is what Set uses for a cost of zero (10, as htpasswd -B
	// and Go's bcrypt.DefaultCost).
	DefaultCost = bcrypt.DefaultCost
)

// maxPasswordLen is bcrypt's limit: bytes after the 72nd are ignored, so a
// longer password would silently match any password sharing its prefix.
const maxPasswordLen = 72

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)
	// bcryptRE is the whole modular-crypt string: variant, two-digit cost,
	// 22 characters of salt and 31 of hash in bcrypt's base64 alphabet.
	bcryptRE = regexp.MustCompile(`^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)
)

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: want 1-64 of [A-Za-z0-9._@-]", ErrInvalidName, short(name))
	}
	return nil
}

// short bounds untrusted text quoted in an error message.
func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func checkPassword(pw string) error {
	if len(pw) == 0 || len(pw) > maxPasswordLen {
		return fmt.Errorf("%w: %d bytes, want 1-%d", ErrInvalidPassword, len(pw), maxPasswordLen)
	}
	return nil
}

func checkCost(cost int) error {
	if cost < MinCost || cost > MaxCost {
		return fmt.Errorf("%w %d: want %d-%d", ErrInvalidCost, cost, MinCost, MaxCost)
	}
	return nil
}

// parseHash checks that h is a bcrypt hash this package accepts and returns
// its cost. Errors name the hash type but never echo the hash itself.
func parseHash(h string) (cost int, err error) {
	if !strings.HasPrefix(h, "$2a$") && !strings.HasPrefix(h, "$2b$") && !strings.HasPrefix(h, "$2y$") {
		return 0, fmt.Errorf("unsupported hash type %s: only bcrypt ($2y$, $2a$, $2b$) is accepted; create the user with htpasswd -B or \"user add\"", hashType(h))
	}
	if !bcryptRE.MatchString(h) {
		return 0, fmt.Errorf("malformed bcrypt hash (want 60 characters: $2y$NN$ and 53 of [./A-Za-z0-9])")
	}
	cost, _ = strconv.Atoi(h[4:6])
	if err := checkCost(cost); err != nil {
		return 0, err
	}
	return cost, nil
}

// hashType names a password hash by its prefix, for error messages.
func hashType(h string) string {
	for _, t := range []struct{ prefix, name string }{
		{"$apr1$", "Apache MD5 ($apr1$)"},
		{"{SHA}", "SHA-1 ({SHA})"},
		{"$1$", "MD5-crypt ($1$)"},
		{"$5$", "SHA-256-crypt ($5$)"},
		{"$6$", "SHA-512-crypt ($6$)"},
		{"$argon2", "Argon2"},
		{"$2x$", "bcrypt variant $2x$"},
		{"$2$", "bcrypt variant $2$"},
	} {
		if strings.HasPrefix(h, t.prefix) {
			return t.name
		}
	}
	if h == "" {
		return "(empty)"
	}
	return "crypt or plain text"
}

// compareHash compares a password with a hash accepted by parseHash. The
// $2a$, $2b$ and $2y$ variants are one algorithm for passwords of at most
// 72 bytes; Go's bcrypt happens to accept all three, but comparing as $2a$
// (its native variant) does not depend on that. A variable so that tests
// can count comparisons.
var compareHash = func(hash, password string) error {
	return bcrypt.CompareHashAndPassword([]byte("$2a$"+hash[4:]), []byte(password))
}

// dummyHash is a well-formed hash of nothing anyone knows, at the given
// cost. Comparing a password with it takes as long as with a real hash of
// that cost, which is what makes an unknown user as slow as a wrong
// password. No password can be derived from it.
func dummyHash(cost int) string {
	return fmt.Sprintf("$2y$%02d$%s", cost, "imashDummySaltNotAHashimashDummyHashNoPasswordMatches")
}

// hashPassword returns an htpasswd -B style ($2y$) hash of password.
func hashPassword(password string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", err
	}
	// Go writes $2a$; Apache writes $2y$. Same algorithm, Apache's spelling.
	return "$2y$" + string(h[4:]), nil
}
