package users

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser. Parse must not panic; a
// file it accepts must survive a save and re-parse with the same users and
// hashes, and bad lines must be *ParseErrors with a line number.
func FuzzParse(f *testing.F) {
	h := "$2y$04$imashDummySaltNotAHashimashDummyHashNoPasswordMatches"
	for _, seed := range []string{
		"",
		"# comment\n\nalice:" + h + "\n",
		"alice:" + h + "\r\nbob@x.org:$2a$" + h[4:] + "\n",
		"  carol:" + h + "  ",
		"alice:$apr1$x$y\n",
		"alice\n",
		"alice:" + h + "\nalice:" + h + "\n",
		":\n#\n\x00:\xff\n",
		"a:$2y$99$" + h[7:] + "\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(bytes.NewReader(data), "fuzz")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 || pe.File != "fuzz" {
				t.Fatalf("error %v is not a *ParseError with a line", err)
			}
			return
		}
		again, err := Parse(bytes.NewReader(file.marshal()), "fuzz")
		if err != nil {
			t.Fatalf("re-parse of a saved file: %v", err)
		}
		if !maps.Equal(file.hashes, again.hashes) {
			t.Fatalf("users changed by save: %v, then %v", file.hashes, again.hashes)
		}
		for user, hash := range file.hashes {
			if checkName(user) != nil || strings.ContainsAny(hash, ":\n") {
				t.Fatalf("accepted user %q with hash %q", user, hash)
			}
		}
	})
}
