package s3engine

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// notSentLowat caps the bytes a connection keeps queued in the kernel but
// not yet sent. Throughput is untouched (the congestion window still
// governs what is in flight), but a killed process leaves little behind to
// be flushed: those bytes belong to a part the store discards once the
// connection drops, so they would only be sent again.
const notSentLowat = 128 << 10

// controlSocket tunes S3 connections; failures are ignored (an older
// kernel keeps its default).
func controlSocket(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
	})
}
