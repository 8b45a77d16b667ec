package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// CA is a cluster certificate authority: it issues the certificates of every
// MWS, mux, device and operator of one trust domain.
type CA struct {
	Cert        *x509.Certificate
	Key         crypto.Signer
	TrustDomain string
	certPEM     []byte
}

// DefaultCAValidity is how long a new CA certificate is valid.
const DefaultCAValidity = 10 * 365 * 24 * time.Hour

// DefaultLeafValidity is how long an issued certificate is valid when the
// request does not say.
const DefaultLeafValidity = 365 * 24 * time.Hour

// NewCA creates a self-signed CA for trustDomain (ECDSA P-256). A zero
// validity means DefaultCAValidity.
func NewCA(trustDomain string, validity time.Duration) (*CA, error) {
	if !nameRE.MatchString(trustDomain) {
		return nil, fmt.Errorf("pki: trust domain %q: want 1-128 of [A-Za-z0-9._-]", trustDomain)
	}
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "imash cluster CA " + trustDomain, Organization: []string{"imash"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, TrustDomain: trustDomain, certPEM: pemBlock("CERTIFICATE", der)}, nil
}

// LoadCA loads a CA from its PEM certificate and PEM (PKCS#8) private key.
// The trust domain is read from the certificate's subject.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("pki: CA certificate is not a CA")
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	const prefix = "imash cluster CA "
	cn := cert.Subject.CommonName
	if len(cn) <= len(prefix) || cn[:len(prefix)] != prefix {
		return nil, fmt.Errorf("pki: CA certificate subject %q is not an imash cluster CA", cn)
	}
	return &CA{Cert: cert, Key: key, TrustDomain: cn[len(prefix):], certPEM: pemBlock("CERTIFICATE", cert.Raw)}, nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// KeyPEM returns the CA private key in PEM (PKCS#8) form.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueRequest describes a certificate to issue.
type IssueRequest struct {
	Role Role
	Name string
	// DNSNames and IPAddresses are added as SANs for servers that are also
	// reached by host name (operators' tooling, browsers). Identity checks in
	// imash use the URI SAN only.
	DNSNames    []string
	IPAddresses []net.IP
	// Validity is how long the certificate is valid; zero means
	// DefaultLeafValidity.
	Validity time.Duration
}

// Issued is an issued certificate with its private key.
type Issued struct {
	Identity Identity
	Leaf     *x509.Certificate
	CertPEM  []byte
	KeyPEM   []byte
	// TLS is ready to use in a tls.Config (chain: leaf only; peers trust
	// the CA directly).
	TLS tls.Certificate
}

// Issue creates a key pair and a certificate for the requested identity.
// Every certificate may act both as TLS client and server: an MWS is a
// server to devices and a client to the mux and to its peers.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	id := Identity{TrustDomain: ca.TrustDomain, Role: req.Role, Name: req.Name}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("pki: issue: %w", err)
	}
	validity := req.Validity
	if validity <= 0 {
		validity = DefaultLeafValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: string(req.Role) + "/" + req.Name, Organization: []string{"imash"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		Identity: id,
		Leaf:     leaf,
		CertPEM:  pemBlock("CERTIFICATE", der),
		KeyPEM:   kp,
		TLS:      tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
	}, nil
}

// ParseCertPEM parses the first CERTIFICATE block of data.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ParseKeyPEM parses a PKCS#8, EC or PKCS#1 private key PEM block.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	return s, nil
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}
