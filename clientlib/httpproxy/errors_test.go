package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
)

func TestStatusFor(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantReason string
	}{
		{name: "NotFound with reason", err: rpcerr.New(codes.NotFound, "UNKNOWN_BACKEND", "no HTTP backend named %q", "x"),
			wantStatus: http.StatusBadGateway, wantReason: "UNKNOWN_BACKEND"},
		{name: "Unavailable", err: rpcerr.New(codes.Unavailable, "BACKEND_UNAVAILABLE", "refused"),
			wantStatus: http.StatusBadGateway, wantReason: "BACKEND_UNAVAILABLE"},
		{name: "DeadlineExceeded without reason", err: status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
			wantStatus: http.StatusGatewayTimeout, wantReason: "DEADLINE_EXCEEDED"},
		{name: "bare context deadline", err: fmt.Errorf("get: %w", context.DeadlineExceeded),
			wantStatus: http.StatusGatewayTimeout, wantReason: "DEADLINE_EXCEEDED"},
		{name: "InvalidArgument", err: rpcerr.New(codes.InvalidArgument, "BAD_PATH", "bad"),
			wantStatus: http.StatusBadRequest, wantReason: "BAD_PATH"},
		{name: "wrapped InvalidArgument", err: fmt.Errorf("x: %w", rpcerr.New(codes.InvalidArgument, "BAD_HEADER", "bad")),
			wantStatus: http.StatusBadRequest, wantReason: "BAD_HEADER"},
		{name: "ResourceExhausted", err: rpcerr.New(codes.ResourceExhausted, "TOO_MANY_STREAMS", "full"),
			wantStatus: http.StatusServiceUnavailable, wantReason: "TOO_MANY_STREAMS"},
		{name: "Unauthenticated", err: rpcerr.New(codes.Unauthenticated, "CREDENTIAL_EXPIRED", "log in again"),
			wantStatus: http.StatusBadGateway, wantReason: "CREDENTIAL_EXPIRED"},
		{name: "DataLoss", err: rpcerr.New(codes.DataLoss, "UPSTREAM_TRUNCATED", "cut"),
			wantStatus: http.StatusBadGateway, wantReason: "UPSTREAM_TRUNCATED"},
		{name: "object too large", err: fmt.Errorf("%w: 9 bytes", clientlib.ErrTooLarge),
			wantStatus: http.StatusBadGateway, wantReason: "OBJECT_TOO_LARGE"},
		{name: "plain error", err: errors.New("boom"),
			wantStatus: http.StatusBadGateway, wantReason: "UPSTREAM_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reason := statusFor(tt.err)
			if status != tt.wantStatus || reason != tt.wantReason {
				t.Fatalf("statusFor(%v) = %d %s, want %d %s", tt.err, status, reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

func TestRPCMessageDropsTheGRPCPrefix(t *testing.T) {
	err := rpcerr.New(codes.NotFound, "UNKNOWN_BACKEND", "no HTTP backend named %q", "x")
	if got, want := rpcMessage(err), `no HTTP backend named "x"`; got != want {
		t.Fatalf("rpcMessage = %q, want %q", got, want)
	}
}
