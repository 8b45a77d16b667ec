// Package cliflag has command-line helpers shared by imash binaries:
// flag.Values for numbers, and the ready file (WriteReadyFile).
//
// The number values accept what internal/cliconf makes of a JSON number in a config file
// (268435456 arrives as "2.68435456e+08", which flag.Int refuses) and, for
// byte counts, the suffixes B, KiB, MiB and GiB ("256MiB").
package cliflag

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// Num is a flag.Value writing an integer into *P. Create it with Int,
// Bytes or BytesInt.
type Num[T int | int64] struct {
	p     *T
	bytes bool
}

// Int is a count: a whole number, in decimal or exponent notation.
func Int(p *int) *Num[int] { return &Num[int]{p: p} }

// Bytes is a byte count that may carry a binary suffix.
func Bytes(p *int64) *Num[int64] { return &Num[int64]{p: p, bytes: true} }

// BytesInt is Bytes for an int field.
func BytesInt(p *int) *Num[int] { return &Num[int]{p: p, bytes: true} }

var units = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// Set implements flag.Value.
func (n *Num[T]) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	if n.bytes {
		for _, u := range units {
			if num, ok := strings.CutSuffix(s, u.suffix); ok {
				s, mult = strings.TrimSpace(num), u.mult
				break
			}
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<62 {
			if n.bytes {
				return errors.New("want a whole number of bytes, optionally with a suffix B, KiB, MiB or GiB")
			}
			return errors.New("want a whole number")
		}
		v = int64(f)
	}
	if v > math.MaxInt64/mult || v < math.MinInt64/mult || int64(T(v*mult)) != v*mult {
		return errors.New("value out of range")
	}
	*n.p = T(v * mult)
	return nil
}

// String implements flag.Value. It works on the zero Num, which the flag
// package makes to tell whether a default is worth printing. Byte counts
// are shown with the largest suffix that divides them.
func (n *Num[T]) String() string {
	if n == nil || n.p == nil {
		return "0"
	}
	v := int64(*n.p)
	if n.bytes && v != 0 {
		for _, u := range units[:3] {
			if v%u.mult == 0 {
				return strconv.FormatInt(v/u.mult, 10) + u.suffix
			}
		}
	}
	return strconv.FormatInt(v, 10)
}
