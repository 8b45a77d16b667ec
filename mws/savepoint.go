package mws

import (
	"context"
	"encoding/xml"
	"fmt"
	"regexp"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	"github.com/imashproject/imash/mws/objcache"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// storedElement is one element of a session's stored savepoint.
type storedElement struct {
	name         string
	kind         mwsv1.ElementKind
	contentType  string
	digest       string
	data         []byte
	streamID     string
	streamOffset uint64
}

// Adapter adapts server objects for a target device at delivery time. The
// content adaptation pipeline plugs in here; the default passes objects
// through unchanged.
type Adapter interface {
	// Adaptable reports whether objects of contentType can be adapted.
	Adaptable(contentType string) bool
	// Adapt returns the variant of obj for device. It must not modify obj.
	Adapt(ctx context.Context, obj *objcache.Object, device string) (data []byte, contentType string, adapted bool, err error)
}

// IdentityAdapter delivers every object as it is.
type IdentityAdapter struct{}

// Adaptable implements Adapter.
func (IdentityAdapter) Adaptable(string) bool { return false }

// Adapt implements Adapter.
func (IdentityAdapter) Adapt(_ context.Context, obj *objcache.Object, _ string) ([]byte, string, bool, error) {
	return obj.Body, obj.ContentType, false, nil
}

var elementNameRE = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,128}$`)

func badSavepoint(format string, args ...any) error {
	return rpcerr.New(codes.InvalidArgument, "BAD_SAVEPOINT", format, args...)
}

// checkSavepoint validates uploaded elements against the session and the
// limits; nothing is stored unless every element is valid.
func (s *Server) checkSavepoint(ss *session, els []*mwsv1.Element) error {
	return s.checkElements(ss, els, true)
}

// checkElements is checkSavepoint; cached says whether a server object
// must be in the cache (a replica may lack one its owner evicted).
func (s *Server) checkElements(ss *session, els []*mwsv1.Element, cached bool) error {
	if len(els) > s.cfg.MaxSavepointElements {
		return rpcerr.New(codes.InvalidArgument, "SAVEPOINT_TOO_LARGE", "%d elements exceed the limit of %d", len(els), s.cfg.MaxSavepointElements)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	total := 0
	seen := map[string]bool{}
	for i, e := range els {
		if !elementNameRE.MatchString(e.GetName()) {
			return badSavepoint("element %d: name %q: want 1-128 of [A-Za-z0-9._/-]", i, e.GetName())
		}
		if seen[e.GetName()] {
			return badSavepoint("element %q appears twice", e.GetName())
		}
		seen[e.GetName()] = true
		if len(e.GetContentType()) > 128 {
			return badSavepoint("element %q: content type too long", e.GetName())
		}
		if e.GetDeleted() {
			continue
		}
		if len(e.GetData()) > s.cfg.MaxElementBytes {
			return rpcerr.New(codes.InvalidArgument, "SAVEPOINT_TOO_LARGE", "element %q: %d bytes exceed the limit of %d", e.GetName(), len(e.GetData()), s.cfg.MaxElementBytes)
		}
		total += len(e.GetData())
		switch e.GetKind() {
		case mwsv1.ElementKind_ELEMENT_KIND_SERVER_OBJECT:
			if len(e.GetData()) > 0 {
				return badSavepoint("element %q: a server object is a reference; it carries no data", e.GetName())
			}
			if _, ok := ss.objects[e.GetDigest()]; !ok {
				return rpcerr.New(codes.InvalidArgument, "UNKNOWN_OBJECT_REF", "element %q refers to %q, which this session never fetched", e.GetName(), e.GetDigest())
			}
			if _, ok := s.cache.Lookup(e.GetDigest()); cached && !ok {
				return rpcerr.New(codes.FailedPrecondition, "OBJECT_EVICTED", "element %q: object %q is no longer cached", e.GetName(), e.GetDigest())
			}
		case mwsv1.ElementKind_ELEMENT_KIND_APP_OBJECT, mwsv1.ElementKind_ELEMENT_KIND_PROGRESS:
			if e.GetDigest() != "" || e.GetStreamId() != "" {
				return badSavepoint("element %q: an application object carries only data", e.GetName())
			}
		case mwsv1.ElementKind_ELEMENT_KIND_STREAM:
			if _, ok := ss.streams[e.GetStreamId()]; !ok {
				return badSavepoint("element %q: session has no stream %q", e.GetName(), e.GetStreamId())
			}
		default:
			return badSavepoint("element %q: unknown kind %v", e.GetName(), e.GetKind())
		}
	}
	if total > s.cfg.MaxSavepointBytes {
		return rpcerr.New(codes.InvalidArgument, "SAVEPOINT_TOO_LARGE", "savepoint of %d bytes exceeds the limit of %d", total, s.cfg.MaxSavepointBytes)
	}
	return nil
}

// mergeSavepointLocked merges checked elements into the stored savepoint:
// an element replaces the stored one of its name; deleted removes it.
func mergeSavepointLocked(ss *session, els []*mwsv1.Element) (n int, bytes int64) {
	for _, e := range els {
		if e.GetDeleted() {
			delete(ss.savepoint, e.GetName())
			continue
		}
		ss.savepoint[e.GetName()] = &storedElement{
			name: e.GetName(), kind: e.GetKind(), contentType: e.GetContentType(), digest: e.GetDigest(),
			data: e.GetData(), streamID: e.GetStreamId(), streamOffset: e.GetStreamOffset(),
		}
	}
	for _, e := range ss.savepoint {
		bytes += int64(len(e.data))
	}
	return len(ss.savepoint), bytes
}

// summaryLocked describes the stored savepoint to a target.
func (s *Server) summaryLocked(ss *session) []*mwsv1.ElementSummary {
	var out []*mwsv1.ElementSummary
	for _, e := range ss.savepoint {
		sum := &mwsv1.ElementSummary{Name: e.name, Kind: e.kind, ContentType: e.contentType, Size: int64(len(e.data))}
		if e.kind == mwsv1.ElementKind_ELEMENT_KIND_SERVER_OBJECT {
			if obj, ok := s.cache.Lookup(e.digest); ok {
				sum.Size = obj.Size
				if sum.ContentType == "" {
					sum.ContentType = obj.ContentType
				}
			}
			sum.Adaptable = s.cfg.Adapter.Adaptable(sum.ContentType)
		}
		out = append(out, sum)
	}
	sortSummaries(out)
	return out
}

// SummaryXML renders a state summary as the paper's XML document.
func SummaryXML(handoffID string, els []*mwsv1.ElementSummary) (string, error) {
	type xmlElement struct {
		Name        string `xml:"name,attr"`
		Kind        string `xml:"kind,attr"`
		ContentType string `xml:"type,attr,omitempty"`
		Size        int64  `xml:"size,attr"`
		Adaptable   bool   `xml:"adaptable,attr"`
	}
	doc := struct {
		XMLName  xml.Name     `xml:"session-state"`
		Handoff  string       `xml:"handoff,attr"`
		Elements []xmlElement `xml:"element"`
	}{Handoff: handoffID}
	for _, e := range els {
		doc.Elements = append(doc.Elements, xmlElement{Name: e.Name, Kind: kindName(e.Kind), ContentType: e.ContentType, Size: e.Size, Adaptable: e.Adaptable})
	}
	b, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", fmt.Errorf("summary xml: %w", err)
	}
	return xml.Header + string(b), nil
}

func kindName(k mwsv1.ElementKind) string {
	switch k {
	case mwsv1.ElementKind_ELEMENT_KIND_SERVER_OBJECT:
		return "server-object"
	case mwsv1.ElementKind_ELEMENT_KIND_APP_OBJECT:
		return "application-object"
	case mwsv1.ElementKind_ELEMENT_KIND_PROGRESS:
		return "progress"
	case mwsv1.ElementKind_ELEMENT_KIND_STREAM:
		return "stream"
	}
	return "unknown"
}
