package profiles

import (
	"cmp"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names of the profiles FromClientHints returns, and the File of its
// errors.
const (
	ClientHintsDevice  = "client-hints-device"
	ClientHintsNetwork = "client-hints-network"
	clientHintsFile    = "client-hints"
)

// ectDefaults maps the ECT (effective connection type) hint to the
// bandwidth and round-trip time assumed when Downlink or RTT is absent.
// The 2G/3G figures are the Network Information API's thresholds, so they
// err on the slow side; 4g is any faster link, for which we assume a
// typical mobile broadband link.
var ectDefaults = map[string]struct {
	bps int64
	rtt time.Duration
}{
	"slow-2g": {50_000, 2000 * time.Millisecond},
	"2g":      {70_000, 1400 * time.Millisecond},
	"3g":      {700_000, 270 * time.Millisecond},
	"4g":      {10_000_000, 50 * time.Millisecond},
}

// baselineImages are the formats a wildcard in Accept (image/* or */*)
// stands for: ones every browser decodes.
var baselineImages = []string{"image/jpeg", "image/png", "image/gif"}

const (
	maxHintLen    = 64   // bytes in a numeric or token hint
	maxAcceptLen  = 4096 // bytes in the joined Accept header
	maxAcceptList = 64   // media ranges considered in Accept
	maxDPR        = 16.0
)

// FromClientHints maps HTTP Client Hints to a device profile and a network
// profile, so a browser behind the HTTP proxy gets content adapted from its
// own hints. Either result is nil when no hint for it is present. The
// Sec-CH- form of a hint takes precedence over the legacy form.
//
// Device: display width is Width (or Sec-CH-Width, physical pixels of the
// requested resource) if present, else round(Viewport-Width × DPR); height
// is round(Viewport-Height × DPR); both zero (unknown) when absent.
// Formats come from Accept, most preferred (highest q) first, keeping only
// KnownFormats; image/* and */* stand for JPEG, PNG and GIF; q=0 excludes a
// type. An Accept naming no known type leaves Formats empty (any), so such
// content passes through unconverted.
//
// Network: Downlink (Mbit/s) gives the bandwidth and RTT (ms) the latency;
// ECT (slow-2g, 2g, 3g, 4g) fills in whichever is missing. Save-Data: on
// sets SaveData, which makes Merge shrink the byte budget.
//
// Malformed or out-of-range hints are errors (an errors.Join of
// *FieldError whose Field is the header name); the results are then nil.
func FromClientHints(h http.Header) (device, network *Profile, err error) {
	pr := &problems{file: clientHintsFile}

	dpr := 1.0
	if name, v, ok := hint(h, "Sec-CH-DPR", "DPR"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > maxDPR {
			pr.add(name, "%q: must be a number above 0 and at most %g", truncate(v), maxDPR)
		} else {
			dpr = f
		}
	}
	pixels := func(names ...string) (int, bool) {
		name, v, ok := hint(h, names...)
		if !ok {
			return 0, false
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxPixels {
			pr.add(name, "%q: must be an integer from 1 to %d", truncate(v), MaxPixels)
			return 0, false
		}
		return n, true
	}
	scaled := func(css int) int { return min(int(math.Round(float64(css)*dpr)), MaxPixels) }

	var dev Device
	haveDevice := false
	vw, okVW := pixels("Sec-CH-Viewport-Width", "Viewport-Width")
	vh, okVH := pixels("Sec-CH-Viewport-Height", "Viewport-Height")
	w, okW := pixels("Sec-CH-Width", "Width")
	switch {
	case okW:
		dev.Display.Width, haveDevice = w, true
	case okVW:
		dev.Display.Width, haveDevice = scaled(vw), true
	}
	if okVH {
		dev.Display.Height, haveDevice = scaled(vh), true
	}
	if accept := strings.Join(h.Values("Accept"), ","); accept != "" {
		haveDevice = true
		if len(accept) > maxAcceptLen {
			pr.add("Accept", "%d bytes: at most %d considered", len(accept), maxAcceptLen)
		} else {
			dev.Formats = acceptFormats(accept)
		}
	}

	var net Network
	haveNet := false
	if name, v, ok := hint(h, "Downlink"); ok {
		haveNet = true
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f*1e6 > MaxBandwidthBPS {
			pr.add(name, "%q: must be a number of Mbit/s from 0 to %d", truncate(v), MaxBandwidthBPS/1_000_000)
		} else {
			net.BandwidthBPS = int64(math.Round(f * 1e6))
		}
	}
	if name, v, ok := hint(h, "RTT"); ok {
		haveNet = true
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > MaxLatency.Milliseconds() {
			pr.add(name, "%q: must be an integer of milliseconds from 0 to %d", truncate(v), MaxLatency.Milliseconds())
		} else {
			net.Latency = time.Duration(n) * time.Millisecond
		}
	}
	if name, v, ok := hint(h, "ECT"); ok {
		haveNet = true
		d, known := ectDefaults[strings.ToLower(v)]
		if !known {
			pr.add(name, "%q: must be slow-2g, 2g, 3g or 4g", truncate(v))
		} else {
			if net.BandwidthBPS == 0 {
				net.BandwidthBPS = d.bps
			}
			if net.Latency == 0 {
				net.Latency = d.rtt
			}
		}
	}
	if _, v, ok := hint(h, "Save-Data"); ok {
		haveNet = true
		// Only "on" enables it; other values are reserved and mean off.
		token, _, _ := strings.Cut(v, ";")
		net.SaveData = strings.EqualFold(strings.TrimSpace(token), "on")
	}

	if err := pr.err(); err != nil {
		return nil, nil, err
	}
	if haveDevice {
		device = &Profile{Kind: KindDevice, Name: ClientHintsDevice, Device: &dev}
	}
	if haveNet {
		network = &Profile{Kind: KindNetwork, Name: ClientHintsNetwork, Network: &net}
	}
	return device, network, nil
}

// hint returns the first present header among names, trimmed and
// unquoted. A too-long value is reported as present but malformed by the
// caller's parser, since it is truncated to maxHintLen+1 bytes.
func hint(h http.Header, names ...string) (name, value string, ok bool) {
	for _, n := range names {
		if vs := h.Values(n); len(vs) > 0 {
			v := strings.TrimSpace(vs[0])
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if len(v) > maxHintLen {
				v = v[:maxHintLen+1]
			}
			return n, v, true
		}
	}
	return "", "", false
}

// acceptFormats turns an Accept header into known formats, highest q
// first (ties keep header order), without duplicates or q=0 types.
func acceptFormats(accept string) []string {
	type rng struct {
		types []string
		q     float64
	}
	var ranges []rng
	excluded := map[string]bool{}
	for i, part := range strings.Split(accept, ",") {
		if i >= maxAcceptList {
			break
		}
		fields := strings.Split(part, ";")
		mt := strings.ToLower(strings.TrimSpace(fields[0]))
		q := 1.0
		for _, param := range fields[1:] {
			k, v, _ := strings.Cut(param, "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
					f = 0 // a malformed weight makes the range unusable
				}
				q = f
			}
		}
		var types []string
		switch {
		case mt == "*/*" || mt == "image/*":
			types = baselineImages
		case slices.Contains(knownFormats, mt):
			types = []string{mt}
		}
		if q == 0 {
			if len(types) == 1 {
				excluded[mt] = true
			}
			continue
		}
		if types != nil {
			ranges = append(ranges, rng{types, q})
		}
	}
	slices.SortStableFunc(ranges, func(a, b rng) int { return cmp.Compare(b.q, a.q) })
	var out []string
	for _, r := range ranges {
		for _, t := range r.types {
			if !excluded[t] && !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}
