package httpproxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/internal/rpcerr"
)

// statusFor maps a failed Get to the HTTP status the client gets and the
// reason it is told: the imash reason (rpcerr.Reason) when the MWS gave
// one, else the gRPC code in UPPER_SNAKE_CASE.
//
// The proxy is a gateway, so a failure beyond it — an unknown backend, a
// legacy server that cannot be reached or answers garbage, the proxy's own
// credential refused — is 502; a timeout is 504; only a request the MWS
// refuses as malformed (InvalidArgument) is the client's fault, 400.
func statusFor(err error) (int, string) {
	if errors.Is(err, clientlib.ErrTooLarge) {
		return http.StatusBadGateway, "OBJECT_TOO_LARGE"
	}
	code := rpcerr.Code(err)
	if code == codes.Unknown && errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	reason := rpcerr.Reason(err)
	if reason == "" {
		reason = "UPSTREAM_ERROR"
		if code != codes.Unknown {
			reason = snake(code.String())
		}
	}
	switch code {
	case codes.InvalidArgument:
		return http.StatusBadRequest, reason
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout, reason
	case codes.ResourceExhausted:
		return http.StatusServiceUnavailable, reason
	default: // NotFound, Unavailable, Unauthenticated, PermissionDenied, DataLoss, ...
		return http.StatusBadGateway, reason
	}
}

// rpcMessage is the human-readable part of err, without gRPC's "rpc error:
// code = ... desc =" prefix.
func rpcMessage(err error) string {
	if st, ok := status.FromError(err); ok && st.Message() != "" {
		return st.Message()
	}
	return err.Error()
}

// snake turns "DeadlineExceeded" into "DEADLINE_EXCEEDED".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
