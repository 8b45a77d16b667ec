// Package legacy provides real, unmodified-protocol "legacy servers" on
// loopback for tests and the testbed: a raw TCP stream server for
// byte-exactness checks, an echo server, and an HTTP/1.1 image server for the
// minibrowser workload, together with the seeded image set it serves.
//
// Every server listens on 127.0.0.1 with a kernel-chosen port, counts what it
// sees with atomic counters tests can poll, and shuts down completely in
// Close: the listener, every connection and every goroutine it started.
//
// The package depends only on the standard library and on no other imash
// package, so that any imash package's tests may import it.
package legacy
