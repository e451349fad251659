// Package run is the enricher's consume-transform-produce loop, exactly once through Kafka
// transactions.
//
// One transactional consumer group session per replica (franz-go's GroupTransactSession, whose
// offset commits carry the group's generation, KIP-447): each poll is one transaction holding the
// batch's outputs, its dead letters and the input offsets after it. Either all of it commits or
// none of it does, and then the session rewinds to the last committed offsets and the batch is
// read again. A replica that lost its partitions in a rebalance cannot commit (the commit is
// refused for the old generation and the transaction aborted), and a replica restarted with the
// same transactional id fences its previous incarnation, aborting its open transaction. With
// read_committed input and RequireStableFetchOffsets, a new owner of a partition waits for a
// pending commit to settle before reading its offset (RequireStable, always on in franz-go).
package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/pipeline"
	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/platform/fault"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
)

// Config is the loop's configuration.
type Config struct {
	Kafka              []kgo.Opt
	Group              string
	TransactionalID    string
	TransactionTimeout time.Duration
	MaxPollRecords     int
}

// Loop consumes, transforms and produces until ctx is done.
type Loop struct {
	cfg      Config
	engine   *pipeline.Engine
	metrics  *Metrics
	progress *health.Progress
	log      *slog.Logger
}

// New returns the loop.
func New(cfg Config, e *pipeline.Engine, m *Metrics, progress *health.Progress, log *slog.Logger) *Loop {
	return &Loop{cfg: cfg, engine: e, metrics: m, progress: progress, log: log}
}

// sessionTimeout is the consumer group session timeout: how long a silent replica keeps its
// partitions, and so about how long a rebalance can wait for a replica that died.
const sessionTimeout = 10 * time.Second

// Run runs sessions until ctx is done; on SIGTERM (ctx cancelled) the batch in hand is committed
// or aborted, then the group is left so the partitions move at once. A session that fails (a
// transaction the broker aborted after its timeout, a coordinator lost) is replaced by a new one,
// whose transactional id fences the old; the process does not exit for it.
func (l *Loop) Run(ctx context.Context) error {
	b := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		l.log.Error("the transactional session failed; starting a new one", "error", err)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return nil
		}
	}
}

// session runs one transactional session until ctx is done or it fails.
func (l *Loop) session(ctx context.Context) error {
	sess, err := kgo.NewGroupTransactSession(append(l.cfg.Kafka[:len(l.cfg.Kafka):len(l.cfg.Kafka)],
		kgo.ConsumerGroup(l.cfg.Group),
		kgo.ConsumeTopics(l.engine.Inputs()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(l.cfg.TransactionalID),
		kgo.TransactionTimeout(l.cfg.TransactionTimeout),
		kgo.SessionTimeout(sessionTimeout),
		// The lag of partitions that went to another replica stops being exported here.
		kgo.OnPartitionsRevoked(l.metrics.forgetPartitions),
		kgo.OnPartitionsLost(l.metrics.forgetPartitions),
	)...)
	if err != nil {
		return fmt.Errorf("creating the transactional session: %w", err)
	}
	defer sess.Close()
	b := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for {
		fs := sess.PollRecords(ctx, l.cfg.MaxPollRecords)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			l.log.Warn("fetching", "topic", t, "partition", p, "error", err)
		})
		var recs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		l.lag(fs)
		if len(recs) == 0 {
			continue
		}
		committed, err := l.transact(ctx, sess, recs)
		switch {
		case errors.Is(err, pipeline.ErrTransient):
			l.log.Warn("a batch could not be processed; it will be read again", "records", len(recs), "error", err)
			if backoff.Sleep(ctx, b.Next()) != nil {
				return nil
			}
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case committed:
			b.Reset()
			l.progress.Advanced()
		}
	}
}

// transact processes one batch in one transaction.
func (l *Loop) transact(ctx context.Context, sess *kgo.GroupTransactSession, recs []*kgo.Record) (bool, error) {
	start := time.Now()
	if err := sess.Begin(); err != nil {
		return false, fmt.Errorf("beginning a transaction: %w", err)
	}
	// Processing and producing finish even when ctx is cancelled (SIGTERM), within bounds, so
	// that the batch in hand commits instead of being redone by the next owner.
	work, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.TransactionTimeout)
	defer cancel()
	out, err := l.engine.Process(work, recs)
	if err != nil {
		if _, aerr := sess.End(work, kgo.TryAbort); aerr != nil {
			return false, fmt.Errorf("aborting after %v: %w", err, aerr)
		}
		l.metrics.transactions.WithLabelValues("aborted").Inc()
		return false, err
	}
	produceErr := sess.ProduceSync(work, out...).FirstErr()
	fault.Point(fault.EnricherInTransaction)
	end := kgo.TryCommit
	if produceErr != nil {
		end = kgo.TryAbort
	}
	// Ending may wait for a rebalance to settle (a replica that died holds its partitions until its
	// session times out): it gets that long on top of the transaction's own bound.
	endCtx, cancelEnd := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.TransactionTimeout+2*sessionTimeout)
	defer cancelEnd()
	committed, err := sess.End(endCtx, end)
	if err != nil {
		l.metrics.transactions.WithLabelValues("failed").Inc()
		return false, fmt.Errorf("ending the transaction: %w", err)
	}
	if produceErr != nil {
		l.metrics.transactions.WithLabelValues("aborted").Inc()
		return false, fmt.Errorf("%w: producing: %v", pipeline.ErrTransient, produceErr)
	}
	if !committed {
		// A rebalance took partitions away mid-batch: the new owners redo it.
		l.metrics.transactions.WithLabelValues("aborted").Inc()
		l.log.Info("transaction aborted by a rebalance; the batch is redone by the partitions' owners", "records", len(recs))
		return false, nil
	}
	l.metrics.transactions.WithLabelValues("committed").Inc()
	l.metrics.latency.Observe(time.Since(start).Seconds())
	l.metrics.records.Add(float64(len(recs)))
	return true, nil
}

// lag publishes each fetched partition's distance from its high watermark.
func (l *Loop) lag(fs kgo.Fetches) {
	var total int64
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		lag := max(0, p.HighWatermark-(p.Records[len(p.Records)-1].Offset+1))
		l.metrics.lag.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(lag))
		total += lag + int64(len(p.Records))
	})
	l.progress.SetPending(total)
}

// forgetPartitions drops the lag of partitions this replica no longer reads (revoked, lost, or
// left with the group). Frozen at its last value, a moved partition's lag would be counted twice
// in a sum, and would keep the job's lag above 0 once the input goes quiet: the "not committing"
// alert (lag above 0 and no commits for 10 minutes) would fire.
func (m *Metrics) forgetPartitions(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
	for topic, ps := range parts {
		for _, p := range ps {
			m.lag.DeleteLabelValues(topic, strconv.Itoa(int(p)))
		}
	}
}

// Metrics are the loop's metrics.
type Metrics struct {
	transactions *prometheus.CounterVec
	latency      prometheus.Histogram
	records      prometheus.Counter
	lag          *prometheus.GaugeVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_enricher_transactions_total",
			Help: "Transactions by result: committed, aborted (redone), failed."}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ddb2delta_enricher_transaction_seconds",
			Help: "Time from a batch's first record in hand to its transaction committed.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "ddb2delta_enricher_records_committed_total",
			Help: "Input records whose outputs and offsets were committed."}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_enricher_lag_records",
			Help: "Records between the last fetched offset and the high watermark, per input partition."}, []string{"topic", "partition"}),
	}
	// Every result from the start, so increase() sees the first failure (a series born at 1 has
	// no increase).
	for _, r := range []string{"committed", "aborted", "failed"} {
		m.transactions.WithLabelValues(r)
	}
	reg.MustRegister(m.transactions, m.latency, m.records, m.lag)
	return m
}
