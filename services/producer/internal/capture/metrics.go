package capture

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// releasedCounterRetention is how long a released shard's counters stay exported: several scrapes
// and an alert's increase() window (15 minutes) see their last increments before they go.
const releasedCounterRetention = 20 * time.Minute

// Metrics are the producer's Prometheus metrics.
type Metrics struct {
	records      *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	getRecords   *prometheus.HistogramVec
	commit       *prometheus.HistogramVec
	throttles    *prometheus.CounterVec
	dataLoss     *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
	shardsActive *prometheus.GaugeVec
	lastCommit   *prometheus.GaugeVec
	recordAge    *prometheus.GaugeVec
	shardStalled *prometheus.GaugeVec
	streamGaps   *prometheus.CounterVec
	skipped      *prometheus.CounterVec

	describeCalls, describeThrottles prometheus.Counter

	snapshotRows      *prometheus.CounterVec
	snapshotUnits     *prometheus.CounterVec
	snapshotRemaining *prometheus.GaugeVec

	// after schedules a released shard's counters' deletion (time.AfterFunc; tests replace it).
	after  func(time.Duration, func())
	mu     sync.Mutex
	claims map[[2]string]uint64 // by table, shard: claims so far, to tell a release from a re-claim
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_records_total",
			Help: "Stream records published (committed) to Kafka."}, []string{"table", "shard"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_bytes_total",
			Help: "Key and value bytes of the change events published."}, []string{"table"}),
		getRecords: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ddb2delta_producer_getrecords_seconds",
			Help: "Latency of DynamoDB Streams GetRecords calls.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"table"}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ddb2delta_producer_commit_seconds",
			Help: "Latency of one page's Kafka transaction (produce, flush, commit).", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"table"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_throttles_total",
			Help: "Throttled DynamoDB Streams calls."}, []string{"table"}),
		dataLoss: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_data_loss_total",
			Help: "Times records expired from the stream (24 hours) before they were read."}, []string{"table", "shard"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_dead_letters_total",
			Help: "Stream records that could not be converted, sent to the dead-letter topic."}, []string{"table"}),
		shardsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_producer_shards_active",
			Help: "Shards this replica is reading."}, []string{"table"}),
		lastCommit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_producer_last_commit_timestamp_seconds",
			Help: "When a shard's last page was committed (checkpoint age = now - this)."}, []string{"table", "shard"}),
		recordAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_producer_record_age_seconds",
			Help: "Age of the newest record read from a shard when its page was published: how far behind the stream tip the shard is."}, []string{"table", "shard"}),
		shardStalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_producer_shard_stalled",
			Help: "1 while a shard has been unable to publish for longer than stall_timeout (readiness fails), else 0."}, []string{"table", "shard"}),
		streamGaps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_stream_gaps_total",
			Help: "Times a table's stream was disabled: changes made until it was enabled again are not captured by DynamoDB (data loss)."}, []string{"table"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_skipped_total",
			Help: "Stream records older than the table's start position (start_position latest), read and not published."}, []string{"table"}),
		describeCalls: prometheus.NewCounter(prometheus.CounterOpts{Name: "ddb2delta_producer_describe_stream_calls_total",
			Help: "DescribeStream calls this replica made (only the replica listing a table's shards makes them)."}),
		describeThrottles: prometheus.NewCounter(prometheus.CounterOpts{Name: "ddb2delta_producer_describe_stream_throttles_total",
			Help: "DescribeStream calls answered LimitExceeded (retried)."}),
		snapshotRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_snapshot_rows_total",
			Help: "Items read by a snapshot scan and published (committed) as op=r events."}, []string{"table"}),
		snapshotUnits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_producer_snapshot_read_units_total",
			Help: "Read capacity units consumed by snapshot scans."}, []string{"table"}),
		snapshotRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_producer_snapshot_segments_remaining",
			Help: "Snapshot segments not finished yet (0 once the snapshot is complete)."}, []string{"table"}),
	}
	m.after = func(d time.Duration, f func()) { time.AfterFunc(d, f) }
	m.claims = map[[2]string]uint64{}
	reg.MustRegister(m.records, m.bytes, m.getRecords, m.commit, m.throttles, m.dataLoss, m.deadLetters, m.shardsActive, m.lastCommit, m.recordAge, m.shardStalled, m.streamGaps, m.skipped, m.describeCalls, m.describeThrottles,
		m.snapshotRows, m.snapshotUnits, m.snapshotRemaining)
	return m
}

// The series below are created at zero as soon as their labels are known: a table's when the
// producer starts, a shard's when it is claimed. A dashboard then shows every table from the first
// scrape, and increase() sees a counter's first event (a series born at 1 has no increase).
// Gauges whose zero would be a false reading (a commit timestamp, a record age) are left unset
// until they are measured.

// initTable creates the series of a configured table.
func (m *Metrics) initTable(t Table) {
	for _, v := range []*prometheus.CounterVec{m.bytes, m.throttles, m.deadLetters, m.streamGaps, m.skipped, m.snapshotRows, m.snapshotUnits} {
		v.WithLabelValues(t.Name)
	}
	m.getRecords.WithLabelValues(t.Name)
	m.commit.WithLabelValues(t.Name)
	m.shardsActive.WithLabelValues(t.Name)
	if t.Snapshot == nil || !t.Snapshot.Initial {
		// Nothing to load; a table with an initial snapshot reports its segments once planned.
		m.snapshotRemaining.WithLabelValues(t.Name)
	}
}

// initShard creates the series of a shard this replica has claimed. The stalled gauge keeps its
// value: a shard restarted after failures may be stalled already.
func (m *Metrics) initShard(table, shard string) {
	m.mu.Lock()
	m.claims[[2]string{table, shard}]++
	m.mu.Unlock()
	m.records.WithLabelValues(table, shard)
	m.dataLoss.WithLabelValues(table, shard)
	m.shardStalled.WithLabelValues(table, shard)
}

// releaseShard drops the series of a shard this replica stopped reading (finished, or its lease
// went to another replica), so that a long-running producer does not export every shard it ever
// read (a shard lives about four hours). Its gauges go at once: a frozen record age or commit
// time of a shard read elsewhere, or no longer at all, is a false reading (the record age alert
// would fire on it forever, a dashboard's checkpoint age would grow without end). Its counters go
// after releasedCounterRetention, unless the shard is claimed again meanwhile, so that increase()
// sees their last increments (a data loss counted just before the release still alerts). Its
// stalled gauge belongs to the stall tracker (stalls.forget).
func (m *Metrics) releaseShard(table, shard string) {
	m.lastCommit.DeleteLabelValues(table, shard)
	m.recordAge.DeleteLabelValues(table, shard)
	k := [2]string{table, shard}
	m.mu.Lock()
	claim, ok := m.claims[k]
	m.mu.Unlock()
	if !ok {
		return
	}
	m.after(releasedCounterRetention, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.claims[k] != claim {
			return // claimed again: its series are in use
		}
		delete(m.claims, k)
		m.records.DeleteLabelValues(table, shard)
		m.dataLoss.DeleteLabelValues(table, shard)
	})
}
