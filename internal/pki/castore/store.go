// Package castore keeps an imash cluster CA on disk for operators, and
// implements the "ca" command line that creates it and issues certificates.
//
// A store is a directory:
//
//	ca.pem                       the CA certificate (deploy it everywhere as the trust root)
//	ca-key.pem                   the CA private key (mode 0600; never leaves this directory)
//	index.json                   every certificate issued, replaced ones included
//	issued/<role>-<name>.pem     an issued certificate
//	issued/<role>-<name>-key.pem its private key (mode 0600)
//
// Every file is written atomically (temporary file, sync, rename), so a
// crash never leaves a truncated key or index. The store serialises its own
// writers, but two processes issuing into one store at the same moment may
// lose an index entry: run one operator command at a time.
package castore

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imashproject/imash/internal/pki"

	"github.com/imashproject/imash/internal/atomicfile"
)

// Names of the files and directories of a store.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
	IndexFile  = "index.json"
	IssuedDir  = "issued"
)

// Store is an on-disk cluster CA. It is safe for concurrent use.
type Store struct {
	dir string
	ca  *pki.CA
	// mu serialises the read-modify-write of the index by Issue.
	mu sync.Mutex
}

// Paths are the files an Issue wrote, joined with the store's directory:
// what an operator copies to the MWS, mux or device.
type Paths struct {
	CA   string // the cluster CA certificate (the trust root)
	Cert string // the issued certificate
	Key  string // its private key (mode 0600)
}

// Entry is one issued certificate as recorded in the index.
type Entry struct {
	Identity    pki.Identity
	Serial      string // lower-case hexadecimal
	NotBefore   time.Time
	NotAfter    time.Time
	DNSNames    []string
	IPAddresses []net.IP
	IssuedAt    time.Time
	// CertFile and KeyFile are relative to the store's directory,
	// slash-separated.
	CertFile string
	KeyFile  string
}

// Init creates a new CA for trustDomain in dir, creating dir (mode 0700) if
// needed. A zero validity means pki.DefaultCAValidity. It refuses, with an
// error matching ErrExists, to touch a directory that already holds a CA.
func Init(dir, trustDomain string, validity time.Duration) (*Store, error) {
	if dir == "" {
		return nil, errors.New("castore: init: no directory given")
	}
	for _, name := range []string{CACertFile, CAKeyFile, IndexFile} {
		ok, err := exists(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if ok {
			return nil, fmt.Errorf("castore: init: %s already holds a CA (%s): %w", dir, name, ErrExists)
		}
	}
	ca, err := pki.NewCA(trustDomain, validity)
	if err != nil {
		return nil, fmt.Errorf("castore: init: %w", err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("castore: init: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, IssuedDir), 0o700); err != nil {
		return nil, fmt.Errorf("castore: init: %w", err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	if err := atomicfile.WriteExclusive(keyPath, keyPEM, 0o600); err != nil {
		return nil, initWriteErr(dir, err)
	}
	if err := atomicfile.WriteExclusive(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644); err != nil {
		os.Remove(keyPath) // ours: created just above
		return nil, initWriteErr(dir, err)
	}
	idx := &indexFile{Version: indexVersion, TrustDomain: ca.TrustDomain, Entries: []indexRecord{}}
	if err := writeIndex(filepath.Join(dir, IndexFile), idx); err != nil {
		return nil, err
	}
	return &Store{dir: dir, ca: ca}, nil
}

func initWriteErr(dir string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("castore: init: %s already holds a CA: %w", dir, ErrExists)
	}
	return fmt.Errorf("castore: init: %w", err)
}

// Open loads the store in dir. It fails with an error matching ErrNoStore
// if dir holds no store, and refuses a CA key readable by group or others
// (as ssh does) or one that does not match the CA certificate.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("castore: open: no directory given")
	}
	certPEM, err := readStoreFile(dir, CACertFile)
	if err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	keyPEM, err := readStoreFile(dir, CAKeyFile)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(keyPath)
		if err != nil {
			return nil, fmt.Errorf("castore: open: %w", err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return nil, fmt.Errorf("castore: open: %s is accessible by group or others (mode %#o); run chmod 600 on it", keyPath, perm)
		}
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("castore: open %s: %w", dir, err)
	}
	pub, ok := ca.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.Cert.PublicKey) {
		return nil, fmt.Errorf("castore: open %s: %s does not match %s", dir, CAKeyFile, CACertFile)
	}
	idx, err := readIndex(filepath.Join(dir, IndexFile))
	if err != nil {
		return nil, err
	}
	if idx.TrustDomain != ca.TrustDomain {
		return nil, fmt.Errorf("castore: open %s: index is for trust domain %q, CA for %q", dir, idx.TrustDomain, ca.TrustDomain)
	}
	return &Store{dir: dir, ca: ca}, nil
}

func readStoreFile(dir, name string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("castore: open %s: %s missing: %w", dir, name, ErrNoStore)
	}
	if err != nil {
		return nil, fmt.Errorf("castore: open: %w", err)
	}
	return data, nil
}

// Dir returns the store's directory as given to Init or Open.
func (s *Store) Dir() string { return s.dir }

// CA returns the store's certificate authority. Certificates issued with it
// directly are not recorded in the index; use Issue for that.
func (s *Store) CA() *pki.CA { return s.ca }

// Issue issues a certificate for req, writes it and its key under issued/
// and records it in the index. It refuses, with an error matching ErrExists,
// an identity (role and name) that already has a certificate in the store;
// use Reissue to replace one.
func (s *Store) Issue(req pki.IssueRequest) (*pki.Issued, Paths, error) {
	return s.issue(req, false)
}

// Reissue is Issue that replaces the certificate and key files of an
// identity that already has them (renewal, lost key). The replaced
// certificate stays in the index, marked replaced; it is not revoked and
// remains valid until it expires.
func (s *Store) Reissue(req pki.IssueRequest) (*pki.Issued, Paths, error) {
	return s.issue(req, true)
}

func (s *Store) issue(req pki.IssueRequest, replace bool) (*pki.Issued, Paths, error) {
	id := pki.Identity{TrustDomain: s.ca.TrustDomain, Role: req.Role, Name: req.Name}
	if err := id.Validate(); err != nil {
		return nil, Paths{}, fmt.Errorf("castore: issue: %w", err)
	}
	if strings.HasSuffix(id.Name, "-key") {
		// <role>-<name>-key.pem would then also be the certificate file of
		// <name> minus "-key"'s key: one could overwrite the other.
		return nil, Paths{}, fmt.Errorf("castore: issue: name %q ends in -key, which clashes with key file names", id.Name)
	}
	if now := time.Now(); now.After(s.ca.Cert.NotAfter) {
		return nil, Paths{}, fmt.Errorf("castore: issue: the CA expired at %s", s.ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	idxPath := filepath.Join(s.dir, IndexFile)
	// Re-read: another process may have issued since Open.
	idx, err := readIndex(idxPath)
	if err != nil {
		return nil, Paths{}, err
	}
	base := string(id.Role) + "-" + id.Name
	certRel := IssuedDir + "/" + base + ".pem"
	keyRel := IssuedDir + "/" + base + "-key.pem"
	paths := Paths{
		CA:   filepath.Join(s.dir, CACertFile),
		Cert: filepath.Join(s.dir, filepath.FromSlash(certRel)),
		Key:  filepath.Join(s.dir, filepath.FromSlash(keyRel)),
	}
	if !replace {
		uri := id.String()
		if slices.ContainsFunc(idx.Entries, func(r indexRecord) bool { return r.Identity == uri && !r.Replaced }) {
			return nil, Paths{}, fmt.Errorf("castore: issue: %s/%s already has a certificate (%s): %w", id.Role, id.Name, certRel, ErrExists)
		}
		for _, p := range []string{paths.Cert, paths.Key} {
			ok, err := exists(p)
			if err != nil {
				return nil, Paths{}, err
			}
			if ok {
				return nil, Paths{}, fmt.Errorf("castore: issue: %s exists but is not in the index: %w", p, ErrExists)
			}
		}
	}

	iss, err := s.ca.Issue(req)
	if err != nil {
		return nil, Paths{}, fmt.Errorf("castore: issue: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, IssuedDir), 0o700); err != nil {
		return nil, Paths{}, fmt.Errorf("castore: issue: %w", err)
	}
	// Key before certificate: a crash in between leaves a key without a
	// certificate, never a new certificate beside an old key.
	if err := atomicfile.Write(paths.Key, iss.KeyPEM, 0o600); err != nil {
		return nil, Paths{}, fmt.Errorf("castore: issue: %w", err)
	}
	if err := atomicfile.Write(paths.Cert, iss.CertPEM, 0o644); err != nil {
		return nil, Paths{}, fmt.Errorf("castore: issue: %w", err)
	}
	uri := id.String()
	for i := range idx.Entries {
		if idx.Entries[i].Identity == uri {
			idx.Entries[i].Replaced = true
		}
	}
	idx.Entries = append(idx.Entries, newRecord(iss, certRel, keyRel, time.Now()))
	if err := writeIndex(idxPath, idx); err != nil {
		return nil, Paths{}, err
	}
	return iss, paths, nil
}

// List returns the current certificate of every identity in the store
// (replaced ones are left out), sorted by role and then name.
func (s *Store) List() ([]Entry, error) {
	idx, err := readIndex(filepath.Join(s.dir, IndexFile))
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, r := range idx.Entries {
		if r.Replaced {
			continue
		}
		e, err := r.entry()
		if err != nil {
			return nil, fmt.Errorf("castore: list: %w", err)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := strings.Compare(string(a.Identity.Role), string(b.Identity.Role)); c != 0 {
			return c
		}
		return strings.Compare(a.Identity.Name, b.Identity.Name)
	})
	return out, nil
}
