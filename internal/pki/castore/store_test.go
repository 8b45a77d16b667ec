package castore

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/imashproject/imash/internal/pki"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Init(filepath.Join(t.TempDir(), "ca"), "example.org", 0)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return s
}

func mustIssue(t *testing.T, s *Store, role pki.Role, name string) (*pki.Issued, Paths) {
	t.Helper()
	iss, p, err := s.Issue(pki.IssueRequest{Role: role, Name: name})
	if err != nil {
		t.Fatalf("Issue %s/%s: %v", role, name, err)
	}
	return iss, p
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}

func TestInitIssueListRoundTrip(t *testing.T) {
	s := newStore(t)
	wantMode(t, filepath.Join(s.Dir(), CAKeyFile), 0o600)

	iss, paths, err := s.Issue(pki.IssueRequest{
		Role: pki.RoleMWS, Name: "mws-1",
		DNSNames: []string{"mws1.example.org"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		Validity: 48 * time.Hour,
	})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if want := filepath.Join(s.Dir(), "issued", "mws-mws-1.pem"); paths.Cert != want {
		t.Errorf("cert path %q, want %q", paths.Cert, want)
	}
	if want := filepath.Join(s.Dir(), "issued", "mws-mws-1-key.pem"); paths.Key != want {
		t.Errorf("key path %q, want %q", paths.Key, want)
	}
	wantMode(t, paths.Key, 0o600)
	mustIssue(t, s, pki.RoleDevice, "phone")
	mustIssue(t, s, pki.RoleDevice, "laptop")

	// The files on disk, not the in-memory result, are what operators deploy.
	certPEM, err := os.ReadFile(paths.Cert)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(leaf)
	if err != nil {
		t.Fatalf("IdentityFromCert: %v", err)
	}
	if want := (pki.Identity{TrustDomain: "example.org", Role: pki.RoleMWS, Name: "mws-1"}); id != want {
		t.Errorf("identity %v, want %v", id, want)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.CA().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("issued certificate does not verify against the store's CA: %v", err)
	}
	if _, _, err := pki.LoadKeyPair(paths.Cert, paths.Key, paths.CA); err != nil {
		t.Errorf("LoadKeyPair of the written files: %v", err)
	}

	entries, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, string(e.Identity.Role)+"/"+e.Identity.Name)
	}
	if want := []string{"device/laptop", "device/phone", "mws/mws-1"}; !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	e := entries[2]
	if e.Serial != iss.Leaf.SerialNumber.Text(16) {
		t.Errorf("serial %q, want %q", e.Serial, iss.Leaf.SerialNumber.Text(16))
	}
	if !e.NotAfter.Equal(iss.Leaf.NotAfter) || !e.NotBefore.Equal(iss.Leaf.NotBefore) {
		t.Errorf("validity %v..%v, want %v..%v", e.NotBefore, e.NotAfter, iss.Leaf.NotBefore, iss.Leaf.NotAfter)
	}
	if !slices.Equal(e.DNSNames, []string{"mws1.example.org"}) || len(e.IPAddresses) != 1 || !e.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("SANs %v %v", e.DNSNames, e.IPAddresses)
	}
	if e.IssuedAt.IsZero() || e.CertFile != "issued/mws-mws-1.pem" || e.KeyFile != "issued/mws-mws-1-key.pem" {
		t.Errorf("entry %+v", e)
	}
}

func TestReopenAndIssueAgain(t *testing.T) {
	s := newStore(t)
	first, _ := mustIssue(t, s, pki.RoleMux, "mux")

	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !s2.CA().Cert.Equal(s.CA().Cert) || s2.CA().TrustDomain != "example.org" {
		t.Fatal("reopened store has a different CA")
	}
	second, _ := mustIssue(t, s2, pki.RoleOperator, "alice")
	for _, iss := range []*pki.Issued{first, second} {
		if _, err := iss.Leaf.Verify(x509.VerifyOptions{Roots: s.CA().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s does not verify against the original CA: %v", iss.Identity, err)
		}
	}
	entries, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("List after reopen: %d entries, want 2", len(entries))
	}
}

func TestIssueDuplicateRefusedReissueReplaces(t *testing.T) {
	s := newStore(t)
	first, paths := mustIssue(t, s, pki.RoleDevice, "phone")

	_, _, err := s.Issue(pki.IssueRequest{Role: pki.RoleDevice, Name: "phone"})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate Issue: err %v, want ErrExists", err)
	}
	onDisk, err := os.ReadFile(paths.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(first.CertPEM) {
		t.Fatal("a refused Issue changed the certificate file")
	}

	second, _, err := s.Reissue(pki.IssueRequest{Role: pki.RoleDevice, Name: "phone"})
	if err != nil {
		t.Fatalf("Reissue: %v", err)
	}
	onDisk, _ = os.ReadFile(paths.Cert)
	if string(onDisk) != string(second.CertPEM) {
		t.Error("Reissue did not replace the certificate file")
	}
	wantMode(t, paths.Key, 0o600)
	entries, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Serial != second.Leaf.SerialNumber.Text(16) {
		t.Errorf("List after Reissue = %+v, want only the new serial", entries)
	}
	// The replaced serial stays on record.
	raw, err := os.ReadFile(filepath.Join(s.Dir(), IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var idx indexFile
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Entries) != 2 || !idx.Entries[0].Replaced || idx.Entries[0].Serial != first.Leaf.SerialNumber.Text(16) {
		t.Errorf("index entries %+v, want the first marked replaced", idx.Entries)
	}
}

func TestIssueRefusesFilesNotInIndex(t *testing.T) {
	s := newStore(t)
	if err := os.WriteFile(filepath.Join(s.Dir(), "issued", "mws-a.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Issue(pki.IssueRequest{Role: pki.RoleMWS, Name: "a"}); !errors.Is(err, ErrExists) {
		t.Errorf("err %v, want ErrExists", err)
	}
}

func TestIssueBadRequests(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		name string
		req  pki.IssueRequest
	}{
		{name: "unknown role", req: pki.IssueRequest{Role: "admin", Name: "a"}},
		{name: "empty name", req: pki.IssueRequest{Role: pki.RoleMWS}},
		{name: "path in name", req: pki.IssueRequest{Role: pki.RoleMWS, Name: "../x"}},
		{name: "name clashes with key files", req: pki.IssueRequest{Role: pki.RoleMWS, Name: "a-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.Issue(tt.req); err == nil {
				t.Error("Issue succeeded")
			}
		})
	}
	entries, err := s.List()
	if err != nil || len(entries) != 0 {
		t.Errorf("List = %v, %v; want nothing issued", entries, err)
	}
}

func TestInitRefusesExistingCA(t *testing.T) {
	s := newStore(t)
	before, _ := os.ReadFile(filepath.Join(s.Dir(), CAKeyFile))
	if _, err := Init(s.Dir(), "other.org", 0); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init: err %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(filepath.Join(s.Dir(), CAKeyFile))
	if string(before) != string(after) {
		t.Error("second Init changed the CA key")
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("empty directory", func(t *testing.T) {
		if _, err := Open(t.TempDir()); !errors.Is(err, ErrNoStore) {
			t.Errorf("err %v, want ErrNoStore", err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		if _, err := Open(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, ErrNoStore) {
			t.Errorf("err %v, want ErrNoStore", err)
		}
	})
	t.Run("key readable by others", func(t *testing.T) {
		s := newStore(t)
		if err := os.Chmod(filepath.Join(s.Dir(), CAKeyFile), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(s.Dir()); err == nil {
			t.Error("Open accepted a world-readable CA key")
		}
	})
	t.Run("key of another CA", func(t *testing.T) {
		s, other := newStore(t), newStore(t)
		key, _ := os.ReadFile(filepath.Join(other.Dir(), CAKeyFile))
		if err := os.WriteFile(filepath.Join(s.Dir(), CAKeyFile), key, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(s.Dir()); err == nil {
			t.Error("Open accepted a key that does not match the CA certificate")
		}
	})
	t.Run("corrupt index", func(t *testing.T) {
		s := newStore(t)
		if err := os.WriteFile(filepath.Join(s.Dir(), IndexFile), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(s.Dir()); err == nil {
			t.Error("Open accepted a corrupt index")
		}
	})
}

func TestNoTemporaryFilesLeft(t *testing.T) {
	s := newStore(t)
	mustIssue(t, s, pki.RoleMWS, "a")
	if _, _, err := s.Reissue(pki.IssueRequest{Role: pki.RoleMWS, Name: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{s.Dir(), filepath.Join(s.Dir(), IssuedDir)} {
		des, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range des {
			if de.Name()[0] == '.' {
				t.Errorf("temporary file %s left in %s", de.Name(), dir)
			}
		}
	}
}
