package pipeline

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ddb2delta/ddb2delta/services/platform/health"
)

// TestMetricsExistBeforeTheFirstBatch: a configured table's series and every dead-letter class
// are exported at zero before the first record, so an increase() alert sees the first event; the
// gauges only a commit can set are not.
func TestMetricsExistBeforeTheFirstBatch(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	New(Config{Tables: []Table{{Name: "orders_mirror", Topics: []string{"cdc.orders"}}, {Name: "orders_changelog", Topics: []string{"cdc.orders"}}}},
		nil, nil, NewMetrics(reg), health.NewProgress(time.Minute), slog.New(slog.DiscardHandler))
	for name, n := range map[string]int{
		"ddb2delta_sink_rows_total": 2, "ddb2delta_sink_bytes_total": 2, "ddb2delta_sink_skipped_total": 2,
		"ddb2delta_sink_stale_total": 2, "ddb2delta_sink_rescued_values_total": 2,
		"ddb2delta_sink_commit_seconds": 2, "ddb2delta_sink_batch_age_seconds": 2, "ddb2delta_sink_end_to_end_seconds": 2,
		"ddb2delta_sink_dead_letters_total": 2, "ddb2delta_sink_commit_failures_total": 1,
		"ddb2delta_sink_files": 0, "ddb2delta_sink_table_version": 0,
	} {
		if got := testutil.CollectAndCount(reg, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
}

// TestLagOfMovedPartitionsGoes: a partition revoked or lost stops being reported here: its new
// owner reports it, and a frozen value would hold the "not committing" alert on this replica.
func TestLagOfMovedPartitionsGoes(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	p := New(Config{}, nil, nil, m, health.NewProgress(time.Minute), slog.New(slog.DiscardHandler))
	for _, part := range []string{"0", "1", "2"} {
		m.lag.WithLabelValues("cdc.orders", part).Set(50)
	}
	p.lost(context.Background(), nil, map[string][]int32{"cdc.orders": {0}})
	p.revoked(context.Background(), nil, map[string][]int32{"cdc.orders": {2}})
	if n := testutil.CollectAndCount(reg, "ddb2delta_sink_consumer_lag"); n != 1 || testutil.ToFloat64(m.lag.WithLabelValues("cdc.orders", "1")) != 50 {
		t.Errorf("%d lag series after partitions 0 and 2 moved, want partition 1's only", n)
	}
}
