//go:build !linux

package mws

import "syscall"

// bytesAcked needs Linux's TCP_INFO: elsewhere there is no goodput sample.
func bytesAcked(syscall.RawConn) (uint64, bool) { return 0, false }
