package adapters

import "encoding/xml"

// Attributes describe one content object, as found by a Characterizer.
// Zero fields are unknown or not applicable.
type Attributes struct {
	XMLName xml.Name `xml:"attributes"`
	// Format is the sniffed media type, e.g. "image/jpeg".
	Format string `xml:"format,attr"`
	// X and Y are, for geometry documents, the smallest window position
	// (negative when a window starts off screen).
	X int `xml:"x,attr,omitempty"`
	Y int `xml:"y,attr,omitempty"`
	// Width and Height are pixel dimensions (for geometry documents: the
	// largest right and bottom window edge, so a document fits a display of
	// MaxWidth x MaxHeight when X, Y >= 0 and Width, Height <= the maxima).
	Width  int `xml:"width,attr,omitempty"`
	Height int `xml:"height,attr,omitempty"`
	// ColorDepth is bits per pixel including alpha (24 for a colour JPEG,
	// 8 for a grayscale one or a 256-colour palette, 32 for RGBA PNG).
	ColorDepth int `xml:"colorDepth,attr,omitempty"`
	// Grayscale reports a single-channel colour model.
	Grayscale bool `xml:"grayscale,attr,omitempty"`
	// Alpha reports a colour model that can carry transparency.
	Alpha bool `xml:"alpha,attr,omitempty"`
	// Bytes is the encoded size.
	Bytes int64 `xml:"bytes,attr"`
	// FrameRate is frames per second for frame-based streams.
	FrameRate float64 `xml:"frameRate,attr,omitempty"`
	// Windows counts the windows of a geometry document.
	Windows int `xml:"windows,attr,omitempty"`
}

// XML renders the attributes as one XML element, as the paper's
// characterizer output.
func (a Attributes) XML() ([]byte, error) { return xml.Marshal(a) }
