// Package benchutil is what the benchmarks share: throughput per wall second and per CPU second,
// the figure that stays comparable on a shared machine.
package benchutil

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is this process's user + system CPU time.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Clock measures one benchmark's wall and CPU time.
type Clock struct {
	wall time.Time
	cpu  time.Duration
}

// Start starts the clock (after b.ResetTimer).
func Start() Clock { return Clock{wall: time.Now(), cpu: CPUTime()} }

// Report reports n units done since the clock started as <unit>/s and <unit>/cpu-s.
func (c Clock) Report(b *testing.B, n int, unit string) {
	wall, cpu := time.Since(c.wall), CPUTime()-c.cpu
	b.ReportMetric(float64(n)/wall.Seconds(), unit+"/s")
	b.ReportMetric(float64(n)/cpu.Seconds(), unit+"/cpu-s")
}
