package profiles

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on profile documents, checked before anything else is decoded.
const (
	MaxDocumentSize = 64 << 10 // bytes in one XML document
	MaxDepth        = 4        // element nesting, root included
	MaxElements     = 256      // elements in one document
)

// The XML documents. Every leaf holds text so that a malformed number
// becomes one FieldError among many rather than aborting the decode.
type deviceDoc struct {
	XMLName      xml.Name    `xml:"device-profile"`
	Name         string      `xml:"name,attr"`
	Adapt        string      `xml:"adapt,attr,omitempty"`
	CPU          *cpuDoc     `xml:"cpu"`
	MemoryMB     string      `xml:"memory-mb,omitempty"`
	Display      *displayDoc `xml:"display"`
	Formats      *formatsDoc `xml:"formats"`
	MaxFrameRate string      `xml:"max-frame-rate,omitempty"`
}

type cpuDoc struct {
	Class string `xml:"class,omitempty"`
	MHz   string `xml:"mhz,omitempty"`
}

type displayDoc struct {
	Width      string `xml:"width"`
	Height     string `xml:"height"`
	ColorDepth string `xml:"color-depth"`
}

type formatsDoc struct {
	Format []string `xml:"format"`
}

type networkDoc struct {
	XMLName      xml.Name  `xml:"network-profile"`
	Name         string    `xml:"name,attr"`
	Adapt        string    `xml:"adapt,attr,omitempty"`
	BandwidthBPS string    `xml:"bandwidth-bps"`
	Latency      string    `xml:"latency,omitempty"`
	SaveData     *struct{} `xml:"save-data"`
}

type userDoc struct {
	XMLName     xml.Name  `xml:"user-profile"`
	Name        string    `xml:"name,attr"`
	Adapt       string    `xml:"adapt,attr,omitempty"`
	Patience    string    `xml:"patience,omitempty"`
	Preferences *prefsDoc `xml:"preferences"`
}

type prefsDoc struct {
	Grayscale *struct{} `xml:"grayscale"`
	SaveData  *struct{} `xml:"save-data"`
}

type applicationDoc struct {
	XMLName      xml.Name        `xml:"application-profile"`
	Name         string          `xml:"name,attr"`
	Adapt        string          `xml:"adapt,attr,omitempty"`
	Adaptations  *adaptationsDoc `xml:"adaptations"`
	MaxFrameRate string          `xml:"max-frame-rate,omitempty"`
}

type adaptationsDoc struct {
	Allow []string `xml:"allow"`
}

// schema lists every element path a document may contain, mapped to its
// shape. Anything else is rejected: a misspelt element would otherwise be
// silently ignored and weaken the constraints.
type shape int

const (
	container shape = iota // child elements only
	leaf                   // text only, at most once
	repeated               // text only, any number of times
	flag                   // empty, at most once; presence means true
)

var schema = map[string]shape{
	"device-profile":                        container,
	"device-profile/cpu":                    container,
	"device-profile/cpu/class":              leaf,
	"device-profile/cpu/mhz":                leaf,
	"device-profile/memory-mb":              leaf,
	"device-profile/display":                container,
	"device-profile/display/width":          leaf,
	"device-profile/display/height":         leaf,
	"device-profile/display/color-depth":    leaf,
	"device-profile/formats":                container,
	"device-profile/formats/format":         repeated,
	"device-profile/max-frame-rate":         leaf,
	"network-profile":                       container,
	"network-profile/bandwidth-bps":         leaf,
	"network-profile/latency":               leaf,
	"network-profile/save-data":             flag,
	"user-profile":                          container,
	"user-profile/patience":                 leaf,
	"user-profile/preferences":              container,
	"user-profile/preferences/grayscale":    flag,
	"user-profile/preferences/save-data":    flag,
	"application-profile":                   container,
	"application-profile/adaptations":       container,
	"application-profile/adaptations/allow": repeated,
	"application-profile/max-frame-rate":    leaf,
}

// LoadFile reads and parses the profile document at path; errors name the
// file by its base name.
func LoadFile(path string) (*Profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	defer f.Close()
	return Parse(f, filepath.Base(path))
}

// Parse reads one XML profile document (see the package documentation for
// the schema) of at most MaxDocumentSize bytes. name identifies the
// document in errors (e.g. "pda.xml"). The result is valid (see
// Profile.Validate). A structural problem (malformed XML, unknown or
// repeated element, too deep) is reported alone; otherwise every field
// problem is reported at once as an errors.Join of *FieldError.
func Parse(r io.Reader, name string) (*Profile, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("profiles: reading %s: %w", name, err)
	}
	if len(data) > MaxDocumentSize {
		return nil, &FieldError{File: name, Field: "document", Problem: fmt.Sprintf("larger than %d bytes", MaxDocumentSize)}
	}
	root, err := checkStructure(data, name)
	if err != nil {
		return nil, err
	}
	pr := &problems{file: name}
	var p *Profile
	switch root {
	case "device-profile":
		var d deviceDoc
		if err := xml.Unmarshal(data, &d); err != nil {
			return nil, &FieldError{File: name, Field: "document", Problem: err.Error()}
		}
		p = d.toProfile(pr)
	case "network-profile":
		var d networkDoc
		if err := xml.Unmarshal(data, &d); err != nil {
			return nil, &FieldError{File: name, Field: "document", Problem: err.Error()}
		}
		p = d.toProfile(pr)
	case "user-profile":
		var d userDoc
		if err := xml.Unmarshal(data, &d); err != nil {
			return nil, &FieldError{File: name, Field: "document", Problem: err.Error()}
		}
		p = d.toProfile(pr)
	case "application-profile":
		var d applicationDoc
		if err := xml.Unmarshal(data, &d); err != nil {
			return nil, &FieldError{File: name, Field: "document", Problem: err.Error()}
		}
		p = d.toProfile(pr)
	}
	p.validate(pr)
	if err := pr.err(); err != nil {
		return nil, err
	}
	return p, nil
}

// checkStructure walks the tokens of data and returns the root element's
// name. It enforces the schema, MaxDepth and MaxElements, and refuses
// DTDs, namespaces and stray text.
func checkStructure(data []byte, name string) (string, error) {
	fail := func(field, format string, args ...any) (string, error) {
		return "", &FieldError{File: name, Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if !utf8.Valid(data) {
		return fail("document", "not valid UTF-8")
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	var (
		path     []string
		root     string
		elements int
		seen     = map[string]bool{} // leaf and flag paths already seen under the current parent
	)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail("document", "malformed XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			elements++
			if elements > MaxElements {
				return fail("document", "more than %d elements", MaxElements)
			}
			if len(path) == 0 && root != "" {
				return fail("document", "more than one root element")
			}
			if len(path) >= MaxDepth {
				return fail(kindPath(strings.Join(path, "/")), "nested deeper than %d elements", MaxDepth)
			}
			if t.Name.Space != "" {
				return fail(strings.Join(append(path, t.Name.Local), "/"), "namespaced elements are not allowed")
			}
			p := strings.Join(append(path, t.Name.Local), "/")
			sh, ok := schema[p]
			if !ok {
				if len(path) == 0 {
					return fail("document", "<%s>: unknown root element (want device-profile, network-profile, user-profile or application-profile)", t.Name.Local)
				}
				return fail(kindPath(p), "unknown element <%s>", t.Name.Local)
			}
			if len(path) > 0 {
				if sh != repeated && seen[p] {
					return fail(kindPath(p), "repeated: may appear at most once")
				}
				seen[p] = true
			}
			for _, a := range t.Attr {
				if len(path) != 0 || a.Name.Space != "" || (a.Name.Local != "name" && a.Name.Local != "adapt") {
					return fail(kindPath(p)+"/@"+a.Name.Local, "unknown attribute")
				}
			}
			if len(path) == 0 {
				root = t.Name.Local
			}
			path = append(path, t.Name.Local)
		case xml.EndElement:
			// Forget the children of the element being closed. (Elements
			// inside a leaf are not in the schema, so they were refused.)
			p := strings.Join(path, "/")
			for k := range seen {
				if strings.HasPrefix(k, p+"/") {
					delete(seen, k)
				}
			}
			path = path[:len(path)-1]
		case xml.CharData:
			if len(path) == 0 {
				if len(bytes.TrimSpace(t)) != 0 {
					return fail("document", "text outside the root element")
				}
				continue
			}
			p := strings.Join(path, "/")
			if sh := schema[p]; (sh == container || sh == flag) && len(bytes.TrimSpace(t)) != 0 {
				return fail(kindPath(p), "unexpected text %q", truncate(string(bytes.TrimSpace(t))))
			}
		case xml.Directive:
			return fail("document", "DTDs and directives are not allowed")
		case xml.ProcInst:
			if t.Target != "xml" {
				return fail("document", "processing instruction <?%s?> is not allowed", t.Target)
			}
		}
	}
	if root == "" {
		return fail("document", "no root element")
	}
	return root, nil
}

// kindPath turns "device-profile/display/width" into "device/display/width".
func kindPath(p string) string {
	head, rest, _ := strings.Cut(p, "/")
	head = strings.TrimSuffix(head, "-profile")
	if rest == "" {
		return head
	}
	return head + "/" + rest
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func parseAdapt(pr *problems, kind, v string) bool {
	switch strings.TrimSpace(v) {
	case "", "true":
		return false
	case "false":
		return true
	}
	pr.add(kind+"/@adapt", "%q: must be \"true\" or \"false\"", truncate(v))
	return false
}

// parseInt parses a required-if-present positive integer; "" gives 0.
func parseInt(pr *problems, field, v string, maxV int64) int64 {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		pr.add(field, "%q: not an integer", truncate(v))
		return 0
	case n <= 0:
		pr.add(field, "%d: must be positive", n)
		return 0
	case n > maxV:
		pr.add(field, "%d: must be at most %d", n, maxV)
		return 0
	}
	return n
}

func parseRate(pr *problems, field, v string) float64 {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
		pr.add(field, "%q: not a number", truncate(v))
		return 0
	case f <= 0 || f > MaxFrameRate:
		pr.add(field, "%g: must be positive and at most %g", f, MaxFrameRate)
		return 0
	}
	return f
}

// parseDuration parses a Go duration ("150ms", "2s"); "" gives 0.
func parseDuration(pr *problems, field, v string, positive bool, maxV time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		pr.add(field, "%q: not a duration (write e.g. \"150ms\" or \"2s\")", truncate(v))
		return 0
	case d < 0 || positive && d == 0:
		pr.add(field, "%s: must be positive", d)
		return 0
	case d > maxV:
		pr.add(field, "%s: must be at most %s", d, maxV)
		return 0
	}
	return d
}

func required(pr *problems, field, v string) {
	if strings.TrimSpace(v) == "" {
		pr.add(field, "missing: required")
	}
}

func (d *deviceDoc) toProfile(pr *problems) *Profile {
	dev := &Device{}
	if d.CPU != nil {
		dev.CPUClass = strings.TrimSpace(d.CPU.Class)
		dev.CPUMHz = int(parseInt(pr, "device/cpu/mhz", d.CPU.MHz, MaxCPUMHz))
	}
	dev.MemoryMB = int(parseInt(pr, "device/memory-mb", d.MemoryMB, MaxMemoryMB))
	if d.Display == nil {
		pr.add("device/display", "missing: required")
	} else {
		required(pr, "device/display/width", d.Display.Width)
		required(pr, "device/display/height", d.Display.Height)
		required(pr, "device/display/color-depth", d.Display.ColorDepth)
		dev.Display.Width = int(parseInt(pr, "device/display/width", d.Display.Width, MaxPixels))
		dev.Display.Height = int(parseInt(pr, "device/display/height", d.Display.Height, MaxPixels))
		dev.Display.ColorDepth = int(parseInt(pr, "device/display/color-depth", d.Display.ColorDepth, MaxColorDepth))
	}
	if d.Formats != nil {
		if len(d.Formats.Format) == 0 {
			pr.add("device/formats", "empty: list at least one format, or omit <formats> to accept any")
		}
		for _, f := range d.Formats.Format {
			dev.Formats = append(dev.Formats, strings.ToLower(strings.TrimSpace(f)))
		}
	}
	dev.MaxFrameRate = parseRate(pr, "device/max-frame-rate", d.MaxFrameRate)
	return &Profile{Kind: KindDevice, Name: d.Name, NoAdaptation: parseAdapt(pr, "device", d.Adapt), Device: dev}
}

func (d *networkDoc) toProfile(pr *problems) *Profile {
	required(pr, "network/bandwidth-bps", d.BandwidthBPS)
	n := &Network{
		BandwidthBPS: parseInt(pr, "network/bandwidth-bps", d.BandwidthBPS, MaxBandwidthBPS),
		Latency:      parseDuration(pr, "network/latency", d.Latency, false, MaxLatency),
		SaveData:     d.SaveData != nil,
	}
	return &Profile{Kind: KindNetwork, Name: d.Name, NoAdaptation: parseAdapt(pr, "network", d.Adapt), Network: n}
}

func (d *userDoc) toProfile(pr *problems) *Profile {
	u := &User{Patience: parseDuration(pr, "user/patience", d.Patience, true, MaxPatience)}
	if d.Preferences != nil {
		u.Grayscale = d.Preferences.Grayscale != nil
		u.SaveData = d.Preferences.SaveData != nil
	}
	return &Profile{Kind: KindUser, Name: d.Name, NoAdaptation: parseAdapt(pr, "user", d.Adapt), User: u}
}

func (d *applicationDoc) toProfile(pr *problems) *Profile {
	a := &Application{MaxFrameRate: parseRate(pr, "application/max-frame-rate", d.MaxFrameRate)}
	if d.Adaptations != nil {
		if len(d.Adaptations.Allow) == 0 {
			pr.add("application/adaptations", "empty: list at least one adaptation, omit <adaptations> to allow all, or set adapt=\"false\" to forbid all")
		}
		for _, s := range d.Adaptations.Allow {
			a.Allowed = append(a.Allowed, strings.TrimSpace(s))
		}
	}
	return &Profile{Kind: KindApplication, Name: d.Name, NoAdaptation: parseAdapt(pr, "application", d.Adapt), Application: a}
}

// Marshal encodes p as an indented XML document that Parse accepts and
// decodes back to an equal Profile, provided p satisfies Parse's extra
// requirements (device display fields and network bandwidth present).
// It returns Validate's error for an invalid p.
func Marshal(p *Profile) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	adapt := ""
	if p.NoAdaptation {
		adapt = "false"
	}
	itoa := func(n int64) string {
		if n == 0 {
			return ""
		}
		return strconv.FormatInt(n, 10)
	}
	ftoa := func(f float64) string {
		if f == 0 {
			return ""
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	dtoa := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	flagOf := func(b bool) *struct{} {
		if b {
			return &struct{}{}
		}
		return nil
	}
	var v any
	switch p.Kind {
	case KindDevice:
		d := p.Device
		doc := &deviceDoc{Name: p.Name, Adapt: adapt,
			MemoryMB:     itoa(int64(d.MemoryMB)),
			MaxFrameRate: ftoa(d.MaxFrameRate),
			Display: &displayDoc{
				Width:      itoa(int64(d.Display.Width)),
				Height:     itoa(int64(d.Display.Height)),
				ColorDepth: itoa(int64(d.Display.ColorDepth)),
			},
		}
		if d.CPUClass != "" || d.CPUMHz != 0 {
			doc.CPU = &cpuDoc{Class: d.CPUClass, MHz: itoa(int64(d.CPUMHz))}
		}
		if len(d.Formats) > 0 {
			doc.Formats = &formatsDoc{Format: d.Formats}
		}
		v = doc
	case KindNetwork:
		n := p.Network
		v = &networkDoc{Name: p.Name, Adapt: adapt, BandwidthBPS: itoa(n.BandwidthBPS),
			Latency: dtoa(n.Latency), SaveData: flagOf(n.SaveData)}
	case KindUser:
		u := p.User
		doc := &userDoc{Name: p.Name, Adapt: adapt, Patience: dtoa(u.Patience)}
		if u.Grayscale || u.SaveData {
			doc.Preferences = &prefsDoc{Grayscale: flagOf(u.Grayscale), SaveData: flagOf(u.SaveData)}
		}
		v = doc
	case KindApplication:
		a := p.Application
		doc := &applicationDoc{Name: p.Name, Adapt: adapt, MaxFrameRate: ftoa(a.MaxFrameRate)}
		if len(a.Allowed) > 0 {
			doc.Adaptations = &adaptationsDoc{Allow: a.Allowed}
		}
		v = doc
	}
	out, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("profiles: marshal %s: %w", p.Name, err)
	}
	return append(append([]byte(xml.Header), out...), '\n'), nil
}
