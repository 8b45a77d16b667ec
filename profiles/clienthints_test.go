package profiles

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFromClientHints(t *testing.T) {
	tests := []struct {
		name        string
		headers     map[string]string
		wantDevice  *Device  // nil: no device profile
		wantNetwork *Network // nil: no network profile
		wantErrs    []string // each FieldError text, in header-parsing order
	}{
		{
			name:    "no hints",
			headers: map[string]string{"User-Agent": "curl/8.5.0"},
		},
		{
			name: "Chrome image request on a phone",
			headers: map[string]string{
				"Accept":                "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
				"Sec-CH-Viewport-Width": "412",
				"Sec-CH-DPR":            "2.625",
				"Downlink":              "1.45",
				"RTT":                   "150",
				"ECT":                   "4g",
				"Save-Data":             "on",
			},
			wantDevice: &Device{Display: Display{Width: 1082}, Formats: []string{
				"image/avif", "image/webp", "image/apng", "image/svg+xml", "image/jpeg", "image/png", "image/gif"}},
			wantNetwork: &Network{BandwidthBPS: 1_450_000, Latency: 150 * time.Millisecond, SaveData: true},
		},
		{
			name: "Firefox image request, legacy hints",
			headers: map[string]string{
				"Accept":          "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
				"Viewport-Width":  "1280",
				"Viewport-Height": "720",
			},
			wantDevice: &Device{Display: Display{Width: 1280, Height: 720}, Formats: []string{
				"image/avif", "image/webp", "image/png", "image/svg+xml", "image/jpeg", "image/gif"}},
		},
		{
			name: "Chrome navigation Accept sorted by q",
			headers: map[string]string{
				"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
			},
			wantDevice: &Device{Formats: []string{"text/html", "application/xhtml+xml", "image/avif", "image/webp", "image/apng",
				"application/xml", "image/jpeg", "image/png", "image/gif"}},
		},
		{
			name:       "Width beats the viewport; q=0 excludes",
			headers:    map[string]string{"Sec-CH-Width": "600", "Viewport-Width": "1920", "DPR": "2", "Accept": "image/webp;q=0,image/*"},
			wantDevice: &Device{Display: Display{Width: 600}, Formats: []string{"image/jpeg", "image/png", "image/gif"}},
		},
		{
			name:       "only unknown types: any format",
			headers:    map[string]string{"Accept": "application/json"},
			wantDevice: &Device{},
		},
		{
			name:        "ECT fills the gaps",
			headers:     map[string]string{"ECT": "2g", "RTT": "1800"},
			wantNetwork: &Network{BandwidthBPS: 70_000, Latency: 1800 * time.Millisecond},
		},
		{
			name:        "slow-2g defaults",
			headers:     map[string]string{"ECT": "slow-2g"},
			wantNetwork: &Network{BandwidthBPS: 50_000, Latency: 2 * time.Second},
		},
		{
			name:        "Save-Data off",
			headers:     map[string]string{"Save-Data": "off"},
			wantNetwork: &Network{},
		},
		{
			name:    "malformed hints are all reported",
			headers: map[string]string{"DPR": "0", "Viewport-Width": "wide", "Downlink": "-1", "RTT": "1.5", "ECT": "5g"},
			wantErrs: []string{
				`client-hints: DPR: "0": must be a number above 0 and at most 16`,
				`client-hints: Viewport-Width: "wide": must be an integer from 1 to 65535`,
				`client-hints: Downlink: "-1": must be a number of Mbit/s from 0 to 1000000`,
				`client-hints: RTT: "1.5": must be an integer of milliseconds from 0 to 60000`,
				`client-hints: ECT: "5g": must be slow-2g, 2g, 3g or 4g`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.headers {
				h.Set(k, v)
			}
			d, n, err := FromClientHints(h)
			if tt.wantErrs != nil {
				var got []string
				for _, fe := range FieldErrors(err) {
					got = append(got, fe.Error())
				}
				if !reflect.DeepEqual(got, tt.wantErrs) {
					t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.wantErrs, "\n"))
				}
				if d != nil || n != nil {
					t.Fatalf("profiles returned with an error: %+v %+v", d, n)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromClientHints: %v", err)
			}
			if (d == nil) != (tt.wantDevice == nil) || d != nil && !reflect.DeepEqual(d.Device, tt.wantDevice) {
				t.Fatalf("device = %+v, want %+v", d, tt.wantDevice)
			}
			if (n == nil) != (tt.wantNetwork == nil) || n != nil && !reflect.DeepEqual(n.Network, tt.wantNetwork) {
				t.Fatalf("network = %+v, want %+v", n, tt.wantNetwork)
			}
			for _, p := range []*Profile{d, n} {
				if p != nil {
					if err := p.Validate(); err != nil {
						t.Fatalf("invalid profile: %v", err)
					}
				}
			}
		})
	}
}

// TestClientHintsMerge shows a browser's hints narrowing a testbed
// device's constraints and Save-Data shrinking the budget.
func TestClientHintsMerge(t *testing.T) {
	h := http.Header{}
	h.Set("Accept", "image/webp,image/png,*/*;q=0.5")
	h.Set("Viewport-Width", "200")
	h.Set("Downlink", "0.4")
	h.Set("Save-Data", "on")
	d, n, err := FromClientHints(h)
	if err != nil {
		t.Fatal(err)
	}
	pda, wlan, _ := TestbedDevice("pda")
	c, err := Merge(pda, wlan, d, n, DefaultUser())
	if err != nil {
		t.Fatal(err)
	}
	want := Constraints{MaxWidth: 200, MaxHeight: 320, ColorDepth: 12, Formats: []string{"image/jpeg", "image/png"},
		ByteBudget: 400_000 / 8 * 2 / SaveDataDivisor, MaxFrameRate: 10}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Merge = %+v\nwant    %+v", c, want)
	}
}
