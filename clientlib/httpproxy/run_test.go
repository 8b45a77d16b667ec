package httpproxy_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imashproject/imash/clientlib/httpproxy"
	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/mws"
	"github.com/imashproject/imash/testbed/cluster"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// deviceFiles writes the cluster CA and a device certificate issued by it
// as an operator would hand them out.
func deviceFiles(t *testing.T, cl *cluster.Cluster, dir, name string) (cert, key, ca string) {
	t.Helper()
	iss, err := cl.CA.Issue(pki.IssueRequest{Role: pki.RoleDevice, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"), filepath.Join(dir, "ca.pem")
	for path, data := range map[string][]byte{cert: iss.CertPEM, key: iss.KeyPEM, ca: cl.CA.CertPEM()} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

func TestRunUsage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr []string // nil: no error wanted
		wantOut string
	}{
		{name: "help", args: []string{"-h"}, wantOut: "http_proxy=http://127.0.0.1:3128"},
		{name: "bad flag", args: []string{"--timeout", "soon"}, wantErr: []string{"timeout"}},
		{name: "stray argument", args: []string{"now"}, wantErr: []string{`unexpected argument "now"`}},
		{name: "nothing given", args: []string{},
			wantErr: []string{"--cert is required", "--key is required", "--ca is required", "--user is required", httpproxy.PasswordEnv}},
		{name: "every problem at once", args: []string{"--cert", "/nonexistent/c.pem", "--key", "k", "--ca", "ca", "--user", "alice",
			"--password-file", empty, "--mws", "nohost", "--listen", "x", "--app", "", "--timeout", "-1s", "--max-header-bytes", "10",
			"--log-format", "xml"},
			wantErr: []string{"load key pair", "first line is empty", `--mws "nohost"`, `--listen "x"`, "--app", "--timeout", "--max-header-bytes", "--log-format"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(httpproxy.PasswordEnv, "")
			var out, errOut lockedBuffer
			err := httpproxy.Run(t.Context(), tt.args, &out, &errOut)
			if tt.wantErr == nil {
				if err != nil || !strings.Contains(out.String(), tt.wantOut) {
					t.Fatalf("err %v; stdout lacks %q:\n%s", err, tt.wantOut, out.String())
				}
				return
			}
			if !errors.Is(err, httpproxy.ErrUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestRunServesUntilCancelled runs imash-proxy's Run against a cluster:
// it logs in with a password file, serves a proxy client, and on cancel
// closes its session and returns nil.
func TestRunServesUntilCancelled(t *testing.T) {
	e := newEnv(t, httpproxy.Options{})
	dir := t.TempDir()
	cert, key, ca := deviceFiles(t, e.cl, dir, "kiosk-7")
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "proxy.addr")
	before := e.cl.MWS[0].Stats().Sessions
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- httpproxy.Run(ctx, []string{"--mws", e.cl.MWSAddrs[0], "--cert", cert, "--key", key, "--ca", ca,
			"--user", "alice", "--password-file", pwFile, "--listen", "127.0.0.1:0", "--ready-file", ready, "--app", "curl"},
			&lockedBuffer{}, &stderr)
	}()
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == ""; {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v\nstderr: %s", err, &stderr)
		default:
		}
		if b, err := os.ReadFile(ready); err == nil {
			addr = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatalf("no ready file after 30s\nstderr: %s", &stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.cl.MWS[0].Stats().Sessions; n != before+1 {
		t.Fatalf("MWS holds %d sessions, want %d", n, before+1)
	}
	pu, _ := url.Parse("http://" + addr)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: time.Minute}
	defer hc.CloseIdleConnections()
	img := e.set.Images()[0]
	res, body := get(t, hc, http.MethodGet, "http://images/images/"+img.Name, nil)
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, img.Bytes) {
		t.Fatalf("status %d, %d bytes\nstderr: %s", res.StatusCode, len(body), &stderr)
	}
	hc.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel\nstderr: %s", err, &stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30s after cancel")
	}
	if n := e.cl.MWS[0].Stats().Sessions; n != before {
		t.Fatalf("MWS holds %d sessions after the proxy stopped, want %d", n, before)
	}
	if _, err := os.Stat(ready); !os.IsNotExist(err) {
		t.Errorf("ready file still there after shutdown (stat: %v)", err)
	}
}

func TestRunPasswordFromEnvironment(t *testing.T) {
	e := newEnv(t, httpproxy.Options{})
	dir := t.TempDir()
	cert, key, ca := deviceFiles(t, e.cl, dir, "pda-2")
	common := []string{"--mws", e.cl.MWSAddrs[0], "--cert", cert, "--key", key, "--ca", ca, "--user", "alice", "--listen", "127.0.0.1:0"}
	t.Run("wrong password", func(t *testing.T) {
		t.Setenv(httpproxy.PasswordEnv, "wrong")
		err := httpproxy.Run(t.Context(), common, &lockedBuffer{}, &lockedBuffer{})
		if err == nil || errors.Is(err, httpproxy.ErrUsage) || !strings.Contains(err.Error(), "log in as alice") {
			t.Fatalf("err = %v, want a login failure", err)
		}
	})
	t.Run("right password", func(t *testing.T) {
		t.Setenv(httpproxy.PasswordEnv, "secret")
		ready := filepath.Join(dir, "addr")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- httpproxy.Run(ctx, append(common, "--ready-file", ready), &lockedBuffer{}, &lockedBuffer{})
		}()
		deadline := time.Now().Add(30 * time.Second)
		for _, err := os.Stat(ready); err != nil; _, err = os.Stat(ready) {
			select {
			case err := <-done:
				t.Fatalf("Run returned early: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("not serving after 30s: %v", <-done)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}

type oneUser struct{ name, password string }

func (u oneUser) Verify(name, password string) error {
	if name != u.name || password != u.password {
		return errors.New("bad credentials")
	}
	return nil
}

// TestRunWaitsForTheMWS starts the proxy before its MWS listens, as a
// script or an init system starting both at once does.
func TestRunWaitsForTheMWS(t *testing.T) {
	e := newEnv(t, httpproxy.Options{})
	dir := t.TempDir()
	cert, key, ca := deviceFiles(t, e.cl, dir, "pda-3")
	addr := closedAddr(t)
	ready := filepath.Join(dir, "addr")
	t.Setenv(httpproxy.PasswordEnv, "pw")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- httpproxy.Run(ctx, []string{"--mws", addr, "--cert", cert, "--key", key, "--ca", ca, "--user", "carol",
			"--listen", "127.0.0.1:0", "--ready-file", ready}, &lockedBuffer{}, &stderr)
	}()
	// Start the MWS once the proxy has tried and failed at least once.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), "MWS not reachable yet"); {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never reported an unreachable MWS\nstderr: %s", &stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	iss, err := e.cl.CA.Issue(pki.IssueRequest{Role: pki.RoleMWS, Name: "mws-late"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mws.NewDefaultConfig()
	cfg.Name = "mws-late"
	cfg.TLS = pki.ServerTLS(iss.TLS, e.cl.CA.Pool())
	cfg.MuxAddr, cfg.MuxTLS = e.cl.MuxAddr, pki.ClientTLS(iss.TLS, e.cl.CA.Pool(), pki.RoleMux)
	cfg.HTTPBackends = []string{"images"}
	cfg.Users = oneUser{"carol", "pw"}
	srv, err := mws.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Close(context.Background())
		<-served
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned %v\nstderr: %s", err, &stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not serving 30s after the MWS started\nstderr: %s", &stderr)
		}
	}
	if n := srv.Stats().Sessions; n != 1 {
		t.Fatalf("late MWS holds %d sessions, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
