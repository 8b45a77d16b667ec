package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// verifyPeer checks a peer's chain against roots for the given key usage and
// returns its identity. Host names are not checked: identities are URIs.
func verifyPeer(rawCerts [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage) (Identity, error) {
	if len(rawCerts) == 0 {
		return Identity{}, errors.New("pki: peer presented no certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return Identity{}, fmt.Errorf("pki: peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return Identity{}, fmt.Errorf("pki: peer certificate not issued by the cluster CA: %w", err)
	}
	return IdentityFromCert(certs[0])
}

// ServerTLS returns a TLS 1.3 server config that requires a client
// certificate issued by roots. Which client roles may do what is checked
// per service (RequireRoles), so that a wrong role gets PermissionDenied
// rather than an opaque handshake failure.
func ServerTLS(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := verifyPeer(raw, roots, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientTLS returns a TLS 1.3 client config presenting cert and accepting
// only a server whose certificate is issued by roots and whose identity has
// one of serverRoles.
func ClientTLS(cert tls.Certificate, roots *x509.CertPool, serverRoles ...Role) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Host names are not identities here; the chain and the URI SAN are
		// verified below instead.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifyPeer(raw, roots, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if !slices.Contains(serverRoles, id.Role) {
				return fmt.Errorf("pki: server %s has role %q, want one of %v", id, id.Role, serverRoles)
			}
			return nil
		},
	}
}

// LoadKeyPair loads a certificate and key from PEM files, and the CA pool
// from a PEM file, as an operator deploys them.
func LoadKeyPair(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pki: load key pair %s, %s: %w", certFile, keyFile, err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pki: load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("pki: load CA %s: no certificate in file", caFile)
	}
	return cert, pool, nil
}
