package profiles

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// SaveDataDivisor divides the byte budget when a user or network profile
// asks to save data (HTTP Save-Data: on), so the re-encoder aims lower.
const SaveDataDivisor = 4

// SaveDataBudget is the byte budget for a save-data client when no
// bandwidth × patience budget is known.
const SaveDataBudget = 64 << 10

// Merge combines profiles into the constraints content must meet. The
// result does not depend on the order of the arguments except where noted.
// Every profile must be valid; nil or invalid profiles are errors. Fields
// that are zero (unknown) in a profile constrain nothing. The rules, each
// giving precedence to the most restrictive constraint (paper §3.3.2):
//
//   - MaxWidth, MaxHeight, ColorDepth: the smallest positive value among
//     device profiles' displays.
//   - Grayscale: set if any user profile prefers grayscale; ColorDepth is
//     then at most 8.
//   - Formats: the intersection of the device profiles' non-empty format
//     lists, in the preference order of the first device profile (in
//     argument order) that lists formats. An empty intersection is an
//     error naming the device profiles.
//   - ByteBudget: the smallest bandwidth among network profiles (bytes/s)
//     times the smallest positive patience among user profiles; zero
//     unless both are known. If any user or network profile asks to save
//     data, the budget is divided by SaveDataDivisor (or, when unknown, is
//     SaveDataBudget).
//   - NoAdaptation: set if any profile forbids adaptation, or if the
//     applications' lists have no adaptation in common.
//   - Allowed: the intersection of the application profiles' non-empty
//     lists, in the order of Adaptations(); nil when all are allowed or
//     when NoAdaptation is set.
//   - MaxFrameRate: the smallest positive frame-rate bound among device
//     and application profiles.
//
// Merge with no profiles returns the zero Constraints (no constraint).
func Merge(profiles ...*Profile) (Constraints, error) {
	var errs []error
	for i, p := range profiles {
		if p == nil {
			errs = append(errs, fmt.Errorf("profiles: merge: argument %d is nil", i))
			continue
		}
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Constraints{}, err
	}

	var (
		c            Constraints
		formats      []string // nil until a device lists formats
		formatOwners []string // names of device profiles that listed formats
		minBPS       int64
		minPatience  int64 // nanoseconds
		saveData     bool
		allowed      []string
		anyAllowList bool
	)
	for _, p := range profiles {
		c.NoAdaptation = c.NoAdaptation || p.NoAdaptation
		switch p.Kind {
		case KindDevice:
			d := p.Device
			c.MaxWidth = minPositive(c.MaxWidth, d.Display.Width)
			c.MaxHeight = minPositive(c.MaxHeight, d.Display.Height)
			c.ColorDepth = minPositive(c.ColorDepth, d.Display.ColorDepth)
			c.MaxFrameRate = minPositive(c.MaxFrameRate, d.MaxFrameRate)
			if len(d.Formats) > 0 {
				formatOwners = append(formatOwners, p.Name)
				if formats == nil {
					formats = slices.Clone(d.Formats)
				} else {
					formats = slices.DeleteFunc(formats, func(f string) bool { return !slices.Contains(d.Formats, f) })
				}
			}
		case KindNetwork:
			minBPS = minPositive(minBPS, p.Network.BandwidthBPS)
			saveData = saveData || p.Network.SaveData
		case KindUser:
			minPatience = minPositive(minPatience, int64(p.User.Patience))
			c.Grayscale = c.Grayscale || p.User.Grayscale
			saveData = saveData || p.User.SaveData
		case KindApplication:
			a := p.Application
			c.MaxFrameRate = minPositive(c.MaxFrameRate, a.MaxFrameRate)
			if len(a.Allowed) > 0 {
				if !anyAllowList {
					allowed = Adaptations()
				}
				anyAllowList = true
				allowed = slices.DeleteFunc(allowed, func(s string) bool { return !slices.Contains(a.Allowed, s) })
			}
		}
	}

	if formatOwners != nil && len(formats) == 0 {
		return Constraints{}, fmt.Errorf("profiles: merge: device profiles %s have no format in common", strings.Join(formatOwners, ", "))
	}
	c.Formats = formats
	if c.Grayscale {
		c.ColorDepth = minPositive(c.ColorDepth, 8)
	}
	if minBPS > 0 && minPatience > 0 {
		// Float arithmetic: MaxBandwidthBPS × MaxPatience in
		// nanoseconds overflows int64; the result itself fits.
		c.ByteBudget = max(int64(float64(minBPS)/8*float64(minPatience)/1e9), 1)
	}
	if saveData {
		if c.ByteBudget > 0 {
			c.ByteBudget = max(c.ByteBudget/SaveDataDivisor, 1)
		} else {
			c.ByteBudget = SaveDataBudget
		}
	}
	if anyAllowList && len(allowed) == 0 {
		c.NoAdaptation = true
	}
	if !c.NoAdaptation && anyAllowList {
		c.Allowed = allowed
	}
	return c, nil
}

func minPositive[T int | int64 | float64](cur, v T) T {
	if v <= 0 {
		return cur
	}
	if cur <= 0 || v < cur {
		return v
	}
	return cur
}
