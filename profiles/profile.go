package profiles

import (
	"math"
	"slices"
	"time"
)

// Kind says which of the four profile kinds (paper §3.3.2) a Profile is.
type Kind string

// The profile kinds. The XML root element of each is the kind followed by
// "-profile", e.g. <device-profile>.
const (
	KindDevice      Kind = "device"
	KindNetwork     Kind = "network"
	KindUser        Kind = "user"
	KindApplication Kind = "application"
)

// Limits on field values. Parse and Validate reject anything outside them,
// so arithmetic on a valid profile cannot overflow.
const (
	MaxNameLen      = 64                // bytes in a profile name
	MaxPixels       = 65535             // display width or height
	MaxColorDepth   = 48                // bits per pixel
	MaxMemoryMB     = 1 << 24           // 16 TiB
	MaxCPUMHz       = 1_000_000         // 1 THz
	MaxBandwidthBPS = 1_000_000_000_000 // 1 Tbit/s
	MaxLatency      = time.Minute       // one-way or round-trip latency
	MaxPatience     = time.Hour         // tolerable time per object
	MaxFrameRate    = 1000.0            // frames per second
	MaxFormats      = 32                // formats in a device profile
)

// Adaptation names an application profile may list, in the fixed order the
// command generator considers them. Merge reports Constraints.Allowed in
// this order.
var adaptationOrder = []string{"resize", "recolor", "reencode", "convert", "geometry", "framerate"}

// Adaptations returns the adaptation names an application profile may
// list, in the fixed order in which the command generator considers them.
func Adaptations() []string { return slices.Clone(adaptationOrder) }

// knownFormats are the media types a profile may name (lower case).
var knownFormats = []string{
	"image/avif", "image/webp", "image/apng", "image/png", "image/jpeg", "image/gif", "image/bmp",
	"image/svg+xml", "video/x-motion-jpeg", "multipart/x-mixed-replace",
	"text/html", "text/plain", "text/xml", "application/xml", "application/xhtml+xml",
}

// KnownFormats returns the media types profiles may name. Any other format
// in a profile is an error; in an HTTP Accept header it is ignored.
func KnownFormats() []string { return slices.Clone(knownFormats) }

// cpuClasses are the CPU classes a device profile may name, fastest first.
var cpuClasses = []string{"server", "workstation", "desktop", "laptop", "handheld", "embedded"}

// CPUClasses returns the CPU classes a device profile may name, fastest
// first.
func CPUClasses() []string { return slices.Clone(cpuClasses) }

// Profile is one parsed profile: a Kind, a Name and exactly one body, the
// one matching Kind (the other three are nil).
type Profile struct {
	Kind Kind
	// Name identifies the profile in errors and in Merge's error messages;
	// 1 to MaxNameLen characters from [A-Za-z0-9._-].
	Name string
	// NoAdaptation forbids adapting content at all; any kind of profile
	// may set it (XML: adapt="false" on the root element).
	NoAdaptation bool

	Device      *Device
	Network     *Network
	User        *User
	Application *Application
}

// Device describes a client device. A zero numeric field means unknown (no
// constraint); Parse requires the display fields, FromClientHints may leave
// them zero.
type Device struct {
	// CPUClass is one of CPUClasses, or "" if unknown.
	CPUClass string
	// CPUMHz is the processor clock in MHz.
	CPUMHz int
	// MemoryMB is the device's memory in MiB.
	MemoryMB int
	// Display is the usable screen area.
	Display Display
	// Formats are the media types the device renders, most preferred
	// first, each from KnownFormats and listed once. Empty means any.
	Formats []string
	// MaxFrameRate bounds frames per second the device can decode.
	MaxFrameRate float64
}

// Display is a screen in physical pixels.
type Display struct {
	Width, Height int // pixels, at most MaxPixels
	ColorDepth    int // bits per pixel, 1..MaxColorDepth; 24 is full colour
}

// Network describes the device's current network link.
type Network struct {
	// BandwidthBPS is the usable bandwidth in bits per second.
	BandwidthBPS int64
	// Latency is the round-trip time.
	Latency time.Duration
	// SaveData reports that the client asked to save data on this link
	// (the HTTP Save-Data hint); Merge shrinks the byte budget.
	SaveData bool
}

// User holds a user's preferences.
type User struct {
	// Patience is the tolerable time to deliver one object (the paper's
	// "patience factor"); zero means unlimited.
	Patience time.Duration
	// Grayscale asks for grayscale content.
	Grayscale bool
	// SaveData asks for smaller content; Merge shrinks the byte budget.
	SaveData bool
}

// Application says what an application accepts.
type Application struct {
	// Allowed lists acceptable adaptations (names from Adaptations), each
	// once; empty means all. To forbid all, set Profile.NoAdaptation.
	Allowed []string
	// MaxFrameRate bounds frames per second of the application's streams.
	MaxFrameRate float64
}

// Validate reports every problem with p as an errors.Join of *FieldError
// whose File is p.Name. Every profile returned by Parse, LoadFile,
// Examples and FromClientHints is valid.
func (p *Profile) Validate() error {
	if p == nil {
		return &FieldError{File: "<nil>", Field: "profile", Problem: "nil profile"}
	}
	pr := &problems{file: p.Name}
	if p.Name == "" {
		pr.file = "<unnamed>"
	}
	p.validate(pr)
	return pr.err()
}

func (p *Profile) validate(pr *problems) {
	k := string(p.Kind)
	checkName(pr, k+"/@name", p.Name)
	bodies := 0
	for _, set := range []bool{p.Device != nil, p.Network != nil, p.User != nil, p.Application != nil} {
		if set {
			bodies++
		}
	}
	if bodies != 1 {
		pr.add(k, "%d bodies: must have exactly the one matching its kind", bodies)
	}
	switch p.Kind {
	case KindDevice:
		if p.Device != nil {
			p.Device.validate(pr)
		} else {
			pr.add(k, "missing device body")
		}
	case KindNetwork:
		if p.Network != nil {
			p.Network.validate(pr)
		} else {
			pr.add(k, "missing network body")
		}
	case KindUser:
		if p.User != nil {
			p.User.validate(pr)
		} else {
			pr.add(k, "missing user body")
		}
	case KindApplication:
		if p.Application != nil {
			p.Application.validate(pr, p.NoAdaptation)
		} else {
			pr.add(k, "missing application body")
		}
	default:
		pr.add("kind", "%q: unknown kind (want device, network, user or application)", k)
	}
}

func checkName(pr *problems, field, name string) {
	switch {
	case name == "":
		pr.add(field, "missing: every profile needs a name")
	case len(name) > MaxNameLen:
		pr.add(field, "%d bytes: must be at most %d", len(name), MaxNameLen)
	default:
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				pr.add(field, "%q: only letters, digits, '.', '_' and '-' are allowed", name)
				return
			}
		}
	}
}

func checkRange(pr *problems, field string, v, maxV int64) {
	switch {
	case v < 0:
		pr.add(field, "%d: must not be negative", v)
	case v > maxV:
		pr.add(field, "%d: must be at most %d", v, maxV)
	}
}

func checkRate(pr *problems, field string, v float64) {
	if math.IsNaN(v) || v < 0 || v > MaxFrameRate {
		pr.add(field, "%g: must be between 0 and %g", v, MaxFrameRate)
	}
}

func (d *Device) validate(pr *problems) {
	if d.CPUClass != "" && !slices.Contains(cpuClasses, d.CPUClass) {
		pr.add("device/cpu/class", "%q: unknown CPU class (want one of %v)", d.CPUClass, cpuClasses)
	}
	checkRange(pr, "device/cpu/mhz", int64(d.CPUMHz), MaxCPUMHz)
	checkRange(pr, "device/memory-mb", int64(d.MemoryMB), MaxMemoryMB)
	checkRange(pr, "device/display/width", int64(d.Display.Width), MaxPixels)
	checkRange(pr, "device/display/height", int64(d.Display.Height), MaxPixels)
	checkRange(pr, "device/display/color-depth", int64(d.Display.ColorDepth), MaxColorDepth)
	checkRate(pr, "device/max-frame-rate", d.MaxFrameRate)
	if len(d.Formats) > MaxFormats {
		pr.add("device/formats", "%d formats: at most %d allowed", len(d.Formats), MaxFormats)
	}
	seen := map[string]bool{}
	for _, f := range d.Formats {
		switch {
		case !slices.Contains(knownFormats, f):
			pr.add("device/formats/format", "%q: unknown media type (known: %v)", f, knownFormats)
		case seen[f]:
			pr.add("device/formats/format", "%q: listed twice", f)
		}
		seen[f] = true
	}
}

func (n *Network) validate(pr *problems) {
	checkRange(pr, "network/bandwidth-bps", n.BandwidthBPS, MaxBandwidthBPS)
	checkRange(pr, "network/latency", int64(n.Latency), int64(MaxLatency))
}

func (u *User) validate(pr *problems) {
	checkRange(pr, "user/patience", int64(u.Patience), int64(MaxPatience))
}

func (a *Application) validate(pr *problems, noAdaptation bool) {
	if noAdaptation && len(a.Allowed) > 0 {
		pr.add("application/adaptations", "%v: contradicts adapt=\"false\" (list nothing when forbidding adaptation)", a.Allowed)
	}
	seen := map[string]bool{}
	for _, name := range a.Allowed {
		switch {
		case !slices.Contains(adaptationOrder, name):
			pr.add("application/adaptations/allow", "%q: unknown adaptation (known: %v)", name, adaptationOrder)
		case seen[name]:
			pr.add("application/adaptations/allow", "%q: listed twice", name)
		}
		seen[name] = true
	}
	checkRate(pr, "application/max-frame-rate", a.MaxFrameRate)
}

// Clone returns a deep copy of p, so callers may modify it freely.
func (p *Profile) Clone() *Profile {
	if p == nil {
		return nil
	}
	c := *p
	if p.Device != nil {
		d := *p.Device
		d.Formats = slices.Clone(d.Formats)
		c.Device = &d
	}
	if p.Network != nil {
		n := *p.Network
		c.Network = &n
	}
	if p.User != nil {
		u := *p.User
		c.User = &u
	}
	if p.Application != nil {
		a := *p.Application
		a.Allowed = slices.Clone(a.Allowed)
		c.Application = &a
	}
	return &c
}
