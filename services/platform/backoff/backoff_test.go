package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestNextGrowsAndCaps(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	for i := range 50 {
		d := b.Next()
		ceil := 80 * time.Millisecond
		if i < 3 {
			ceil = 10 * time.Millisecond << i
		}
		if d < 5*time.Millisecond || d > ceil {
			t.Fatalf("attempt %d: wait %s outside [5ms, %s]", i, d, ceil)
		}
	}
	b.Reset()
	if d := b.Next(); d > 10*time.Millisecond {
		t.Fatalf("after Reset: %s", d)
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep = %v", err)
	}
}
