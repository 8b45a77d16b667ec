//go:build unix

package cluster

import (
	"runtime"
	"sync"
	"syscall"
	"time"
)

// CPUSampler measures this process's CPU use for Load.CPU.
type CPUSampler struct {
	mu   sync.Mutex
	wall time.Time
	cpu  time.Duration
}

// NewCPUSampler starts measuring from now.
func NewCPUSampler() *CPUSampler {
	s := &CPUSampler{}
	s.wall, s.cpu = time.Now(), processCPU()
	return s
}

// Sample returns the process's CPU use since the previous Sample (or
// NewCPUSampler) as a fraction of all cores, 0 to 1. Call it every few
// seconds; very short intervals are noisy.
func (s *CPUSampler) Sample() float64 {
	now, cpu := time.Now(), processCPU()
	s.mu.Lock()
	defer s.mu.Unlock()
	wall := now.Sub(s.wall)
	used := cpu - s.cpu
	s.wall, s.cpu = now, cpu
	if wall <= 0 {
		return 0
	}
	f := float64(used) / (float64(wall) * float64(runtime.NumCPU()))
	return min(max(f, 0), 1)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
