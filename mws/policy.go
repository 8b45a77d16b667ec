package mws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
)

// Policy says which sessions may move to which devices. It is loaded from
// a JSON file:
//
//	{
//	  "device_classes": {"kiosk-*": "public", "pda-*": "personal"},
//	  "default_class": "unclassified",
//	  "rules": [
//	    {"name": "records-never-public", "labels": ["patient-records"],
//	     "deny_classes": ["public"]},
//	    {"name": "radiology-to-workstations", "apps": ["xray-viewer"],
//	     "allow_classes": ["workstation"]}
//	  ]
//	}
//
// A device's class comes from the first device_classes pattern (path.Match
// syntax, in sorted order) matching its certificate name — from the
// operator, not from the device. A rule applies to a session when its app
// is in apps (or apps is empty) and it carries one of labels (or labels is
// empty). A handoff is denied by the first applying rule whose
// deny_classes holds the target's class, or whose allow_classes is set and
// does not.
type Policy struct {
	DeviceClasses map[string]string `json:"device_classes"`
	DefaultClass  string            `json:"default_class"`
	Rules         []PolicyRule      `json:"rules"`

	patterns []string
}

// PolicyRule is one rule of a Policy.
type PolicyRule struct {
	Name         string   `json:"name"`
	Apps         []string `json:"apps"`
	Labels       []string `json:"labels"`
	DenyClasses  []string `json:"deny_classes"`
	AllowClasses []string `json:"allow_classes"`
}

// LoadPolicy reads and validates a policy file.
func LoadPolicy(file string) (*Policy, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	return p, nil
}

// ParsePolicy parses and validates a policy document, reporting every
// problem at once.
func ParsePolicy(data []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	var errs []error
	if p.DefaultClass == "" {
		p.DefaultClass = "unclassified"
	}
	for pat, class := range p.DeviceClasses {
		if _, err := path.Match(pat, ""); err != nil {
			errs = append(errs, fmt.Errorf("device_classes: pattern %q: %v", pat, err))
		}
		if !nameRE.MatchString(class) {
			errs = append(errs, fmt.Errorf("device_classes[%q]: class %q is not a name", pat, class))
		}
		p.patterns = append(p.patterns, pat)
	}
	slices.Sort(p.patterns)
	names := map[string]bool{}
	for i, r := range p.Rules {
		if !nameRE.MatchString(r.Name) {
			errs = append(errs, fmt.Errorf("rules[%d]: name %q is not a name", i, r.Name))
		}
		if names[r.Name] {
			errs = append(errs, fmt.Errorf("rules[%d]: name %q used twice", i, r.Name))
		}
		names[r.Name] = true
		if len(r.DenyClasses) == 0 && len(r.AllowClasses) == 0 {
			errs = append(errs, fmt.Errorf("rules[%d] %q: needs deny_classes or allow_classes", i, r.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &p, nil
}

// Class returns the class of the device with the given certificate name.
func (p *Policy) Class(device string) string {
	if p == nil {
		return "unclassified"
	}
	for _, pat := range p.patterns {
		if ok, _ := path.Match(pat, device); ok {
			return p.DeviceClasses[pat]
		}
	}
	return p.DefaultClass
}

// Check returns nil if a session of app with labels may move to a device
// of class, or a PermissionDenied status naming the rule.
func (p *Policy) Check(app string, labels []string, class string) error {
	if p == nil {
		return nil
	}
	for _, r := range p.Rules {
		if len(r.Apps) > 0 && !slices.Contains(r.Apps, app) {
			continue
		}
		if len(r.Labels) > 0 && !slices.ContainsFunc(labels, func(l string) bool { return slices.Contains(r.Labels, l) }) {
			continue
		}
		if slices.Contains(r.DenyClasses, class) || (len(r.AllowClasses) > 0 && !slices.Contains(r.AllowClasses, class)) {
			return rpcerr.New(codes.PermissionDenied, "POLICY_DENIED", "policy rule %q forbids moving this session to a device of class %q", r.Name, class)
		}
	}
	return nil
}
