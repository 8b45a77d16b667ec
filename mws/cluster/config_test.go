package cluster

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	cfg := NewDefaultConfig()
	cfg.Name = "mws-1"
	cfg.SecretKeys = [][]byte{keyOld}
	cfg.GRPCAddr = "10.0.0.1:9443"
	return cfg
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string // substrings; nil means valid
	}{
		{name: "default plus required", mutate: func(*Config) {}},
		{name: "fast timing", mutate: func(c *Config) { c.Timing = FastTiming() }},
		{name: "insecure without keys", mutate: func(c *Config) { c.SecretKeys, c.Insecure = nil, true }},
		{name: "port 0 and seeds", mutate: func(c *Config) {
			c.BindPort = 0
			c.Seeds = []string{"10.0.0.2:7946", "mws-2.internal:7946", "[::1]:7946"}
		}},
		{name: "key rotation set", mutate: func(c *Config) {
			c.SecretKeys = [][]byte{keyNew, keyOld, bytes.Repeat([]byte{3}, 24)}
		}},
		{name: "advertise", mutate: func(c *Config) { c.AdvertiseAddr, c.AdvertisePort = "203.0.113.5", 17946 }},
		{name: "no name", mutate: func(c *Config) { c.Name = "" }, wantErr: []string{"name"}},
		{name: "bad name", mutate: func(c *Config) { c.Name = "a b" }, wantErr: []string{"name"}},
		{name: "long name", mutate: func(c *Config) { c.Name = strings.Repeat("a", 65) }, wantErr: []string{"name"}},
		{name: "no key", mutate: func(c *Config) { c.SecretKeys = nil }, wantErr: []string{"no gossip key"}},
		{name: "key and insecure", mutate: func(c *Config) { c.Insecure = true }, wantErr: []string{"Insecure"}},
		{name: "short key", mutate: func(c *Config) { c.SecretKeys = [][]byte{keyOld, []byte("short")} },
			wantErr: []string{"secret key 1: 5 bytes"}},
		{name: "bind", mutate: func(c *Config) { c.BindAddr, c.BindPort = "localhost", 70000 },
			wantErr: []string{"bind address", "bind port"}},
		{name: "advertise port alone", mutate: func(c *Config) { c.AdvertisePort = 1 },
			wantErr: []string{"advertise port 1 needs"}},
		{name: "advertise port with bind 0", mutate: func(c *Config) { c.AdvertiseAddr, c.AdvertisePort, c.BindPort = "1.2.3.4", 1, 0 },
			wantErr: []string{"advertise port 1 needs"}},
		{name: "advertise addr", mutate: func(c *Config) { c.AdvertiseAddr = "nat.example" },
			wantErr: []string{"advertise address"}},
		{name: "seeds", mutate: func(c *Config) { c.Seeds = []string{"10.0.0.2", ":7946", "h:0"} },
			wantErr: []string{`seed "10.0.0.2"`, `seed ":7946"`, `seed "h:0"`}},
		{name: "gRPC address", mutate: func(c *Config) { c.GRPCAddr = "" }, wantErr: []string{"gRPC address"}},
		{name: "long gRPC address", mutate: func(c *Config) { c.GRPCAddr = strings.Repeat("h", 300) + ":1" },
			wantErr: []string{"gRPC address: 302 bytes"}},
		{name: "load", mutate: func(c *Config) { c.Load = Load{Sessions: -1, MaxSessions: -2, CPU: math.NaN()} },
			wantErr: []string{"sessions -1", "max sessions -2", "CPU NaN"}},
		{name: "timing", mutate: func(c *Config) { c.Timing = Timing{ProbeTimeout: time.Second} },
			wantErr: []string{"probe interval 0s", "probe timeout 1s exceeds", "gossip interval", "push-pull", "TCP timeout",
				"dead time", "broadcast timeout", "suspicion multiplier", "gossip nodes", "retransmit"}},
		{name: "limits", mutate: func(c *Config) { c.MaxDevices, c.EventBuffer, c.JoinAttempts = 0, 0, 0 },
			wantErr: []string{"max devices", "event buffer", "join attempts"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestConfigValidateReportsAll(t *testing.T) {
	err := Config{}.Validate()
	if err == nil {
		t.Fatal("zero Config accepted")
	}
	if n := len(strings.Split(err.Error(), "\n")); n < 10 {
		t.Errorf("zero Config: %d problems reported, want every one:\n%v", n, err)
	}
}

// The largest metadata a valid Config can produce fits memberlist's limit.
func TestMetaFitsLimit(t *testing.T) {
	m := nodeMeta{
		instance: math.MaxUint64,
		version:  math.MaxUint64,
		grpcAddr: strings.Repeat("h", maxGRPCAddrBytes),
		load:     Load{Sessions: math.MaxInt32, MaxSessions: math.MaxInt32, CPU: 1, Draining: true},
	}
	b := m.encode()
	if len(b) > 512 {
		t.Fatalf("metadata %d bytes, limit 512", len(b))
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, m)
	}
}
