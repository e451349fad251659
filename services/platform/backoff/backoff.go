// Package backoff spaces out retries: exponential with full jitter, capped, and stopping with the
// caller's context.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields growing waits. The zero value waits between 100ms and 10s.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the wait before the next attempt: a random duration up to Min×2^attempt, at most Max.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 10 * time.Second
	}
	ceil := lo << min(b.attempt, 30)
	if ceil > hi || ceil <= 0 {
		ceil = hi
	}
	b.attempt++
	return lo/2 + rand.N(ceil-lo/2+1)
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits d or until ctx is done, returning ctx's error in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
