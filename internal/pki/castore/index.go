package castore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/imashproject/imash/internal/pki"

	"github.com/imashproject/imash/internal/atomicfile"
)

// indexVersion is the version of index.json this package writes and reads.
const indexVersion = 1

// indexFile is index.json: every certificate the store ever issued, replaced
// ones included, so that the serials of certificates still in the field stay
// on record after a renewal.
type indexFile struct {
	Version     int           `json:"version"`
	TrustDomain string        `json:"trust_domain"`
	Entries     []indexRecord `json:"entries"`
}

type indexRecord struct {
	Serial      string    `json:"serial"`
	Identity    string    `json:"identity"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	DNSNames    []string  `json:"dns_names,omitempty"`
	IPAddresses []string  `json:"ip_addresses,omitempty"`
	IssuedAt    time.Time `json:"issued_at"`
	CertFile    string    `json:"cert_file"`
	KeyFile     string    `json:"key_file"`
	// Replaced is set when a later Reissue for the same identity overwrote
	// this certificate's files. The certificate stays valid until NotAfter.
	Replaced bool `json:"replaced,omitempty"`
}

func readIndex(path string) (*indexFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("castore: %s: %w", path, ErrNoStore)
	}
	if err != nil {
		return nil, fmt.Errorf("castore: %w", err)
	}
	var idx indexFile
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("castore: %s: %w", path, err)
	}
	if idx.Version != indexVersion {
		return nil, fmt.Errorf("castore: %s: version %d, want %d", path, idx.Version, indexVersion)
	}
	for i, r := range idx.Entries {
		if _, err := r.entry(); err != nil {
			return nil, fmt.Errorf("castore: %s: entry %d: %w", path, i, err)
		}
	}
	return &idx, nil
}

func writeIndex(path string, idx *indexFile) error {
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("castore: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("castore: write index: %w", err)
	}
	return nil
}

func newRecord(iss *pki.Issued, certFile, keyFile string, issuedAt time.Time) indexRecord {
	ips := make([]string, len(iss.Leaf.IPAddresses))
	for i, ip := range iss.Leaf.IPAddresses {
		ips[i] = ip.String()
	}
	if len(ips) == 0 {
		ips = nil
	}
	return indexRecord{
		Serial:      iss.Leaf.SerialNumber.Text(16),
		Identity:    iss.Identity.String(),
		NotBefore:   iss.Leaf.NotBefore.UTC(),
		NotAfter:    iss.Leaf.NotAfter.UTC(),
		DNSNames:    iss.Leaf.DNSNames,
		IPAddresses: ips,
		IssuedAt:    issuedAt.UTC(),
		CertFile:    certFile,
		KeyFile:     keyFile,
	}
}

func (r indexRecord) entry() (Entry, error) {
	u, err := url.Parse(r.Identity)
	if err != nil {
		return Entry{}, err
	}
	id, err := pki.ParseIdentity(u)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{
		Identity:  id,
		Serial:    r.Serial,
		NotBefore: r.NotBefore,
		NotAfter:  r.NotAfter,
		DNSNames:  r.DNSNames,
		IssuedAt:  r.IssuedAt,
		CertFile:  r.CertFile,
		KeyFile:   r.KeyFile,
	}
	for _, s := range r.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return Entry{}, fmt.Errorf("ip address %q is not an IP address", s)
		}
		e.IPAddresses = append(e.IPAddresses, ip)
	}
	return e, nil
}
