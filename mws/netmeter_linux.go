package mws

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bytesAcked reads tcpi_bytes_acked, the bytes of the connection its peer
// has acknowledged.
func bytesAcked(rc syscall.RawConn) (uint64, bool) {
	var ti *unix.TCPInfo
	var err error
	if cerr := rc.Control(func(fd uintptr) { ti, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil || err != nil {
		return 0, false
	}
	return ti.Bytes_acked, true
}
