package cluster

import "errors"

// ErrClosed is returned by calls on a Cluster after Close or Abort.
var ErrClosed = errors.New("cluster: closed")

// ErrJoin is returned by Start when no seed could be reached (unreachable,
// or rejecting this node, e.g. because of a different gossip key).
var ErrJoin = errors.New("cluster: cannot join")

// ErrDirectoryFull is returned by SetDevice when the device directory holds
// Config.MaxDevices entries and all of them are online.
var ErrDirectoryFull = errors.New("cluster: device directory full")

// ErrInvalidDevice is returned by SetDevice for an empty or oversized
// (MaxIDBytes) user or device identifier, or one that is not UTF-8.
var ErrInvalidDevice = errors.New("cluster: invalid user or device")
