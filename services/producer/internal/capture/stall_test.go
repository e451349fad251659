package capture

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
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

// TestShardStoppedForLostLeaseIsForgotten: a run that stops by itself because its lease went to
// another replica (between reading a page and publishing it) leaves no stall behind: this replica
// no longer reads the shard, so it must not turn unready over it once the limit passes; and the
// shard's gauges are no longer exported here.
func TestShardStoppedForLostLeaseIsForgotten(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	s := newStalls(time.Minute, m.shardStalled, slog.New(slog.DiscardHandler))
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	tc := &tableCapture{c: &Capture{stalls: s, metrics: m}, t: Table{Name: "orders"}}
	ctx := context.Background()
	running := map[string]shardRun{}
	done := make(chan shardDone, 1)
	var wg sync.WaitGroup
	tc.start(ctx, "arn|shard-1", "shard-1", running, done, &wg, func(context.Context) (bool, error) {
		m.initShard("orders", "shard-1")
		m.recordAge.WithLabelValues("orders", "shard-1").Set(5)
		s.read("orders", "shard-1", 3) // a page read…
		return false, nil              // …and the lease found lost before publishing it
	})
	wg.Wait()
	if d := <-done; d.finished || d.err != nil {
		t.Fatalf("run ended %+v", d)
	}
	now = now.Add(2 * time.Minute)
	if err := s.Check(ctx); err != nil {
		t.Fatalf("a shard this replica stopped reading makes it unready: %v", err)
	}
	if n := testutil.CollectAndCount(reg, "ddb2delta_producer_record_age_seconds"); n != 0 {
		t.Errorf("%d record age series left for a shard no longer read", n)
	}
}
