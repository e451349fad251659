package capture

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsExistBeforeTheFirstEvent: a configured table's series, and a claimed shard's, are
// exported at zero before anything happens to them, so an increase() alert sees the first event;
// the series whose zero would be a false reading are not.
func TestMetricsExistBeforeTheFirstEvent(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	m.initTable(Table{Name: "orders"})
	m.initTable(Table{Name: "customers", Snapshot: &Snapshot{Initial: true}})
	m.initShard("orders", "shardId-1")

	want := map[string]int{ // family → series
		"ddb2delta_producer_records_total":             1,
		"ddb2delta_producer_bytes_total":               2,
		"ddb2delta_producer_getrecords_seconds":        2,
		"ddb2delta_producer_commit_seconds":            2,
		"ddb2delta_producer_throttles_total":           2,
		"ddb2delta_producer_data_loss_total":           1,
		"ddb2delta_producer_dead_letters_total":        2,
		"ddb2delta_producer_stream_gaps_total":         2,
		"ddb2delta_producer_skipped_total":             2,
		"ddb2delta_producer_shards_active":             2,
		"ddb2delta_producer_shard_stalled":             1,
		"ddb2delta_producer_snapshot_rows_total":       2,
		"ddb2delta_producer_snapshot_read_units_total": 2,
		// Only the table without an initial snapshot: the other's count is not known yet.
		"ddb2delta_producer_snapshot_segments_remaining":   1,
		"ddb2delta_producer_last_commit_timestamp_seconds": 0,
		"ddb2delta_producer_record_age_seconds":            0,
	}
	for name, n := range want {
		if got := testutil.CollectAndCount(reg, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
	if v := testutil.ToFloat64(m.dataLoss.WithLabelValues("orders", "shardId-1")); v != 0 {
		t.Errorf("data loss starts at %v", v)
	}

	// A stalled shard claimed again stays stalled.
	m.shardStalled.WithLabelValues("orders", "shardId-1").Set(1)
	m.initShard("orders", "shardId-1")
	if v := testutil.ToFloat64(m.shardStalled.WithLabelValues("orders", "shardId-1")); v != 1 {
		t.Errorf("claiming a stalled shard again reset its stalled gauge to %v", v)
	}
}
