package httpproxy_test

import (
	"bytes"
	"image"
	_ "image/jpeg"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imashproject/imash/clientlib/httpproxy"
	"github.com/imashproject/imash/testbed/legacy"
)

// TestCurlThroughProxy runs the real curl, an unmodified program, through
// the proxy: once with -x, once with the http_proxy environment variable.
func TestCurlThroughProxy(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (apt-get install curl); this test runs the real curl binary through the proxy")
	}
	e := newEnv(t, httpproxy.Options{})
	img := e.set.Images()[3]
	path := "/images/" + img.Name
	_, direct := get(t, http.DefaultClient, http.MethodGet, e.hs.URL(path), nil)

	dir := t.TempDir()
	tests := []struct {
		name      string
		args      []string
		env       []string
		wantCache string
	}{
		{name: "-x", args: []string{"-x", e.proxy.URL}, wantCache: "MISS"},
		{name: "http_proxy", env: []string{"http_proxy=" + e.proxy.URL}, wantCache: "HIT"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, tt.name+".jpg")
			headers := filepath.Join(dir, tt.name+".headers")
			args := append([]string{"--silent", "--show-error", "--fail", "--max-time", "60", "-o", out, "-D", headers}, tt.args...)
			cmd := exec.CommandContext(t.Context(), curl, append(args, "http://images"+path)...)
			cmd.Env = append(withoutProxyEnv(os.Environ()), tt.env...)
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("curl (fetch %d): %v: %s", i+1, err, msg)
			}
			body, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body, direct) || !bytes.Equal(body, img.Bytes) {
				t.Fatalf("curl got %d bytes, a direct fetch %d: they differ", len(body), len(direct))
			}
			h, err := os.ReadFile(headers)
			if err != nil {
				t.Fatal(err)
			}
			lower := strings.ToLower(string(h))
			if !strings.Contains(lower, "x-imash-cache: "+strings.ToLower(tt.wantCache)) || !strings.Contains(lower, "content-type: image/jpeg") {
				t.Fatalf("headers curl got lack X-Imash-Cache: %s or the content type:\n%s", tt.wantCache, h)
			}
		})
	}
}

// withoutProxyEnv drops proxy settings of the test's environment, which
// would otherwise steer or bypass curl's proxy.
func withoutProxyEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// TestCurlClientHints: a client announcing a small viewport with HTTP
// Client Hints gets an image adapted to it, made from the cached original.
func TestCurlClientHints(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (apt-get install curl); this test runs the real curl binary through the proxy")
	}
	e := newEnv(t, httpproxy.Options{})
	var img *legacy.Image
	for _, im := range e.set.Images() {
		if im.Width > 240 && (img == nil || im.Width > img.Width) {
			img = im
		}
	}
	if img == nil {
		t.Skip("no image wider than 240 pixels in the generated set")
	}
	out := filepath.Join(t.TempDir(), "small.jpg")
	cmd := exec.CommandContext(t.Context(), curl, "--silent", "--show-error", "--fail-with-body", "--max-time", "60", "-o", out,
		"-x", e.proxy.URL, "-H", "Sec-CH-Viewport-Width: 240", "-H", "Sec-CH-DPR: 1", "-H", "Accept: image/jpeg",
		"http://images/images/"+img.Name)
	cmd.Env = withoutProxyEnv(os.Environ())
	if msg, err := cmd.CombinedOutput(); err != nil {
		b, _ := os.ReadFile(out)
		t.Fatalf("curl: %v: %s %s", err, msg, b)
	}
	body, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the adapted image does not decode: %v", err)
	}
	if format != "jpeg" || cfg.Width > 240 || cfg.Width*img.Height/img.Width-cfg.Height > 1 {
		t.Fatalf("got a %s of %dx%d for a %dx%d original and a 240-pixel viewport", format, cfg.Width, cfg.Height, img.Width, img.Height)
	}
}
