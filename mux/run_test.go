package mux_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imashproject/imash/internal/pki"
	"github.com/imashproject/imash/mux"
)

func TestRunReportsEveryProblem(t *testing.T) {
	var stderr bytes.Buffer
	err := mux.Run(context.Background(), []string{"--backend", "nope", "--backend", "x=1.2.3.4", "--max-chunk", "0", "--log-level", "loud"}, &stderr)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"NAME=HOST:PORT", `backend "x" address`, "--cert, --key and --ca are required", "--log-level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("imash.test", 0)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.Issue(pki.IssueRequest{Role: pki.RoleMux, Name: "mux-1"})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfgFile := write("mux.json", []byte(`{"backend": ["echo=127.0.0.1:9"], "listen": "127.0.0.1:0"}`))
	args := []string{"--config", cfgFile, "--cert", write("mux.pem", iss.CertPEM), "--key", write("mux-key.pem", iss.KeyPEM), "--ca", write("ca.pem", ca.CertPEM())}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs syncBuffer
	go func() { done <- mux.Run(ctx, args, &logs) }()
	pollUntil(t, "mux serving", func() bool { return strings.Contains(logs.String(), "mux serving") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
