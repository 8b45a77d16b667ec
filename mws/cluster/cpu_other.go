//go:build !unix

package cluster

// CPUSampler measures this process's CPU use for Load.CPU. On this
// platform it is not implemented and reports 0.
type CPUSampler struct{}

// NewCPUSampler starts measuring from now.
func NewCPUSampler() *CPUSampler { return &CPUSampler{} }

// Sample returns 0 on this platform.
func (s *CPUSampler) Sample() float64 { return 0 }
