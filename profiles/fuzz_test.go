package profiles

import (
	"bytes"
	"io/fs"
	"net/http"
	"path"
	"reflect"
	"testing"
)

// FuzzParse checks that no input panics Parse, and that every accepted
// profile is valid and survives Marshal and Parse unchanged.
func FuzzParse(f *testing.F) {
	entries, err := fs.ReadDir(exampleFS, "examples")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		data, err := exampleFS.ReadFile(path.Join("examples", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`<user-profile name="u"><patience>2s</patience><preferences><grayscale/><save-data/></preferences></user-profile>`))
	f.Add([]byte(`<network-profile name="n" adapt="false"><bandwidth-bps>1</bandwidth-bps><save-data/></network-profile>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(bytes.NewReader(data), "fuzz.xml")
		if err != nil {
			if len(FieldErrors(err)) == 0 {
				t.Fatalf("error without a FieldError: %v", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid profile: %v", err)
		}
		out, err := Marshal(p)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(bytes.NewReader(out), "again.xml")
		if err != nil {
			t.Fatalf("Parse(Marshal(p)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("round trip changed the profile:\n%+v\n%+v\n%s", p, again, out)
		}
		if _, err := Merge(p); err != nil {
			t.Fatalf("Merge of one valid profile: %v", err)
		}
	})
}

// FuzzClientHints checks that no header values panic FromClientHints and
// that every profile it returns is valid and mergeable.
func FuzzClientHints(f *testing.F) {
	f.Add("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", "412", "2.625", "", "1.45", "150", "4g", "on")
	f.Add("text/html;q=0.9,image/webp;q=0", "", "1", "600", "0", "0", "slow-2g", "off")
	f.Fuzz(func(t *testing.T, accept, vw, dpr, width, downlink, rtt, ect, saveData string) {
		h := http.Header{}
		for k, v := range map[string]string{"Accept": accept, "Sec-CH-Viewport-Width": vw, "DPR": dpr,
			"Width": width, "Downlink": downlink, "RTT": rtt, "ECT": ect, "Save-Data": saveData} {
			if v != "" {
				h.Set(k, v)
			}
		}
		d, n, err := FromClientHints(h)
		if err != nil {
			if len(FieldErrors(err)) == 0 || d != nil || n != nil {
				t.Fatalf("bad error result: %v %v %v", d, n, err)
			}
			return
		}
		var ps []*Profile
		for _, p := range []*Profile{d, n} {
			if p != nil {
				if err := p.Validate(); err != nil {
					t.Fatalf("invalid profile: %v", err)
				}
				ps = append(ps, p)
			}
		}
		if _, err := Merge(ps...); err != nil {
			t.Fatalf("Merge: %v", err)
		}
	})
}
