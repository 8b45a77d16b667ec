package pki

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestParseIdentity(t *testing.T) {
	for _, tc := range []struct {
		name, uri string
		want      Identity
		err       string
	}{
		{name: "mws", uri: "spiffe://imash.test/mws/mws-1", want: Identity{"imash.test", RoleMWS, "mws-1"}},
		{name: "device", uri: "spiffe://h/device/pda_2.x", want: Identity{"h", RoleDevice, "pda_2.x"}},
		{name: "wrong scheme", uri: "https://h/mws/a", err: "scheme"},
		{name: "short path", uri: "spiffe://h/mws", err: "path"},
		{name: "long path", uri: "spiffe://h/mws/a/b", err: "path"},
		{name: "unknown role", uri: "spiffe://h/admin/a", err: "role"},
		{name: "bad name", uri: "spiffe://h/mws/..", err: "name"},
		{name: "empty domain", uri: "spiffe:///mws/a", err: "trust domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseIdentity(u)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			if back, err := ParseIdentity(got.URI()); err != nil || back != got {
				t.Fatalf("round trip: %v, %v", back, err)
			}
		})
	}
}

func TestIssueAndVerify(t *testing.T) {
	ca, err := NewCA("imash.test", 0)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.Issue(IssueRequest{Role: RoleDevice, Name: "pda-1"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityFromCert(iss.Leaf)
	if err != nil || id != (Identity{"imash.test", RoleDevice, "pda-1"}) {
		t.Fatalf("identity %v, %v", id, err)
	}
	if _, err := verifyPeer([][]byte{iss.Leaf.Raw}, ca.Pool(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("verify: %v", err)
	}
	other, _ := NewCA("imash.test", 0)
	if _, err := verifyPeer([][]byte{iss.Leaf.Raw}, other.Pool(), x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("a certificate of another CA verified")
	}
	if _, err := ca.Issue(IssueRequest{Role: "root", Name: "x"}); err == nil {
		t.Fatal("issued a certificate for an unknown role")
	}
	certPEM := ca.CertPEM()
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := LoadCA(certPEM, keyPEM)
	if err != nil || back.TrustDomain != "imash.test" {
		t.Fatalf("LoadCA: %v, %v", back, err)
	}
}

// FuzzParseIdentity: identities come from peers' certificates; parsing any
// URI must not panic, and an accepted identity must round-trip.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"spiffe://imash.test/mws/mws-1", "spiffe://h/device/x", "spiffe://h//", "spiffe://%41/mws/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := ParseIdentity(u)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted invalid identity %v: %v", id, err)
		}
		back, err := ParseIdentity(id.URI())
		if err != nil || back != id {
			t.Fatalf("round trip of %v: %v, %v", id, back, err)
		}
	})
}
