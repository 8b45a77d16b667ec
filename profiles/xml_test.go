package profiles

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseKinds(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want *Profile
	}{
		{
			name: "device",
			doc: `<?xml version="1.0"?>
<!-- comment -->
<device-profile name="pda">
  <cpu><class>handheld</class><mhz>200</mhz></cpu>
  <memory-mb>64</memory-mb>
  <display><width> 240 </width><height>320</height><color-depth>12</color-depth></display>
  <formats><format>IMAGE/JPEG</format><format>image/png</format></formats>
  <max-frame-rate>12.5</max-frame-rate>
</device-profile>`,
			want: &Profile{Kind: KindDevice, Name: "pda", Device: &Device{
				CPUClass: "handheld", CPUMHz: 200, MemoryMB: 64,
				Display: Display{Width: 240, Height: 320, ColorDepth: 12},
				Formats: []string{"image/jpeg", "image/png"}, MaxFrameRate: 12.5,
			}},
		},
		{
			name: "network",
			doc:  `<network-profile name="wlan"><bandwidth-bps>5000000</bandwidth-bps><latency>20ms</latency><save-data/></network-profile>`,
			want: &Profile{Kind: KindNetwork, Name: "wlan", Network: &Network{BandwidthBPS: 5_000_000, Latency: 20 * time.Millisecond, SaveData: true}},
		},
		{
			name: "user",
			doc:  `<user-profile name="u"><patience>2.5s</patience><preferences><grayscale/></preferences></user-profile>`,
			want: &Profile{Kind: KindUser, Name: "u", User: &User{Patience: 2500 * time.Millisecond, Grayscale: true}},
		},
		{
			name: "application forbids",
			doc:  `<application-profile name="dx" adapt="false"/>`,
			want: &Profile{Kind: KindApplication, Name: "dx", NoAdaptation: true, Application: &Application{}},
		},
		{
			name: "application list",
			doc:  `<application-profile name="a" adapt="true"><adaptations><allow>resize</allow><allow>reencode</allow></adaptations><max-frame-rate>15</max-frame-rate></application-profile>`,
			want: &Profile{Kind: KindApplication, Name: "a", Application: &Application{Allowed: []string{"resize", "reencode"}, MaxFrameRate: 15}},
		},
		{
			name: "device forbids adaptation",
			doc:  `<device-profile name="kiosk" adapt="false"><display><width>800</width><height>600</height><color-depth>16</color-depth></display></device-profile>`,
			want: &Profile{Kind: KindDevice, Name: "kiosk", NoAdaptation: true, Device: &Device{Display: Display{Width: 800, Height: 600, ColorDepth: 16}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.doc), tt.name+".xml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse = %+v\nwant %+v", got, tt.want)
			}
			out, err := Marshal(got)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			again, err := Parse(strings.NewReader(string(out)), "again.xml")
			if err != nil {
				t.Fatalf("Parse(Marshal) = %v\n%s", err, out)
			}
			if !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip = %+v, want %+v\n%s", again, got, out)
			}
		})
	}
}

// TestParseFieldErrors checks that every field problem is reported, at
// once, naming file, field and problem.
func TestParseFieldErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // exact FieldError texts, in any order
	}{
		{
			name: "pda.xml",
			doc: `<device-profile name="pda"><cpu><class>mainframe</class></cpu>
<display><width>-3</width><height>0</height><color-depth>64</color-depth></display>
<formats><format>image/jpeg</format><format>image/tiff</format><format>image/jpeg</format></formats></device-profile>`,
			want: []string{
				`pda.xml: device/display/width: -3: must be positive`,
				`pda.xml: device/display/height: 0: must be positive`,
				`pda.xml: device/display/color-depth: 64: must be at most 48`,
				`pda.xml: device/cpu/class: "mainframe": unknown CPU class (want one of [server workstation desktop laptop handheld embedded])`,
				`pda.xml: device/formats/format: "image/tiff": unknown media type (known: ` + "[" + strings.Join(knownFormats, " ") + "])",
				`pda.xml: device/formats/format: "image/jpeg": listed twice`,
			},
		},
		{
			name: "nodisplay.xml",
			doc:  `<device-profile name="bad name"><formats/></device-profile>`,
			want: []string{
				`nodisplay.xml: device/display: missing: required`,
				`nodisplay.xml: device/formats: empty: list at least one format, or omit <formats> to accept any`,
				`nodisplay.xml: device/@name: "bad name": only letters, digits, '.', '_' and '-' are allowed`,
			},
		},
		{
			name: "net.xml",
			doc:  `<network-profile name="n" adapt="maybe"><bandwidth-bps>fast</bandwidth-bps><latency>-1s</latency></network-profile>`,
			want: []string{
				`net.xml: network/bandwidth-bps: "fast": not an integer`,
				`net.xml: network/latency: -1s: must be positive`,
				`net.xml: network/@adapt: "maybe": must be "true" or "false"`,
			},
		},
		{
			name: "user.xml",
			doc:  `<user-profile><patience>2</patience></user-profile>`,
			want: []string{
				`user.xml: user/patience: "2": not a duration (write e.g. "150ms" or "2s")`,
				`user.xml: user/@name: missing: every profile needs a name`,
			},
		},
		{
			name: "app.xml",
			doc:  `<application-profile name="a" adapt="false"><adaptations><allow>resize</allow><allow>teleport</allow></adaptations><max-frame-rate>NaN</max-frame-rate></application-profile>`,
			want: []string{
				`app.xml: application/max-frame-rate: "NaN": not a number`,
				`app.xml: application/adaptations: [resize teleport]: contradicts adapt="false" (list nothing when forbidding adaptation)`,
				`app.xml: application/adaptations/allow: "teleport": unknown adaptation (known: [resize recolor reencode convert geometry framerate])`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(strings.NewReader(tt.doc), tt.name)
			if err == nil {
				t.Fatalf("Parse accepted %+v", p)
			}
			var got []string
			for _, fe := range FieldErrors(err) {
				got = append(got, fe.Error())
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.File != tt.name {
				t.Fatalf("errors.As(*FieldError) = %v, File %q", fe, tt.name)
			}
		})
	}
}

// TestParseStructure checks the strict-schema and size rules, each of
// which stops parsing with one error.
func TestParseStructure(t *testing.T) {
	display := `<display><width>1</width><height>1</height><color-depth>1</color-depth></display>`
	tests := []struct {
		name, doc, wantField, wantProblem string
	}{
		{"unknown root", `<printer-profile name="p"/>`, "document", "unknown root element"},
		{"unknown element", `<device-profile name="d">` + display + `<widht>3</widht></device-profile>`, "device/widht", "unknown element"},
		{"unknown attribute", `<device-profile name="d" colour="yes">` + display + `</device-profile>`, "device/@colour", "unknown attribute"},
		{"attribute on child", `<device-profile name="d"><display unit="px"><width>1</width></display></device-profile>`, "device/display/@unit", "unknown attribute"},
		{"repeated leaf", `<device-profile name="d"><display><width>1</width><width>2</width></display></device-profile>`, "device/display/width", "repeated"},
		{"repeated container", `<device-profile name="d">` + display + display + `</device-profile>`, "device/display", "repeated"},
		{"element inside leaf", `<user-profile name="u"><patience><b>2s</b></patience></user-profile>`, "user/patience/b", "unknown element"},
		{"text in container", `<user-profile name="u">hello<patience>2s</patience></user-profile>`, "user", "unexpected text"},
		{"text in flag", `<user-profile name="u"><preferences><grayscale>no</grayscale></preferences></user-profile>`, "user/preferences/grayscale", "unexpected text"},
		{"doctype", `<!DOCTYPE x [<!ENTITY a "b">]><user-profile name="u"/>`, "document", "DTD"},
		{"namespace", `<user-profile xmlns="urn:x" name="u"/>`, "user-profile", "namespaced"},
		{"two roots", `<user-profile name="u"/><user-profile name="v"/>`, "document", "more than one root"},
		{"empty", ``, "document", "no root element"},
		{"malformed", `<user-profile name="u">`, "document", "malformed XML"},
		{"not utf-8", "<user-profile name=\"\xff\"/>", "document", "UTF-8"},
		{"deeper than the schema", `<device-profile name="d"><display><width><x><y/></x></width></display></device-profile>`, "device/display/width/x", "unknown element"},
		{"too big", `<user-profile name="u">` + strings.Repeat(" ", MaxDocumentSize) + `</user-profile>`, "document", "larger than"},
		{"too many elements", `<application-profile name="a"><adaptations>` + strings.Repeat(`<allow>resize</allow>`, MaxElements) + `</adaptations></application-profile>`, "document", "more than 256 elements"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(strings.NewReader(tt.doc), "s.xml")
			if err == nil {
				t.Fatalf("Parse accepted %+v", p)
			}
			fes := FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("want one FieldError, got %v", err)
			}
			if fes[0].File != "s.xml" || fes[0].Field != tt.wantField || !strings.Contains(fes[0].Problem, tt.wantProblem) {
				t.Fatalf("got %v; want field %q, problem containing %q", fes[0], tt.wantField, tt.wantProblem)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.xml")
	if err := os.WriteFile(path, []byte(`<network-profile name="n"/>`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(path)
	if got, want := err.Error(), "bad.xml: network/bandwidth-bps: missing: required"; got != want {
		t.Fatalf("LoadFile error = %q, want %q", got, want)
	}
	if _, err := LoadFile(filepath.Join(dir, "absent.xml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadFile(absent) = %v, want os.ErrNotExist", err)
	}
	p, err := LoadFile(filepath.Join("examples", "pda.xml"))
	if err != nil || p.Device.Display.Width != 240 {
		t.Fatalf("LoadFile(pda.xml) = %+v, %v", p, err)
	}
}

func TestValidateTyped(t *testing.T) {
	tests := []struct {
		name string
		p    *Profile
		want string // substring of the joined error; "" means valid
	}{
		{"nil", nil, "nil profile"},
		{"unknown kind", &Profile{Kind: "printer", Name: "p", Device: &Device{}}, `"printer": unknown kind`},
		{"body mismatch", &Profile{Kind: KindUser, Name: "u", Network: &Network{}}, "missing user body"},
		{"two bodies", &Profile{Kind: KindUser, Name: "u", User: &User{}, Network: &Network{}}, "2 bodies"},
		{"negative width", &Profile{Kind: KindDevice, Name: "d", Device: &Device{Display: Display{Width: -1}}}, "d: device/display/width: -1: must not be negative"},
		{"unknown display is fine", &Profile{Kind: KindDevice, Name: "d", Device: &Device{}}, ""},
		{"negative bandwidth", &Profile{Kind: KindNetwork, Name: "n", Network: &Network{BandwidthBPS: -5}}, "must not be negative"},
		{"patience too long", &Profile{Kind: KindUser, Name: "u", User: &User{Patience: 2 * time.Hour}}, "must be at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want error containing %q", err, tt.want)
			}
		})
	}
}
