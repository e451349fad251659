package run

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLagOfMovedPartitionsGoes: a partition revoked or lost stops being reported here: its new
// owner reports it, and a frozen value would hold the "not committing" alert on this replica.
func TestLagOfMovedPartitionsGoes(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	for _, p := range []string{"0", "1", "2"} {
		m.lag.WithLabelValues("cdc.orders", p).Set(50)
		m.lag.WithLabelValues("cdc.customers", p).Set(7)
	}
	m.forgetPartitions(context.Background(), nil, map[string][]int32{"cdc.orders": {0, 2}, "cdc.customers": {1}})
	if n := testutil.CollectAndCount(reg, "ddb2delta_enricher_lag_records"); n != 3 {
		t.Errorf("%d lag series after three partitions moved, want 3", n)
	}
	if testutil.ToFloat64(m.lag.WithLabelValues("cdc.orders", "1")) != 50 || testutil.ToFloat64(m.lag.WithLabelValues("cdc.customers", "2")) != 7 {
		t.Error("the lag of a partition still read was dropped")
	}
}
