package cliflag

import (
	"flag"
	"strings"
	"testing"
)

func TestSet(t *testing.T) {
	tests := []struct {
		name    string
		bytes   bool
		in      string
		want    int64
		wantErr string
	}{
		{name: "plain", in: "42", want: 42},
		{name: "json float form", in: "2.68435456e+08", want: 268435456},
		{name: "negative", in: "-3", want: -3},
		{name: "suffix on a count", in: "2MiB", wantErr: "whole number"},
		{name: "fraction", in: "1.5", wantErr: "whole number"},
		{name: "bytes plain", bytes: true, in: "1000", want: 1000},
		{name: "bytes MiB", bytes: true, in: "256MiB", want: 256 << 20},
		{name: "bytes KiB with space", bytes: true, in: "64 KiB", want: 64 << 10},
		{name: "bytes GiB", bytes: true, in: "2GiB", want: 2 << 30},
		{name: "bytes B", bytes: true, in: "7B", want: 7},
		{name: "bytes json float", bytes: true, in: "2.097152e+06", want: 2 << 20},
		{name: "bytes decimal unit", bytes: true, in: "2MB", wantErr: "suffix B, KiB"},
		{name: "bytes overflow", bytes: true, in: "9999999999GiB", wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got int64
			v := &Num[int64]{p: &got, bytes: tt.bytes}
			err := v.Set(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Set(%q) = %v, want error containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Set(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		name string
		v    flag.Value
		want string
	}{
		{name: "count", v: Int(ptr(65536)), want: "65536"},
		{name: "MiB", v: BytesInt(ptr(2 << 20)), want: "2MiB"},
		{name: "odd bytes", v: BytesInt(ptr(1000)), want: "1000"},
		{name: "zero value", v: &Num[int]{}, want: "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.v.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFlagSetDefaults(t *testing.T) {
	n := 8 << 10
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(BytesInt(&n), "max-header-bytes", "header `bytes`")
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	if !strings.Contains(b.String(), "(default 8KiB)") || strings.Contains(b.String(), "panic") {
		t.Fatalf("PrintDefaults:\n%s", b.String())
	}
	if err := fs.Parse([]string{"--max-header-bytes", "1MiB"}); err != nil || n != 1<<20 {
		t.Fatalf("parse: n=%d err=%v", n, err)
	}
}

func ptr(v int) *int { return &v }
