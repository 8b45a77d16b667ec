package adapters

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// Window-geometry documents are application state objects (paper Fig. 1)
// describing where an application's windows are. Schema:
//
//	<windows [any attributes]>
//	  <window id="main" x="100" y="50" width="1600" height="1200" [any attributes]>[any content]</window>
//	  …
//	</windows>
//
// or a single <window …/> as the root. Positions are pixels from the
// display's top-left corner; width and height must be > 0 and every value
// within ±2^30. Unknown attributes and window content are preserved by the
// rewrite.

// geometryLimit bounds coordinates so sums never overflow.
const geometryLimit = 1 << 30

// Window is one window of a geometry document.
type Window struct {
	XMLName xml.Name   `xml:"window"`
	ID      string     `xml:"id,attr,omitempty"`
	X       int        `xml:"x,attr"`
	Y       int        `xml:"y,attr"`
	Width   int        `xml:"width,attr"`
	Height  int        `xml:"height,attr"`
	Other   []xml.Attr `xml:",any,attr"`
	Inner   []byte     `xml:",innerxml"`
}

// GeometryDoc is a parsed geometry document.
type GeometryDoc struct {
	// Single is true when the root element is one <window>.
	Single  bool
	Attrs   []xml.Attr
	Windows []Window
}

type windowsXML struct {
	XMLName xml.Name   `xml:"windows"`
	Attrs   []xml.Attr `xml:",any,attr"`
	Windows []Window   `xml:"window"`
}

// rootElement returns the local name of the first element of an XML
// document, reading at most the first 1 KiB.
func rootElement(data []byte) string {
	d := xml.NewDecoder(io.LimitReader(bytes.NewReader(data), 1024))
	for {
		tok, err := d.RawToken()
		if err != nil {
			return ""
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t.Name.Local
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return ""
			}
		}
	}
}

// ParseGeometry parses and validates a geometry document holding at most
// maxWindows windows. Errors are *DecodeError.
func ParseGeometry(data []byte, maxWindows int) (*GeometryDoc, error) {
	fail := func(err error) (*GeometryDoc, error) {
		return nil, &DecodeError{Format: MediaGeometry, Err: err}
	}
	var doc GeometryDoc
	switch rootElement(data) {
	case "window":
		var w Window
		if err := xml.Unmarshal(data, &w); err != nil {
			return fail(err)
		}
		doc.Single, doc.Windows = true, []Window{w}
	case "windows":
		var ws windowsXML
		if err := xml.Unmarshal(data, &ws); err != nil {
			return fail(err)
		}
		doc.Attrs, doc.Windows = ws.Attrs, ws.Windows
	default:
		return fail(errors.New("root element is neither <window> nor <windows>"))
	}
	if len(doc.Windows) > maxWindows {
		return fail(fmt.Errorf("%d windows exceed the limit of %d", len(doc.Windows), maxWindows))
	}
	for i, w := range doc.Windows {
		if w.Width <= 0 || w.Height <= 0 || w.Width > geometryLimit || w.Height > geometryLimit ||
			w.X < -geometryLimit || w.X > geometryLimit || w.Y < -geometryLimit || w.Y > geometryLimit {
			return fail(fmt.Errorf("window %d (%q): geometry %dx%d+%d+%d out of range", i, w.ID, w.Width, w.Height, w.X, w.Y))
		}
	}
	return &doc, nil
}

// Marshal renders the document in the schema above.
func (d *GeometryDoc) Marshal() ([]byte, error) {
	if d.Single && len(d.Windows) == 1 {
		return xml.Marshal(d.Windows[0])
	}
	return xml.Marshal(windowsXML{Attrs: d.Attrs, Windows: d.Windows})
}

// Fit rewrites every window to lie inside a maxW x maxH display (0 means
// unbounded): a window too big is scaled down keeping its aspect ratio
// (never up), then moved the least distance that puts it on screen.
// It reports whether anything changed.
func (d *GeometryDoc) Fit(maxW, maxH int) bool {
	changed := false
	for i := range d.Windows {
		w := &d.Windows[i]
		old := *w
		s := 1.0
		if maxW > 0 && w.Width > maxW {
			s = min(s, float64(maxW)/float64(w.Width))
		}
		if maxH > 0 && w.Height > maxH {
			s = min(s, float64(maxH)/float64(w.Height))
		}
		if s < 1 {
			w.Width = max(1, min(int(float64(w.Width)*s), maxOr(maxW, w.Width)))
			w.Height = max(1, min(int(float64(w.Height)*s), maxOr(maxH, w.Height)))
		}
		w.X = clampPos(w.X, w.Width, maxW)
		w.Y = clampPos(w.Y, w.Height, maxH)
		if w.X != old.X || w.Y != old.Y || w.Width != old.Width || w.Height != old.Height {
			changed = true
		}
	}
	return changed
}

func maxOr(limit, v int) int {
	if limit > 0 {
		return limit
	}
	return v
}

// clampPos keeps a window of size n starting at p inside [0, limit).
func clampPos(p, n, limit int) int {
	if limit > 0 && p+n > limit {
		p = limit - n
	}
	return max(p, 0)
}

// GeometryCharacterizer recognises window-geometry documents by their root
// element.
type GeometryCharacterizer struct {
	// MaxWindows bounds the windows per document; 0 means the default 1024.
	MaxWindows int
}

// Capabilities implements Characterizer.
func (GeometryCharacterizer) Capabilities() Capabilities {
	return Capabilities{MediaType: MediaGeometry, Description: "XML window geometry (<windows>/<window x y width height>)", Geometry: true}
}

// Sniff implements Characterizer.
func (GeometryCharacterizer) Sniff(data []byte) bool {
	switch rootElement(data) {
	case "window", "windows":
		return true
	}
	return false
}

// Characterize implements Characterizer. The bounding box of all windows
// becomes X, Y, Width, Height; maxPixels does not apply.
func (g GeometryCharacterizer) Characterize(data []byte, _ int64) (Attributes, error) {
	limit := g.MaxWindows
	if limit <= 0 {
		limit = NewDefaultConfig().MaxWindows
	}
	doc, err := ParseGeometry(data, limit)
	if err != nil {
		return Attributes{}, err
	}
	return geometryAttributes(doc, int64(len(data))), nil
}

func geometryAttributes(doc *GeometryDoc, n int64) Attributes {
	a := Attributes{Format: MediaGeometry, Bytes: n, Windows: len(doc.Windows)}
	for i, w := range doc.Windows {
		if i == 0 || w.X < a.X {
			a.X = w.X
		}
		if i == 0 || w.Y < a.Y {
			a.Y = w.Y
		}
		a.Width = max(a.Width, w.X+w.Width)
		a.Height = max(a.Height, w.Y+w.Height)
	}
	return a
}
