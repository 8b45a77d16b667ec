// Package rpcerr builds gRPC status errors that carry a machine-readable
// reason, so that a caller can act on the failure without parsing messages.
//
// Every imash service returns errors made here: the gRPC code says what kind
// of failure it is (NotFound, FailedPrecondition, ...), and the reason — a
// stable UPPER_SNAKE_CASE word in a google.rpc.ErrorInfo detail — says which.
package rpcerr

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every imash error.
const Domain = "imash"

// New returns a gRPC status error with code c, the reason and a formatted
// human-readable message.
func New(c codes.Code, reason, format string, args ...any) error {
	st := status.New(c, fmt.Sprintf(format, args...))
	if reason != "" {
		if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// Reason returns the reason attached to err by New, or "" if there is none.
// It looks through wrapped errors.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// Code returns the gRPC code of err (codes.Unknown for a non-status error,
// codes.OK for nil). Unlike status.Code it looks through wrapped errors.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return status.Code(err)
}

// NewWithMeta is New with metadata in the ErrorInfo: facts a caller needs
// to act on the error (where a moved session went, say).
func NewWithMeta(c codes.Code, reason string, meta map[string]string, format string, args ...any) error {
	st := status.New(c, fmt.Sprintf(format, args...))
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: meta}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// Meta returns the ErrorInfo metadata of err, or nil.
func Meta(err error) map[string]string {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	var st *status.Status
	if errors.As(err, &se) {
		st = se.GRPCStatus()
	} else if s, ok := status.FromError(err); ok {
		st = s
	}
	if st == nil {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()
		}
	}
	return nil
}
