// Package pki is imash's certificate authority and identity layer.
//
// Every party in an imash cluster — middleware servers (MWS), muxes, devices
// and operators — holds an X.509 certificate issued by the cluster CA. Its
// identity is a role and a name, carried as a SPIFFE-style URI SAN:
//
//	spiffe://<trust-domain>/<role>/<name>
//
// TLS 1.3 with mutual authentication is used on every hop. The chain is
// verified against the cluster CA; which roles may call which service is
// checked after the handshake (see RequireRoles) so that a caller with a valid
// certificate of the wrong role gets a clear PermissionDenied.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Role is what a certificate holder is allowed to be in the cluster.
type Role string

// The roles of an imash cluster.
const (
	RoleMWS      Role = "mws"
	RoleMux      Role = "mux"
	RoleDevice   Role = "device"
	RoleOperator Role = "operator"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleMWS, RoleMux, RoleDevice, RoleOperator:
		return true
	}
	return false
}

// Identity is who a certificate says its holder is.
type Identity struct {
	TrustDomain string
	Role        Role
	Name        string
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate checks that every part of the identity is well formed.
func (id Identity) Validate() error {
	var errs []error
	if !nameRE.MatchString(id.TrustDomain) {
		errs = append(errs, fmt.Errorf("trust domain %q: want 1-128 of [A-Za-z0-9._-]", id.TrustDomain))
	}
	if !id.Role.Valid() {
		errs = append(errs, fmt.Errorf("role %q: want one of mws, mux, device, operator", id.Role))
	}
	if !nameRE.MatchString(id.Name) {
		errs = append(errs, fmt.Errorf("name %q: want 1-128 of [A-Za-z0-9._-]", id.Name))
	}
	return errors.Join(errs...)
}

// URI is the identity as a SPIFFE-style URI.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/" + string(id.Role) + "/" + id.Name}
}

// String returns the URI form.
func (id Identity) String() string { return id.URI().String() }

// ParseIdentity parses a spiffe://<trust-domain>/<role>/<name> URI.
func ParseIdentity(u *url.URL) (Identity, error) {
	if u == nil || u.Scheme != "spiffe" {
		return Identity{}, fmt.Errorf("pki: identity URI %v: scheme is not spiffe", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 2 {
		return Identity{}, fmt.Errorf("pki: identity URI %v: path is not /<role>/<name>", u)
	}
	id := Identity{TrustDomain: u.Host, Role: Role(parts[0]), Name: parts[1]}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("pki: identity URI %v: %w", u, err)
	}
	return id, nil
}

// IdentityFromCert extracts the single imash identity of a certificate.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := ParseIdentity(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, errors.New("pki: certificate carries no spiffe identity")
	case 1:
		return found[0], nil
	default:
		return Identity{}, errors.New("pki: certificate carries more than one spiffe identity")
	}
}
