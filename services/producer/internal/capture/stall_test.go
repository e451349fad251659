package capture

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStallsSurviveRestarts: a shard that fails the same page run after run stays stalled, with
// the stall counted from its first pending record, not from its latest restart; publishing clears it.
func TestStallsSurviveRestarts(t *testing.T) {
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "stalled"}, []string{"table", "shard"})
	s := newStalls(time.Minute, gauge, slog.New(slog.DiscardHandler))
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	ctx := context.Background()

	s.read("t", "a", 3)
	s.read("t", "b", 1)
	s.progressed("t", "b")
	now = now.Add(50 * time.Second)
	s.failed("t", "a", errors.New("MESSAGE_TOO_LARGE"))
	if err := s.Check(ctx); err != nil {
		t.Fatalf("stalled before the limit: %v", err)
	}
	if s.mayStart("t", "a") {
		t.Fatal("a failed shard restarts without backing off")
	}
	now = now.Add(restartBackoff(1))
	if !s.mayStart("t", "a") {
		t.Fatal("a failed shard does not restart after its backoff")
	}
	s.read("t", "a", 3) // the restarted run reads the same page
	now = now.Add(20 * time.Second)
	err := s.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "table t shard a: no progress for 1m11s (3 records pending, 1 failures): MESSAGE_TOO_LARGE") {
		t.Fatalf("Check = %v", err)
	}
	if strings.Contains(err.Error(), "shard b") {
		t.Fatalf("a shard that published is reported: %v", err)
	}
	if v := testutil.ToFloat64(gauge.WithLabelValues("t", "a")); v != 1 {
		t.Fatalf("stalled gauge = %v", v)
	}
	s.progressed("t", "a")
	if err := s.Check(ctx); err != nil {
		t.Fatalf("still stalled after publishing: %v", err)
	}
	if v := testutil.ToFloat64(gauge.WithLabelValues("t", "a")); v != 0 {
		t.Fatalf("stalled gauge = %v after publishing", v)
	}
	for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		if got := restartBackoff(i + 1); got != want {
			t.Errorf("backoff after %d failures = %s, want %s", i+1, got, want)
		}
	}
	if got := restartBackoff(40); got != 30*time.Second {
		t.Errorf("backoff is not capped: %s", got)
	}
}
