package globaltable

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the global tables' metrics.
type Metrics struct {
	entries          *prometheus.GaugeVec
	restoreRemaining *prometheus.GaugeVec
	applied          *prometheus.CounterVec
	skipped          *prometheus.CounterVec
	diskBytes        prometheus.Gauge
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_enricher_state_entries",
			Help: "Items held by a global table."}, []string{"table"}),
		restoreRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_enricher_state_restore_remaining_records",
			Help: "Records a global table still has to read before it is restored (0 once restored)."}, []string{"table"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_enricher_state_records_applied_total",
			Help: "Records of a global table's topic applied to the store."}, []string{"table"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_enricher_state_records_skipped_total",
			Help: "Records of a global table's topic that could not be decoded and were skipped."}, []string{"table"}),
		diskBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ddb2delta_enricher_state_store_bytes",
			Help: "Disk space used by the state store."}),
	}
	reg.MustRegister(m.entries, m.restoreRemaining, m.applied, m.skipped, m.diskBytes)
	return m
}
