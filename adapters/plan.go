package adapters

import (
	"fmt"
	"math"

	"github.com/imashproject/imash/profiles"
)

// Command names. The adaptation names match profiles.Constraints.Allowed;
// "decode" and "encode" are the bookends of a raster pipeline.
const (
	CmdDecode   = "decode"
	CmdConvert  = "convert"
	CmdResize   = "resize"
	CmdRecolor  = "recolor"
	CmdReencode = "reencode" // encode to a byte budget
	CmdEncode   = "encode"   // encode at the default quality
	CmdGeometry = "geometry"
)

// Command is one planned step with its parameters; only the fields its
// Name uses are set.
type Command struct {
	Name string
	// Format is the output media type (convert, encode, reencode).
	Format string
	// Width and Height are the target size (resize) or display
	// (geometry). For decode they are the size the following resize
	// needs (0 when none follows): a codec able to decode at a reduced
	// scale may decode to no less than that.
	Width, Height int
	// Bits is bits per channel (recolor); Gray converts to grayscale.
	Bits int
	Gray bool
	// Quality is the starting JPEG quality (encode, reencode).
	Quality int
	// Budget is the byte budget (reencode).
	Budget int64
}

// String renders the command as it appears in Result.Steps.
func (c Command) String() string {
	switch c.Name {
	case CmdConvert:
		return fmt.Sprintf("convert(%s)", c.Format)
	case CmdResize, CmdGeometry:
		return fmt.Sprintf("%s(%dx%d)", c.Name, c.Width, c.Height)
	case CmdRecolor:
		if c.Gray {
			return fmt.Sprintf("recolor(gray,%dbit)", c.Bits)
		}
		return fmt.Sprintf("recolor(%dbit/channel)", c.Bits)
	case CmdEncode:
		return fmt.Sprintf("encode(%s,q=%d)", c.Format, c.Quality)
	case CmdReencode:
		return fmt.Sprintf("reencode(%s,budget=%d)", c.Format, c.Budget)
	}
	return c.Name
}

// Plan is the ordered list of commands for one object. An empty plan means
// pass the object through unchanged.
type Plan []Command

// Names returns the command names in order.
func (p Plan) Names() []string {
	out := make([]string, len(p))
	for i, c := range p {
		out[i] = c.Name
	}
	return out
}

// Plan generates commands for an object with attributes a and capabilities
// caps against constraints c (paper §3.3.2, "generate commands"). The
// order is fixed:
//
//  0. NoAdaptation, or an unknown kind of content: empty plan.
//  1. geometry documents: geometry(display) when a window lies outside
//     MaxWidth x MaxHeight and "geometry" is allowed. Nothing else applies.
//  2. raster: convert when the format is not in c.Formats: the first
//     supported format with a codec, preferring one with SupportsAlpha when
//     the source has alpha. Needs "convert"; otherwise *UnsupportedError.
//  3. resize to fit MaxWidth x MaxHeight keeping the aspect ratio, never
//     upscaling (needs "resize").
//  4. recolor when Grayscale is asked of a colour image, or ColorDepth
//     (< 24) is below the source's depth: grayscale at min(8, depth) bits,
//     or ColorDepth/3 bits per channel (12 → 4) (needs "recolor").
//  5. reencode to ByteBudget when the source exceeds it or an earlier
//     command changed the pixels (needs "reencode"); otherwise encode at
//     DefaultQuality if an earlier command ran.
//
// A non-empty raster plan starts with decode, which carries the resize
// target (if any) so that the decoder may reduce the image as it decodes.
func (a *Adapter) Plan(attrs Attributes, caps Capabilities, c profiles.Constraints) (Plan, error) {
	if c.NoAdaptation {
		return nil, nil
	}
	switch {
	case caps.Geometry:
		if !c.Allows(CmdGeometry) || !geometryOutside(attrs, c) {
			return nil, nil
		}
		return Plan{{Name: CmdGeometry, Width: c.MaxWidth, Height: c.MaxHeight}}, nil
	case !caps.Raster:
		return nil, nil
	}

	var cmds Plan
	// 2. format.
	out := a.codecs[attrs.Format]
	if out == nil || !c.Supports(attrs.Format) {
		if !c.Allows(CmdConvert) {
			return nil, &UnsupportedError{Format: attrs.Format, Supported: c.Formats, Reason: "conversion not allowed"}
		}
		out = a.pickCodec(c.Formats, attrs.Alpha)
		if out == nil {
			return nil, &UnsupportedError{Format: attrs.Format, Supported: c.Formats, Reason: "no codec for any supported format"}
		}
		cmds = append(cmds, Command{Name: CmdConvert, Format: out.MediaType})
	}
	// 3. fit to display.
	if w, h := fitSize(attrs.Width, attrs.Height, c.MaxWidth, c.MaxHeight); (w != attrs.Width || h != attrs.Height) && c.Allows(CmdResize) {
		cmds = append(cmds, Command{Name: CmdResize, Width: w, Height: h})
	}
	// 4. colour depth.
	if cmd, ok := recolorCommand(attrs, c); ok && c.Allows(CmdRecolor) {
		cmds = append(cmds, cmd)
	}
	// 5. bytes.
	changed := len(cmds) > 0
	switch {
	case c.ByteBudget > 0 && (changed || attrs.Bytes > c.ByteBudget) && c.Allows(CmdReencode):
		cmds = append(cmds, Command{Name: CmdReencode, Format: out.MediaType, Quality: a.cfg.DefaultQuality, Budget: c.ByteBudget})
	case changed:
		cmds = append(cmds, Command{Name: CmdEncode, Format: out.MediaType, Quality: a.cfg.DefaultQuality})
	default:
		return nil, nil
	}
	decode := Command{Name: CmdDecode, Format: attrs.Format}
	for _, cmd := range cmds {
		if cmd.Name == CmdResize {
			decode.Width, decode.Height = cmd.Width, cmd.Height
		}
	}
	return append(Plan{decode}, cmds...), nil
}

func (a *Adapter) pickCodec(formats []string, alpha bool) *Codec {
	if len(formats) == 0 {
		return nil
	}
	if alpha {
		for _, f := range formats {
			if k := a.codecs[f]; k != nil && k.SupportsAlpha {
				return k
			}
		}
	}
	for _, f := range formats {
		if k := a.codecs[f]; k != nil {
			return k
		}
	}
	return nil
}

func geometryOutside(a Attributes, c profiles.Constraints) bool {
	return a.X < 0 || a.Y < 0 || (c.MaxWidth > 0 && a.Width > c.MaxWidth) || (c.MaxHeight > 0 && a.Height > c.MaxHeight)
}

// fitSize returns w x h scaled down to fit maxW x maxH (0 = unbounded),
// keeping the aspect ratio and at least 1 pixel per side; never upscales.
func fitSize(w, h, maxW, maxH int) (int, int) {
	s := 1.0
	if maxW > 0 && w > maxW {
		s = min(s, float64(maxW)/float64(w))
	}
	if maxH > 0 && h > maxH {
		s = min(s, float64(maxH)/float64(h))
	}
	if s >= 1 {
		return w, h
	}
	nw := max(1, int(math.Round(float64(w)*s)))
	nh := max(1, int(math.Round(float64(h)*s)))
	if maxW > 0 {
		nw = min(nw, maxW)
	}
	if maxH > 0 {
		nh = min(nh, maxH)
	}
	return nw, nh
}

func recolorCommand(a Attributes, c profiles.Constraints) (Command, bool) {
	d := c.ColorDepth
	switch {
	case c.Grayscale && !a.Grayscale:
		bits := 8
		if d > 0 && d < 8 {
			bits = d
		}
		return Command{Name: CmdRecolor, Gray: true, Bits: bits}, true
	case d <= 0 || d >= 24 || a.ColorDepth <= d:
		return Command{}, false
	case a.Grayscale || c.Grayscale:
		if d >= 8 {
			return Command{}, false // 8-bit gray already fits
		}
		return Command{Name: CmdRecolor, Gray: true, Bits: d}, true
	default:
		return Command{Name: CmdRecolor, Bits: max(1, d/3)}, true
	}
}
