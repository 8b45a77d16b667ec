// Package netem emulates network links in user space for the testbed: a
// Link is a TCP relay (a listener in front of a target address) that
// imposes a bandwidth, a one-way latency and optional jitter on each
// direction of every connection through it.
//
// The model of one direction is a bottleneck followed by a propagation
// pipe. Bytes read from the sender are serialized at the direction's Rate
// (a token bucket shared by every connection of the link, like a real
// access link), wait in a bottleneck queue of at most Queue bytes — beyond
// that the relay stops reading, so the sender feels TCP backpressure as it
// would from a slow router — and then travel for Delay (plus a random share
// of Jitter) before they are written to the receiver. The pipe holds any
// number of bytes in flight: latency adds to every byte's delivery time but
// does not lower the throughput below Rate (it is a pipe, not
// stop-and-wait). Jitter never reorders bytes: a segment is never delivered
// before the one read ahead of it.
//
// A half-close (EOF) is relayed after the bytes before it, with the same
// delay; an error or a reset on either side closes both connections.
//
// The relay's own sockets read with a small kernel receive buffer
// (Config.ReadBuffer): otherwise the kernel would accept megabytes ahead of
// the emulated bottleneck at loopback speed, and a sender measuring its
// goodput (the MWS does) would see the loopback, not the link.
package netem

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/imashproject/imash/profiles"
)

// Shape is one direction of a link.
type Shape struct {
	// Rate is the bandwidth in bytes per second; 0 is unlimited.
	Rate int64
	// Delay is the one-way latency every byte incurs (a link's round-trip
	// time is Up.Delay + Down.Delay).
	Delay time.Duration
	// Jitter adds a uniformly random extra delay in [0, Jitter) to each
	// segment, without reordering; 0 is none.
	Jitter time.Duration
	// Queue is the bottleneck buffer in bytes: once this many bytes wait
	// for their turn at Rate, the relay stops reading from the sender.
	// 0: DefaultQueue of the rate. Ignored when Rate is unlimited.
	Queue int
}

// Limits of a Shape.
const (
	// MaxDelay bounds Delay and Jitter.
	MaxDelay = time.Minute
	// MaxQueue bounds Queue.
	MaxQueue = 64 << 20
	// maxInFlight bounds the bytes one direction of one connection holds
	// in its propagation pipe, whatever the shape (with an unlimited rate
	// nothing else bounds them).
	maxInFlight = 8 << 20
)

// DefaultQueue returns the bottleneck buffer used when Shape.Queue is 0:
// 100 ms at rate, at least 4 KiB and at most 1 MiB.
func DefaultQueue(rate int64) int {
	return int(min(max(rate/10, 4<<10), 1<<20))
}

// queue is the effective bottleneck buffer.
func (s Shape) queue() int {
	if s.Queue > 0 {
		return s.Queue
	}
	return DefaultQueue(s.Rate)
}

// segment is how many bytes one read takes: about 10 ms at the rate, so a
// slow link is scheduled finely and a fast one without a timer per
// kilobyte.
func (s Shape) segment() int {
	if s.Rate <= 0 {
		return 32 << 10
	}
	return int(min(max(s.Rate/100, 256), 32<<10))
}

func (s Shape) validate(name string) []error {
	var errs []error
	if s.Rate < 0 {
		errs = append(errs, fmt.Errorf("%s.Rate %d: want >= 0 bytes/s (0 is unlimited)", name, s.Rate))
	}
	if s.Delay < 0 || s.Delay > MaxDelay {
		errs = append(errs, fmt.Errorf("%s.Delay %v: want 0..%v", name, s.Delay, MaxDelay))
	}
	if s.Jitter < 0 || s.Jitter > MaxDelay {
		errs = append(errs, fmt.Errorf("%s.Jitter %v: want 0..%v", name, s.Jitter, MaxDelay))
	}
	if s.Queue < 0 || s.Queue > MaxQueue {
		errs = append(errs, fmt.Errorf("%s.Queue %d: want 0..%d bytes (0 is the default)", name, s.Queue, MaxQueue))
	}
	return errs
}

// Config configures a Link.
type Config struct {
	// Up shapes the bytes from the client (the side that dials the link)
	// to the target; Down the bytes from the target to the client.
	Up, Down Shape
	// ReadBuffer is the kernel receive buffer (SO_RCVBUF) of the relay's
	// sockets, in bytes: small, so that the kernel does not hide a large
	// buffer ahead of the emulated bottleneck, but at least MinReadBuffer.
	// 0: DefaultReadBuffer; negative: the kernel's default (autotuned).
	ReadBuffer int
	// Seed seeds the jitter (0 is a fixed seed too: runs repeat).
	Seed uint64
}

// DefaultReadBuffer is the relay's SO_RCVBUF when Config.ReadBuffer is 0
// (Linux doubles it: 128 KiB).
const DefaultReadBuffer = 64 << 10

// MinReadBuffer is the smallest Config.ReadBuffer. Below it the doubled
// buffer is smaller than two segments of loopback's 64 KiB MSS, the
// receiver's silly-window avoidance then withholds window updates, and the
// sender stalls on zero-window probes: a link of 1 MiB/s delivered 160
// KiB/s.
const MinReadBuffer = 64 << 10

// Symmetric returns a Config with the same rate and one-way delay both
// ways.
func Symmetric(rate int64, delay time.Duration) Config {
	return Config{Up: Shape{Rate: rate, Delay: delay}, Down: Shape{Rate: rate, Delay: delay}}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	errs := slices.Concat(c.Up.validate("Up"), c.Down.validate("Down"))
	if c.ReadBuffer > 0 && c.ReadBuffer < MinReadBuffer {
		errs = append(errs, fmt.Errorf("ReadBuffer %d: want at least %d bytes (0 is the default, negative the kernel's)", c.ReadBuffer, MinReadBuffer))
	}
	return errors.Join(errs...)
}

// RTT is the link's round-trip time without queueing: the two one-way
// delays.
func (c Config) RTT() time.Duration { return c.Up.Delay + c.Down.Delay }

// Testbed returns the emulated link of one of the paper's four testbed
// devices (profiles.TestbedDevices: "workstation", "desktop", "laptop",
// "pda"), built from the nominal network profile the device declares so
// that the two never disagree: the profile's bandwidth both ways and half
// its round-trip latency each way. That is a 100 Mbit/s switched LAN with
// 1 ms RTT for the workstation and the desktop, a 56 kbit/s modem with
// 150 ms RTT and 5 ms of jitter for the laptop, and 802.11b at about
// 5 Mbit/s effective with 20 ms RTT and 2 ms of jitter for the PDA.
func Testbed(device string) (Config, error) {
	_, netp, err := profiles.TestbedDevice(device)
	if err != nil {
		return Config{}, fmt.Errorf("netem: %w", err)
	}
	sh := Shape{Rate: netp.Network.BandwidthBPS / 8, Delay: netp.Network.Latency / 2}
	switch device {
	case "laptop":
		sh.Jitter = 5 * time.Millisecond
	case "pda":
		sh.Jitter = 2 * time.Millisecond
	}
	return Config{Up: sh, Down: sh}, nil
}
