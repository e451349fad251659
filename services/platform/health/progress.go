package health

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Progress turns "work is pending but nothing moves" into a readiness failure. A stage calls
// SetPending with how much work it knows is waiting (records behind the stream tip, consumer lag,
// rows buffered) and Advanced whenever it makes durable progress. Check fails when work has been
// pending for longer than the stall limit without any progress; an idle stage is always ready.
type Progress struct {
	stall time.Duration
	now   func() time.Time

	mu      sync.Mutex
	pending int64
	last    time.Time // last progress, or when work became pending after an idle spell
}

// NewProgress returns a tracker that reports a stall after stall without progress.
func NewProgress(stall time.Duration) *Progress {
	return &Progress{stall: stall, now: time.Now, last: time.Now()}
}

// SetPending records how much work is waiting.
func (p *Progress) SetPending(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == 0 && n > 0 {
		// The stall clock starts when work appears, not at the last progress before an idle spell.
		p.last = p.now()
	}
	p.pending = n
}

// Advanced records durable progress.
func (p *Progress) Advanced() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = p.now()
}

// Check is a readiness Check.
func (p *Progress) Check(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == 0 {
		return nil
	}
	if idle := p.now().Sub(p.last); idle > p.stall {
		return fmt.Errorf("stalled: %d pending, no progress for %s", p.pending, idle.Truncate(time.Second))
	}
	return nil
}
