package profiles

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
)

//go:embed examples/*.xml
var exampleFS embed.FS

// The testbed's four client devices (paper §4) and the network each uses,
// in the order the paper lists them.
var testbed = []struct{ device, network string }{
	{"workstation", "ethernet-100m"},
	{"desktop", "ethernet-100m"},
	{"laptop", "modem-56k"},
	{"pda", "wlan-80211b"},
}

var loadExamples = sync.OnceValues(func() (map[string]*Profile, error) {
	entries, err := fs.ReadDir(exampleFS, "examples")
	if err != nil {
		return nil, err
	}
	out := map[string]*Profile{}
	for _, e := range entries {
		data, err := exampleFS.ReadFile(path.Join("examples", e.Name()))
		if err != nil {
			return nil, err
		}
		p, err := Parse(bytes.NewReader(data), e.Name())
		if err != nil {
			return nil, err
		}
		if want := strings.TrimSuffix(e.Name(), ".xml"); p.Name != want {
			return nil, fmt.Errorf("profiles: example %s is named %q", e.Name(), p.Name)
		}
		out[p.Name] = p
	}
	return out, nil
})

func mustExamples() map[string]*Profile {
	m, err := loadExamples()
	if err != nil {
		// The examples are compiled in and TestExamples parses them all,
		// so this is a build defect, not a runtime condition.
		panic(err)
	}
	return m
}

// Examples returns fresh copies of the built-in example profiles, keyed by
// name: the testbed devices "workstation", "desktop", "laptop" and "pda";
// the networks "ethernet-100m", "modem-56k" and "wlan-80211b"; the user
// profile "default-user"; and the application profiles
// "default-application" and "diagnostic-imaging" (which forbids
// adaptation). Each is also its file name under examples/ (plus ".xml").
func Examples() map[string]*Profile {
	m := maps.Clone(mustExamples())
	for k, p := range m {
		m[k] = p.Clone()
	}
	return m
}

// ExampleNames returns the names of the built-in example profiles, sorted.
func ExampleNames() []string {
	return slices.Sorted(maps.Keys(mustExamples()))
}

// Example returns a fresh copy of the named built-in example profile.
func Example(name string) (*Profile, error) {
	p, ok := mustExamples()[name]
	if !ok {
		return nil, fmt.Errorf("profiles: no example profile %q (have %v)", name, ExampleNames())
	}
	return p.Clone(), nil
}

// TestbedDevices returns the names of the paper's four testbed client
// devices: "workstation", "desktop", "laptop", "pda".
func TestbedDevices() []string {
	out := make([]string, len(testbed))
	for i, t := range testbed {
		out[i] = t.device
	}
	return out
}

// TestbedDevice returns fresh copies of the named testbed device's device
// profile and the profile of the network it uses. These are the nominal
// links; the live network profile an MWS measures is built elsewhere.
func TestbedDevice(name string) (device, network *Profile, err error) {
	for _, t := range testbed {
		if t.device == name {
			m := mustExamples()
			return m[t.device].Clone(), m[t.network].Clone(), nil
		}
	}
	return nil, nil, fmt.Errorf("profiles: no testbed device %q (have %v)", name, TestbedDevices())
}

// DefaultUser returns a fresh copy of the "default-user" example: two
// seconds of patience per object and no other preference.
func DefaultUser() *Profile { return mustExamples()["default-user"].Clone() }

// DefaultApplication returns a fresh copy of the "default-application"
// example, which accepts every adaptation.
func DefaultApplication() *Profile { return mustExamples()["default-application"].Clone() }
