package profiles

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func dev(name string, w, h, depth int, formats ...string) *Profile {
	return &Profile{Kind: KindDevice, Name: name, Device: &Device{Display: Display{Width: w, Height: h, ColorDepth: depth}, Formats: formats}}
}

func netw(name string, bps int64) *Profile {
	return &Profile{Kind: KindNetwork, Name: name, Network: &Network{BandwidthBPS: bps}}
}

func user(name string, patience time.Duration) *Profile {
	return &Profile{Kind: KindUser, Name: name, User: &User{Patience: patience}}
}

func app(name string, allowed ...string) *Profile {
	return &Profile{Kind: KindApplication, Name: name, Application: &Application{Allowed: allowed}}
}

func with(p *Profile, f func(*Profile)) *Profile { f(p); return p }

func TestMerge(t *testing.T) {
	tests := []struct {
		name     string
		profiles []*Profile
		want     Constraints
		wantErr  string
	}{
		{
			name: "no profiles, no constraints",
			want: Constraints{},
		},
		{
			name:     "smallest display and colour depth win",
			profiles: []*Profile{dev("a", 1600, 1200, 24), dev("b", 240, 1400, 12), dev("c", 0, 0, 0)},
			want:     Constraints{MaxWidth: 240, MaxHeight: 1200, ColorDepth: 12},
		},
		{
			name: "formats intersect in the first device's order",
			profiles: []*Profile{
				dev("pda", 240, 320, 12, "image/png", "image/jpeg", "application/xml"),
				dev("hints", 0, 0, 0, "image/webp", "image/jpeg", "image/png"),
				dev("any", 10, 10, 8),
			},
			want: Constraints{MaxWidth: 10, MaxHeight: 10, ColorDepth: 8, Formats: []string{"image/png", "image/jpeg"}},
		},
		{
			name:     "empty format intersection names the profiles",
			profiles: []*Profile{dev("pda", 1, 1, 1, "image/jpeg"), dev("hints", 1, 1, 1, "image/webp")},
			wantErr:  "device profiles pda, hints have no format in common",
		},
		{
			name:     "byte budget is bandwidth in bytes times patience",
			profiles: []*Profile{netw("wlan", 5_000_000), user("u", 2*time.Second)},
			want:     Constraints{ByteBudget: 1_250_000},
		},
		{
			name:     "modem budget",
			profiles: []*Profile{netw("modem", 56_000), user("u", 2*time.Second)},
			want:     Constraints{ByteBudget: 14_000},
		},
		{
			name:     "slowest network and least patience win",
			profiles: []*Profile{netw("fast", 100_000_000), user("patient", 10*time.Second), netw("slow", 8_000), user("hasty", 500*time.Millisecond)},
			want:     Constraints{ByteBudget: 500},
		},
		{
			name:     "no budget without patience",
			profiles: []*Profile{netw("n", 8_000)},
			want:     Constraints{},
		},
		{
			name:     "save-data on the network divides the budget",
			profiles: []*Profile{with(netw("n", 8_000), func(p *Profile) { p.Network.SaveData = true }), user("u", 4*time.Second)},
			want:     Constraints{ByteBudget: 1_000},
		},
		{
			name:     "save-data from the user without a known budget",
			profiles: []*Profile{with(user("u", 0), func(p *Profile) { p.User.SaveData = true })},
			want:     Constraints{ByteBudget: SaveDataBudget},
		},
		{
			name:     "grayscale caps colour depth at 8",
			profiles: []*Profile{dev("d", 100, 100, 24), with(user("u", 0), func(p *Profile) { p.User.Grayscale = true })},
			want:     Constraints{MaxWidth: 100, MaxHeight: 100, ColorDepth: 8, Grayscale: true},
		},
		{
			name:     "grayscale keeps a smaller depth",
			profiles: []*Profile{dev("d", 100, 100, 4), with(user("u", 0), func(p *Profile) { p.User.Grayscale = true })},
			want:     Constraints{MaxWidth: 100, MaxHeight: 100, ColorDepth: 4, Grayscale: true},
		},
		{
			name:     "any profile may forbid adaptation",
			profiles: []*Profile{app("a", "resize"), with(netw("n", 0), func(p *Profile) { p.NoAdaptation = true })},
			want:     Constraints{NoAdaptation: true},
		},
		{
			name:     "allowed lists intersect in canonical order",
			profiles: []*Profile{app("a", "reencode", "resize", "convert"), app("all"), app("b", "convert", "resize", "geometry")},
			want:     Constraints{Allowed: []string{"resize", "convert"}},
		},
		{
			name:     "disjoint allowed lists forbid adaptation",
			profiles: []*Profile{app("a", "resize"), app("b", "reencode")},
			want:     Constraints{NoAdaptation: true},
		},
		{
			name: "lowest frame rate wins",
			profiles: []*Profile{
				with(dev("pda", 1, 1, 1), func(p *Profile) { p.Device.MaxFrameRate = 10 }),
				with(app("video"), func(p *Profile) { p.Application.MaxFrameRate = 15 }),
				with(app("slow"), func(p *Profile) { p.Application.MaxFrameRate = 5 }),
			},
			want: Constraints{MaxWidth: 1, MaxHeight: 1, ColorDepth: 1, MaxFrameRate: 5},
		},
		{
			name:     "invalid profile",
			profiles: []*Profile{dev("d", -1, 1, 1)},
			wantErr:  "d: device/display/width: -1: must not be negative",
		},
		{
			name:     "nil profile",
			profiles: []*Profile{nil},
			wantErr:  "argument 0 is nil",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Merge(tt.profiles...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Merge error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Merge: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Merge = %+v\nwant    %+v", got, tt.want)
			}
		})
	}
}

// TestMergeDoesNotAlias checks the merged formats are a copy.
func TestMergeDoesNotAlias(t *testing.T) {
	d := dev("d", 1, 1, 1, "image/png", "image/jpeg")
	c, err := Merge(d)
	if err != nil {
		t.Fatal(err)
	}
	c.Formats[0] = "image/gif"
	if d.Device.Formats[0] != "image/png" {
		t.Fatalf("Merge result aliases the profile's formats: %v", d.Device.Formats)
	}
}
