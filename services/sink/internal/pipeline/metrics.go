package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the sink's Prometheus metrics.
type Metrics struct {
	rows        *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	commit      *prometheus.HistogramVec
	batchAge    *prometheus.HistogramVec
	latency     *prometheus.HistogramVec
	files       *prometheus.GaugeVec
	version     *prometheus.GaugeVec
	lag         *prometheus.GaugeVec
	skipped     *prometheus.CounterVec
	stale       *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	rescued     *prometheus.CounterVec
	failures    prometheus.Counter
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := prometheus.ExponentialBuckets(0.01, 2, 14)
	m := &Metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_sink_rows_total",
			Help: "Rows written: appended (changelog), or upserted and deleted (mirror)."}, []string{"table"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_sink_bytes_total",
			Help: "Bytes of Parquet data files written."}, []string{"table"}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ddb2delta_sink_commit_seconds",
			Help: "Time to write a batch's files and commit it.", Buckets: buckets}, []string{"table"}),
		batchAge: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ddb2delta_sink_batch_age_seconds",
			Help: "Age of a batch's oldest change when its commit started.", Buckets: buckets}, []string{"table"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ddb2delta_sink_end_to_end_seconds",
			Help: "From the source change (DynamoDB's approximate creation time) to the Delta commit that made it visible.", Buckets: buckets}, []string{"table"}),
		files: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_sink_files",
			Help: "Data files in the table's latest version."}, []string{"table"}),
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_sink_table_version",
			Help: "The table's latest version committed by this replica."}, []string{"table"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_sink_consumer_lag",
			Help: "Records behind the partition's high watermark at the last fetch."}, []string{"topic", "partition"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_sink_skipped_total",
			Help: "Changes already in the table (re-read after a crash or rebalance), not written again."}, []string{"table"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_sink_stale_total",
			Help: "Mirror changes superseded in their batch or older than the table's row for their key."}, []string{"table"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_sink_dead_letters_total",
			Help: "Records sent to the dead-letter topic, by class (decode, mapping)."}, []string{"class"}),
		rescued: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_sink_rescued_values_total",
			Help: "Attribute values that did not fit their column's type, kept exactly in the row's _rescued_data."}, []string{"table"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "ddb2delta_sink_commit_failures_total",
			Help: "Batches whose commit failed; the pipeline resumed from the tables' offsets."}),
	}
	for _, class := range []string{"decode", "mapping"} {
		m.deadLetters.WithLabelValues(class)
	}
	reg.MustRegister(m.rows, m.bytes, m.commit, m.batchAge, m.latency, m.files, m.version, m.lag, m.skipped, m.stale, m.deadLetters, m.rescued, m.failures)
	return m
}

// initTable creates a table's series at zero when the pipeline is built: a dashboard shows every
// table from the start, and increase() sees a counter's first event (a series born at 1 has no
// increase). The files and version gauges wait for the table's first commit: a zero would be a
// false reading, and a warehouse table never sets them.
func (m *Metrics) initTable(table string) {
	for _, v := range []*prometheus.CounterVec{m.rows, m.bytes, m.skipped, m.stale, m.rescued} {
		v.WithLabelValues(table)
	}
	for _, v := range []*prometheus.HistogramVec{m.commit, m.batchAge, m.latency} {
		v.WithLabelValues(table)
	}
}
