package pipeline

import (
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
