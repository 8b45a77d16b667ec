package mux

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

func TestParseBackend(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Backend
		err  string
	}{
		{in: "shell=127.0.0.1:2323", want: Backend{"shell", "127.0.0.1:2323"}},
		{in: "images=[::1]:80", want: Backend{"images", "[::1]:80"}},
		{in: "shell", err: "NAME=HOST:PORT"},
		{in: "=1.2.3.4:5", err: "backend name"},
		{in: "a b=1.2.3.4:5", err: "backend name"},
		{in: "shell=localhost", err: "address"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBackend(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, %v; want error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v", got, err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{
		Backends:      []Backend{{"a", "1.2.3.4:5"}, {"a", "1.2.3.4:6"}, {"b!", "x"}},
		MaxChunk:      0,
		Retention:     0,
		UpQueue:       0,
		MaxStreams:    0,
		OrphanTimeout: 0,
		DialTimeout:   -time.Second,
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"configured twice", "backend name", "TLS", "MaxChunk", "Retention", "MaxStreams", "OrphanTimeout", "StandbyTimeout", "DialTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	good := NewDefaultConfig()
	good.TLS = &tls.Config{}
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestRetainBuf(t *testing.T) {
	var r retainBuf
	r.append(0, []byte("hello"))
	r.append(5, []byte(" world"))
	if got := string(r.slice(3, 100)); got != "lo" {
		t.Fatalf("slice(3) = %q", got)
	}
	if got := string(r.slice(5, 3)); got != " wo" {
		t.Fatalf("slice(5,3) = %q", got)
	}
	if r.slice(11, 10) != nil {
		t.Fatal("slice past the end")
	}
	r.trim(7)
	if r.size != 4 || r.slice(5, 10) != nil || string(r.slice(7, 10)) != "orld" {
		t.Fatalf("after trim: size %d, %q", r.size, r.slice(7, 10))
	}
	r.trim(11)
	if r.size != 0 || len(r.chunks) != 0 {
		t.Fatalf("after full trim: %+v", r)
	}
}
