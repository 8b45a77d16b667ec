// Package cliconf layers configuration for imash binaries: command-line
// flags win over environment variables, which win over a config file, which
// wins over the defaults the flags were declared with.
//
// The config file is JSON whose keys are flag names; a repeatable flag takes
// a JSON array. The environment variable of flag "max-chunk" for prefix
// "IMASH_MUX" is IMASH_MUX_MAX_CHUNK; a repeatable flag takes a
// comma-separated list.
package cliconf

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Parse parses args into fs, then fills every flag not given on the command
// line from the environment (prefix) and from the JSON file named by the
// flag configFlag (if that flag is defined and non-empty). Every problem is
// reported at once.
func Parse(fs *flag.FlagSet, args []string, envPrefix, configFlag string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var errs []error
	envSet := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		key := envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(key)
		if !ok {
			return
		}
		envSet[f.Name] = true
		for _, part := range splitList(f, v) {
			if err := fs.Set(f.Name, part); err != nil {
				errs = append(errs, fmt.Errorf("environment %s: %v", key, err))
			}
		}
	})

	if cf := fs.Lookup(configFlag); cf != nil && cf.Value.String() != "" {
		path := cf.Value.String()
		data, err := os.ReadFile(path)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("config file: %w", err))...)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			return errors.Join(append(errs, fmt.Errorf("config file %s: %w", path, err))...)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f := fs.Lookup(k)
			if f == nil {
				errs = append(errs, fmt.Errorf("config file %s: unknown key %q", path, k))
				continue
			}
			if set[k] || envSet[k] || k == configFlag {
				continue
			}
			vals, err := jsonValues(m[k])
			if err != nil {
				errs = append(errs, fmt.Errorf("config file %s: key %q: %v", path, k, err))
				continue
			}
			for _, v := range vals {
				if err := fs.Set(k, v); err != nil {
					errs = append(errs, fmt.Errorf("config file %s: key %q: %v", path, k, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Repeatable is implemented by flag values that accumulate (List).
type Repeatable interface{ IsRepeatable() bool }

func splitList(f *flag.Flag, v string) []string {
	if r, ok := f.Value.(Repeatable); ok && r.IsRepeatable() {
		var out []string
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	return []string{v}
}

func jsonValues(raw json.RawMessage) ([]string, error) {
	var list []any
	if err := json.Unmarshal(raw, &list); err == nil {
		out := make([]string, 0, len(list))
		for _, v := range list {
			out = append(out, scalar(v))
		}
		return out, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if _, ok := v.(map[string]any); ok {
		return nil, errors.New("objects are not supported; use a string, number, boolean or array")
	}
	return []string{scalar(v)}, nil
}

func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		// JSON numbers decode as float64; print them without an exponent
		// so that integer flags accept large values (4194304, not 4.194304e+06).
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}

// List is a repeatable string flag.
type List []string

// String implements flag.Value.
func (l *List) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value by appending.
func (l *List) Set(v string) error { *l = append(*l, v); return nil }

// IsRepeatable marks List as repeatable for environment variables.
func (l *List) IsRepeatable() bool { return true }
