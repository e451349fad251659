package capture

import (
	"testing"
	"time"

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

// TestReleasedShardSeriesGo: a shard this replica stopped reading stops being exported: its
// gauges at once, its counters after the retention unless it is claimed again meanwhile.
func TestReleasedShardSeriesGo(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	var scheduled []func()
	m.after = func(d time.Duration, f func()) {
		if d < 15*time.Minute {
			t.Errorf("counters deleted %s after the release, before a 15-minute increase() window", d)
		}
		scheduled = append(scheduled, f)
	}
	count := func(name string) int { return testutil.CollectAndCount(reg, name) }
	claim := func(shard string) {
		m.initShard("orders", shard)
		m.records.WithLabelValues("orders", shard).Add(10)
		m.lastCommit.WithLabelValues("orders", shard).SetToCurrentTime()
		m.recordAge.WithLabelValues("orders", shard).Set(2000) // above the alert's 900 s
	}
	claim("shard-a")
	claim("shard-b")
	m.releaseShard("orders", "shard-a")
	m.releaseShard("orders", "shard-b")
	if n := count("ddb2delta_producer_record_age_seconds"); n != 0 {
		t.Errorf("%d record age series left after the release: a frozen age of a shard no longer read alerts forever", n)
	}
	if n := count("ddb2delta_producer_last_commit_timestamp_seconds"); n != 0 {
		t.Errorf("%d commit time series left after the release", n)
	}
	if n := count("ddb2delta_producer_records_total"); n != 2 {
		t.Errorf("%d records series right after the release, want both until the retention passes", n)
	}
	m.initShard("orders", "shard-b") // claimed again (its lease came back) before the retention
	if len(scheduled) != 2 {
		t.Fatalf("%d deletions scheduled, want 2", len(scheduled))
	}
	for _, f := range scheduled {
		f()
	}
	lbl := func(shard string) prometheus.Labels { return prometheus.Labels{"table": "orders", "shard": shard} }
	if n := count("ddb2delta_producer_records_total"); n != 1 || !m.records.Delete(lbl("shard-b")) {
		t.Errorf("after the retention: %d records series, want only shard-b's (claimed again)", n)
	}
	if n := count("ddb2delta_producer_data_loss_total"); n != 1 || !m.dataLoss.Delete(lbl("shard-b")) {
		t.Errorf("after the retention: %d data loss series, want only shard-b's", n)
	}
}
