package castore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imashproject/imash/internal/pki"
)

// loadIssued loads what Issue wrote to disk, as a deployed MWS or device does.
func loadIssued(t *testing.T, s *Store, role pki.Role, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	_, p := mustIssue(t, s, role, name)
	cert, pool, err := pki.LoadKeyPair(p.Cert, p.Key, p.CA)
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	return cert, pool
}

// handshake runs a TLS handshake over an in-memory pipe and then one byte
// from server to client, so that a client certificate the server rejects
// after the client's side of a TLS 1.3 handshake has completed still shows
// up as a client error.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (serverErr, clientErr error, state tls.ConnectionState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, cc := net.Pipe()
	srv, cli := tls.Server(sc, serverCfg), tls.Client(cc, clientCfg)
	done := make(chan error, 1)
	// Closing the raw pipes, not the tls.Conns: tls.Conn.Close would wait
	// up to 5s to deliver close_notify to a peer no longer reading.
	go func() {
		defer sc.Close()
		if err := srv.HandshakeContext(ctx); err != nil {
			done <- err
			return
		}
		_, err := srv.Write([]byte{1})
		done <- err
	}()
	clientErr = cli.HandshakeContext(ctx)
	if clientErr == nil {
		state = cli.ConnectionState()
		_, clientErr = io.ReadFull(cli, make([]byte, 1))
	}
	cc.Close()
	return <-done, clientErr, state
}

func TestTLSHandshakeWithStoreCertificates(t *testing.T) {
	s := newStore(t)
	srvCert, pool := loadIssued(t, s, pki.RoleMWS, "mws-1")
	cliCert, _ := loadIssued(t, s, pki.RoleDevice, "phone")

	serverErr, clientErr, state := handshake(t, pki.ServerTLS(srvCert, pool), pki.ClientTLS(cliCert, pool, pki.RoleMWS))
	if serverErr != nil || clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", serverErr, clientErr)
	}
	if state.Version != tls.VersionTLS13 {
		t.Errorf("version %#x, want TLS 1.3", state.Version)
	}
	id, err := pki.IdentityFromCert(state.PeerCertificates[0])
	if err != nil || id.Role != pki.RoleMWS || id.Name != "mws-1" {
		t.Errorf("server identity %v, %v", id, err)
	}
}

func TestTLSHandshakeRejectsOtherCA(t *testing.T) {
	s, other := newStore(t), newStore(t) // same trust domain, different keys
	srvCert, pool := loadIssued(t, s, pki.RoleMWS, "mws-1")
	cliCert, _ := loadIssued(t, s, pki.RoleDevice, "phone")
	strangerCert, strangerPool := loadIssued(t, other, pki.RoleDevice, "phone")
	strangerSrv, _ := loadIssued(t, other, pki.RoleMWS, "mws-1")

	t.Run("client from another CA", func(t *testing.T) {
		serverErr, clientErr, _ := handshake(t, pki.ServerTLS(srvCert, pool), pki.ClientTLS(strangerCert, strangerPool, pki.RoleMWS))
		if serverErr == nil {
			t.Error("server accepted a client certificate from another CA")
		}
		if clientErr == nil {
			t.Error("client saw no failure")
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		// The server trusts both CAs, so only the client's check can fail.
		both := strangerPool.Clone()
		both.AddCert(s.CA().Cert)
		serverErr, clientErr, _ := handshake(t, pki.ServerTLS(strangerSrv, both), pki.ClientTLS(cliCert, pool, pki.RoleMWS))
		if clientErr == nil || !strings.Contains(clientErr.Error(), "not issued by the cluster CA") {
			t.Errorf("client error %v, want the server certificate rejected", clientErr)
		}
		if serverErr == nil {
			t.Error("server saw no failure")
		}
	})
}
