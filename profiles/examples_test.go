package profiles

import (
	"bytes"
	"reflect"
	"testing"
)

func TestExamples(t *testing.T) {
	ex := Examples()
	if len(ex) != 10 {
		t.Fatalf("Examples has %d profiles: %v", len(ex), ExampleNames())
	}
	for name, p := range ex {
		t.Run(name, func(t *testing.T) {
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			out, err := Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(bytes.NewReader(out), name)
			if err != nil || !reflect.DeepEqual(again, p) {
				t.Fatalf("round trip = %+v, %v; want %+v", again, err, p)
			}
		})
	}
	ex["pda"].Device.Formats[0] = "image/gif"
	if p, _ := Example("pda"); p.Device.Formats[0] != "image/jpeg" {
		t.Fatalf("Examples returned shared state: pda formats %v", p.Device.Formats)
	}
	if _, err := Example("toaster"); err == nil {
		t.Fatal("Example(toaster) succeeded")
	}
}

// TestTestbed merges each testbed device with the default user and
// application profiles, checking the paper's device characteristics and
// the resulting byte budget.
func TestTestbed(t *testing.T) {
	tests := []struct {
		device string
		want   Constraints
	}{
		{"workstation", Constraints{MaxWidth: 1600, MaxHeight: 1200, ColorDepth: 24, ByteBudget: 25_000_000}},
		{"desktop", Constraints{MaxWidth: 1000, MaxHeight: 1000, ColorDepth: 24, ByteBudget: 25_000_000}},
		{"laptop", Constraints{MaxWidth: 1024, MaxHeight: 768, ColorDepth: 24, ByteBudget: 14_000}},
		{"pda", Constraints{MaxWidth: 240, MaxHeight: 320, ColorDepth: 12, ByteBudget: 1_250_000, MaxFrameRate: 10}},
	}
	if got := TestbedDevices(); len(got) != len(tests) {
		t.Fatalf("TestbedDevices = %v", got)
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			d, n, err := TestbedDevice(tt.device)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Merge(d, n, DefaultUser(), DefaultApplication())
			if err != nil {
				t.Fatal(err)
			}
			if c.MaxWidth != tt.want.MaxWidth || c.MaxHeight != tt.want.MaxHeight || c.ColorDepth != tt.want.ColorDepth ||
				c.ByteBudget != tt.want.ByteBudget || c.MaxFrameRate != tt.want.MaxFrameRate || c.NoAdaptation {
				t.Fatalf("Merge = %+v, want %+v", c, tt.want)
			}
			if !reflect.DeepEqual(c.Formats, d.Device.Formats) || !reflect.DeepEqual(c.Allowed, Adaptations()) {
				t.Fatalf("formats %v allowed %v", c.Formats, c.Allowed)
			}
		})
	}
	if _, _, err := TestbedDevice("mainframe"); err == nil {
		t.Fatal("TestbedDevice(mainframe) succeeded")
	}
	dx, err := Example("diagnostic-imaging")
	if err != nil {
		t.Fatal(err)
	}
	d, n, _ := TestbedDevice("pda")
	c, err := Merge(d, n, DefaultUser(), dx)
	if err != nil || !c.NoAdaptation || c.Allows("resize") {
		t.Fatalf("diagnostic-imaging merge = %+v, %v; want NoAdaptation", c, err)
	}
}
