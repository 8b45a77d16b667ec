package mws

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imashproject/imash/internal/rpcerr"
	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

func TestHandoffTokens(t *testing.T) {
	tab := newHandoffTable(time.Minute)
	h := &handoff{id: "h1"}
	tok, _ := tab.issue(h, "pda", purposeOffer, time.Minute)

	if _, err := tab.use(tok, "pda", purposeResume); rpcerr.Reason(err) != "TOKEN_NOT_FOR_DEVICE" {
		t.Fatalf("wrong purpose: %v", err)
	}
	// A token presented wrongly is burnt.
	if _, err := tab.use(tok, "pda", purposeOffer); rpcerr.Reason(err) != "BAD_TOKEN" {
		t.Fatalf("burnt token: %v", err)
	}

	tok, _ = tab.issue(h, "pda", purposeOffer, time.Minute)
	if _, err := tab.use(tok, "kiosk", purposeOffer); rpcerr.Code(err) != codes.PermissionDenied {
		t.Fatalf("other device: %v", err)
	}
	tok, _ = tab.issue(h, "pda", purposeOffer, time.Minute)
	got, err := tab.use(tok, "pda", purposeOffer)
	if err != nil || got != h {
		t.Fatalf("use: %v, %v", got, err)
	}
	if _, err := tab.use(tok, "pda", purposeOffer); rpcerr.Reason(err) != "BAD_TOKEN" {
		t.Fatalf("replayed token: %v", err)
	}
	tok, _ = tab.issue(h, "pda", purposeOffer, -time.Second)
	if _, err := tab.use(tok, "pda", purposeOffer); rpcerr.Reason(err) != "TOKEN_EXPIRED" {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := tab.use("made-up", "pda", purposeOffer); rpcerr.Reason(err) != "BAD_TOKEN" {
		t.Fatalf("made-up token: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	p, err := ParsePolicy([]byte(`{
		"device_classes": {"kiosk-*": "public", "ws-*": "workstation", "pda-*": "personal"},
		"rules": [
			{"name": "records-never-public", "labels": ["patient-records"], "deny_classes": ["public"]},
			{"name": "xray-on-workstations", "apps": ["xray"], "allow_classes": ["workstation", "personal"]}
		]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, app, device string
		labels            []string
		rule              string
	}{
		{"records to kiosk", "notes", "kiosk-lobby", []string{"patient-records"}, "records-never-public"},
		{"records to pda", "notes", "pda-7", []string{"patient-records"}, ""},
		{"unlabelled to kiosk", "notes", "kiosk-lobby", nil, ""},
		{"xray to kiosk", "xray", "kiosk-lobby", nil, "xray-on-workstations"},
		{"xray to unknown class", "xray", "tv-1", nil, "xray-on-workstations"},
		{"xray to workstation", "xray", "ws-3", []string{"patient-records"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Check(tc.app, tc.labels, p.Class(tc.device))
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("denied: %v", err)
				}
				return
			}
			if rpcerr.Reason(err) != "POLICY_DENIED" || !strings.Contains(err.Error(), tc.rule) {
				t.Fatalf("got %v, want a denial naming %q", err, tc.rule)
			}
		})
	}
	if c := p.Class("tv-1"); c != "unclassified" {
		t.Fatalf("default class %q", c)
	}
	var nilPolicy *Policy
	if err := nilPolicy.Check("x", nil, "public"); err != nil {
		t.Fatalf("nil policy denied: %v", err)
	}
}

func TestParsePolicyReportsEveryProblem(t *testing.T) {
	_, err := ParsePolicy([]byte(`{"device_classes": {"[": "public", "a": "no spaces"},
		"rules": [{"name": "r"}, {"name": "r", "deny_classes": ["x"]}, {"name": "", "deny_classes": ["x"]}]}`))
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{`pattern "["`, `class "no spaces"`, `needs deny_classes`, `used twice`, `name ""`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := ParsePolicy([]byte(`{"rules": [], "surprise": 1}`)); err == nil {
		t.Fatal("unknown field accepted")
	}
}

// FuzzParsePolicy: the policy file is operator input; parsing any bytes
// must not panic, and an accepted policy must evaluate.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"device_classes": {"kiosk-*": "public"}, "rules": [{"name": "r", "labels": ["a"], "deny_classes": ["public"]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			return
		}
		_ = p.Check("app", []string{"a"}, p.Class("kiosk-1"))
	})
}

func TestSummaryXML(t *testing.T) {
	doc, err := SummaryXML("h1", []*mwsv1.ElementSummary{
		{Name: "xray", Kind: mwsv1.ElementKind_ELEMENT_KIND_SERVER_OBJECT, ContentType: "image/jpeg", Size: 1310720, Adaptable: true},
		{Name: "notes", Kind: mwsv1.ElementKind_ELEMENT_KIND_APP_OBJECT, ContentType: "text/plain", Size: 51},
	})
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Handoff  string `xml:"handoff,attr"`
		Elements []struct {
			Name      string `xml:"name,attr"`
			Kind      string `xml:"kind,attr"`
			Size      int64  `xml:"size,attr"`
			Adaptable bool   `xml:"adaptable,attr"`
		} `xml:"element"`
	}
	if err := xml.Unmarshal([]byte(doc), &back); err != nil {
		t.Fatalf("%v:\n%s", err, doc)
	}
	if back.Handoff != "h1" || len(back.Elements) != 2 || back.Elements[0].Kind != "server-object" ||
		back.Elements[0].Size != 1310720 || !back.Elements[0].Adaptable || back.Elements[1].Kind != "application-object" {
		t.Fatalf("parsed %+v from\n%s", back, doc)
	}
}
