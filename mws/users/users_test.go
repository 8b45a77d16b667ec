package users

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// hash returns an htpasswd line's hash of password at MinCost, for speed.
func hash(t testing.TB, password string) string {
	t.Helper()
	h, err := hashPassword(password, MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func parse(t testing.TB, text string) *File {
	t.Helper()
	f, err := Parse(strings.NewReader(text), "test.htpasswd")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

func TestParseWithComments(t *testing.T) {
	text := "# imash users\r\n" +
		"\n" +
		"alice:" + hash(t, "alice-pw") + "\r\n" +
		"   # indented comment\n" +
		"  bob@example.org:" + hash(t, "bob pw") + "  \n" +
		"carol.x-1_2:" + hash(t, "c") // no final newline
	f := parse(t, text)
	if got, want := f.Users(), []string{"alice", "bob@example.org", "carol.x-1_2"}; !slices.Equal(got, want) {
		t.Errorf("Users = %v, want %v", got, want)
	}
	for user, pw := range map[string]string{"alice": "alice-pw", "bob@example.org": "bob pw", "carol.x-1_2": "c"} {
		if err := f.Verify(user, pw); err != nil {
			t.Errorf("Verify(%s): %v", user, err)
		}
	}
	if f := parse(t, ""); len(f.Users()) != 0 {
		t.Error("empty file has users")
	}
}

func TestVerify(t *testing.T) {
	f := parse(t, "alice:"+hash(t, "secret")+"\n")
	tests := []struct {
		name      string
		user, pw  string
		wantErr   error
		alsoMatch error
	}{
		{name: "right password", user: "alice", pw: "secret"},
		{name: "wrong password", user: "alice", pw: "Secret", wantErr: ErrWrongPassword},
		{name: "prefix of password", user: "alice", pw: "secre", wantErr: ErrWrongPassword},
		{name: "unknown user", user: "bob", pw: "secret", wantErr: ErrUnknownUser},
		{name: "user names are case-sensitive", user: "Alice", pw: "secret", wantErr: ErrUnknownUser},
		{name: "empty password", user: "alice", pw: "", wantErr: ErrWrongPassword, alsoMatch: ErrInvalidPassword},
		{name: "password over 72 bytes", user: "alice", pw: "secret" + strings.Repeat("x", 70), wantErr: ErrWrongPassword, alsoMatch: ErrInvalidPassword},
		{name: "invalid name", user: "a:b", pw: "secret", wantErr: ErrUnknownUser, alsoMatch: ErrInvalidName},
		{name: "empty name", user: "", pw: "secret", wantErr: ErrUnknownUser, alsoMatch: ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.Verify(tt.user, tt.pw)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Verify: %v, want %v", err, tt.wantErr)
			}
			if tt.alsoMatch != nil && !errors.Is(err, tt.alsoMatch) {
				t.Errorf("Verify: %v, want it to match %v too", err, tt.alsoMatch)
			}
			if errors.Is(err, ErrWrongPassword) && errors.Is(err, ErrUnknownUser) {
				t.Errorf("Verify: %v matches both ErrWrongPassword and ErrUnknownUser", err)
			}
		})
	}
}

// Go's bcrypt writes $2a$; Apache's htpasswd -B writes $2y$. This records
// what the dependency does with $2y$ and $2b$ — it accepts them — and checks
// that Verify accepts them whatever it does (it compares as $2a$).
func TestApacheVariants(t *testing.T) {
	goHash, err := bcrypt.GenerateFromPassword([]byte("pw"), MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		h := prefix + string(goHash[4:])
		t.Run(prefix, func(t *testing.T) {
			if err := bcrypt.CompareHashAndPassword([]byte(h), []byte("pw")); err != nil {
				t.Logf("x/crypto/bcrypt does not accept %s directly: %v", prefix, err)
			}
			f := parse(t, "u:"+h+"\n")
			if err := f.Verify("u", "pw"); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if err := f.Verify("u", "pW"); !errors.Is(err, ErrWrongPassword) {
				t.Errorf("Verify wrong password: %v", err)
			}
		})
	}
	// Set writes Apache's spelling.
	var f File
	if err := f.Set("u", "pw", MinCost); err != nil {
		t.Fatal(err)
	}
	if got := string(f.marshal()); !strings.HasPrefix(got, "u:$2y$04$") {
		t.Errorf("Set wrote %q, want a $2y$ hash", got)
	}
}

// Hashes made by other implementations: the test vectors of Solar
// Designer's crypt_blowfish, which PHP and Apache (via APR) build on.
func TestForeignHashes(t *testing.T) {
	tests := []struct {
		hash, password string
	}{
		{"$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
		{"$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK", "U*U*"},
		{"$2a$05$XXXXXXXXXXXXXXXXXXXXXOAcXxm9kjPGEMsLznoKqmqw7tc8WCx4a", "U*U*U"},
		{"$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
		{"$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
	}
	for _, tt := range tests {
		t.Run(tt.hash[:4]+tt.password, func(t *testing.T) {
			f := parse(t, "u:"+tt.hash+"\n")
			if err := f.Verify("u", tt.password); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good := hash(t, "pw")
	tests := []struct {
		name     string
		text     string
		wantLine int
		wantIn   string
	}{
		{name: "no colon", text: "# c\nalice\n", wantLine: 2, wantIn: "want name:hash"},
		{name: "bad name", text: "al ice:" + good + "\n", wantLine: 1, wantIn: "invalid user name"},
		{name: "name too long", text: strings.Repeat("a", 65) + ":" + good + "\n", wantLine: 1, wantIn: "invalid user name"},
		{name: "empty name", text: ":" + good + "\n", wantLine: 1, wantIn: "invalid user name"},
		{name: "apache md5", text: "\nalice:$apr1$salt$hashhashhashhashhash\n", wantLine: 2, wantIn: "Apache MD5"},
		{name: "sha1", text: "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", wantLine: 1, wantIn: "SHA-1"},
		{name: "crypt", text: "alice:rqXexS6ZhobKA\n", wantLine: 1, wantIn: "crypt or plain text"},
		{name: "sha512-crypt", text: "alice:$6$salt$xyz\n", wantLine: 1, wantIn: "SHA-512-crypt"},
		{name: "empty hash", text: "alice:\n", wantLine: 1, wantIn: "unsupported hash type (empty)"},
		{name: "bcrypt 2x", text: "alice:$2x" + good[3:] + "\n", wantLine: 1, wantIn: "$2x$"},
		{name: "truncated bcrypt", text: "alice:" + good[:50] + "\n", wantLine: 1, wantIn: "malformed bcrypt"},
		{name: "bcrypt with extra field", text: "alice:" + good + ":x\n", wantLine: 1, wantIn: "malformed bcrypt"},
		{name: "bcrypt bad alphabet", text: "alice:" + good[:59] + "!\n", wantLine: 1, wantIn: "malformed bcrypt"},
		{name: "cost too high", text: "alice:$2y$31" + good[6:] + "\n", wantLine: 1, wantIn: "invalid bcrypt cost 31"},
		{name: "cost too low", text: "alice:$2y$03" + good[6:] + "\n", wantLine: 1, wantIn: "invalid bcrypt cost 3"},
		{name: "duplicate user", text: "alice:" + good + "\n#\nalice:" + good + "\n", wantLine: 3, wantIn: "already defined on line 1"},
		{name: "line too long", text: "alice:" + good + "\n" + strings.Repeat("x", maxLineLen+1) + "\n", wantLine: 2, wantIn: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.text), "users.htpasswd")
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse: %v, want a *ParseError", err)
			}
			if pe.Line != tt.wantLine || pe.File != "users.htpasswd" {
				t.Errorf("error at %s:%d, want users.htpasswd:%d", pe.File, pe.Line, tt.wantLine)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q does not contain %q", err, tt.wantIn)
			}
			if prefix := fmt.Sprintf("users: users.htpasswd:%d: ", tt.wantLine); !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
		})
	}
}

func TestParseReportsEveryBadLine(t *testing.T) {
	_, err := Parse(strings.NewReader("a\nb:"+hash(t, "x")+"\nc:plain\n"), "f")
	for _, want := range []string{"f:1:", "f:3:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not report %s", err, want)
		}
	}
	_, err = Parse(strings.NewReader(strings.Repeat("x\n", 100)), "f")
	if err == nil || strings.Count(err.Error(), "want name:hash") != maxParseErrors || !strings.Contains(err.Error(), "too many errors") {
		t.Errorf("100 bad lines: error %v, want %d reported and then too many errors", err, maxParseErrors)
	}
}

func TestParseDoesNotEchoHashes(t *testing.T) {
	_, err := Parse(strings.NewReader("alice:$apr1$SECRETSALT$SECRETHASH\nbob:hunter2hunter2\nhunter3\n"), "f")
	for _, secret := range []string{"SECRET", "hunter"} {
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("error %v echoes %q", err, secret)
		}
	}
}

func TestSetDeleteSave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.htpasswd")
	orig := "# operators\nalice:" + hash(t, "a") + "\n\n# devices\nbob:" + hash(t, "b") + "\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Set("carol", "c", MinCost); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("alice", "a2", MinCost); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete("bob"); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete("bob"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("second Delete: %v, want ErrUnknownUser", err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %#o, want 0600", fi.Mode().Perm())
	}

	data, _ := os.ReadFile(path)
	var shape []string
	for l := range strings.Lines(string(data)) {
		name, _, _ := strings.Cut(strings.TrimSuffix(l, "\n"), ":")
		shape = append(shape, name)
	}
	if want := []string{"# operators", "alice", "", "# devices", "carol"}; !slices.Equal(shape, want) {
		t.Errorf("saved lines %q, want %q (comments and order kept)", shape, want)
	}

	g, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Verify("alice", "a2"); err != nil {
		t.Errorf("alice after reload: %v", err)
	}
	if err := g.Verify("alice", "a"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("alice's old password: %v", err)
	}
	if err := g.Verify("carol", "c"); err != nil {
		t.Errorf("carol after reload: %v", err)
	}
	if err := g.Verify("bob", "b"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("deleted bob: %v", err)
	}
}

func TestSetRefuses(t *testing.T) {
	tests := []struct {
		name     string
		user, pw string
		cost     int
		want     error
	}{
		{name: "empty name", user: "", pw: "x", cost: MinCost, want: ErrInvalidName},
		{name: "name with colon", user: "a:b", pw: "x", cost: MinCost, want: ErrInvalidName},
		{name: "name too long", user: strings.Repeat("a", 65), pw: "x", cost: MinCost, want: ErrInvalidName},
		{name: "empty password", user: "a", pw: "", cost: MinCost, want: ErrInvalidPassword},
		{name: "password over 72 bytes", user: "a", pw: strings.Repeat("x", 73), cost: MinCost, want: ErrInvalidPassword},
		{name: "cost too low", user: "a", pw: "x", cost: 3, want: ErrInvalidCost},
		{name: "cost too high", user: "a", pw: "x", cost: MaxCost + 1, want: ErrInvalidCost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f File
			if err := f.Set(tt.user, tt.pw, tt.cost); !errors.Is(err, tt.want) {
				t.Errorf("Set: %v, want %v", err, tt.want)
			}
			if len(f.Users()) != 0 {
				t.Error("a refused Set added a user")
			}
		})
	}
	var f File
	if err := f.Set(strings.Repeat("a", 64), strings.Repeat("x", 72), MinCost); err != nil {
		t.Errorf("Set at the limits: %v", err)
	}
}

// An unknown user must cost what a wrong password costs: exactly one bcrypt
// comparison, against a hash of the cost most users in the file have.
func TestUnknownUserCostsOneComparison(t *testing.T) {
	var costs []int
	orig := compareHash
	compareHash = func(h, pw string) error {
		costs = append(costs, hashCost(h))
		if _, err := parseHash(h); err != nil {
			t.Errorf("compared with a malformed hash: %v", err)
		}
		return orig(h, pw)
	}
	defer func() { compareHash = orig }()

	h5, _ := hashPassword("x", 5)
	text := "a:" + hash(t, "x") + "\nb:" + h5 + "\nc:" + h5 + "\n"
	f := parse(t, text)
	for _, user := range []string{"a", "nobody", "in:valid"} {
		costs = nil
		f.Verify(user, "wrong")
		want := 5
		if user == "a" {
			want = MinCost
		}
		if !slices.Equal(costs, []int{want}) {
			t.Errorf("Verify(%q): compared at costs %v, want [%d]", user, costs, want)
		}
	}
	costs = nil
	var empty File
	empty.Verify("nobody", "x")
	if !slices.Equal(costs, []int{DefaultCost}) {
		t.Errorf("empty file: compared at costs %v, want [%d]", costs, DefaultCost)
	}
}

func TestConcurrentUse(t *testing.T) {
	var f File
	for i := range 4 {
		if err := f.Set(fmt.Sprintf("user%d", i), "pw", MinCost); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 8 {
		wg.Go(func() {
			for range 10 {
				if err := f.Verify(fmt.Sprintf("user%d", i%4), "pw"); err != nil {
					errs <- err
				}
				if err := f.Verify("nobody", "pw"); !errors.Is(err, ErrUnknownUser) {
					errs <- fmt.Errorf("unknown user: %v", err)
				}
			}
		})
	}
	wg.Go(func() {
		for j := range 10 {
			name := fmt.Sprintf("churn%d", j)
			if err := f.Set(name, "pw", MinCost); err != nil {
				errs <- err
			}
			f.Users()
			f.marshal()
			if err := f.Delete(name); err != nil {
				errs <- err
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDummyHashIsWellFormed(t *testing.T) {
	for cost := MinCost; cost <= MaxCost; cost++ {
		if got, err := parseHash(dummyHash(cost)); err != nil || got != cost {
			t.Errorf("dummyHash(%d): cost %d, %v", cost, got, err)
		}
	}
	if err := compareHash(dummyHash(MinCost), ""); !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
		t.Errorf("compare with dummy hash: %v, want a mismatch", err)
	}
}

func BenchmarkVerifyDefaultCost(b *testing.B) {
	var f File
	if err := f.Set("alice", "secret", DefaultCost); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		f.Verify("alice", "secret")
	}
}
