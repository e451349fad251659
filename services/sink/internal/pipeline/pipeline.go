// Package pipeline runs the sink: it consumes the configured topics as a consumer group
// (read_committed), decodes each record once, routes it to every table its topic feeds, and
// commits each table's buffered changes when a batch limit is reached (rows, bytes or age).
//
// Exactly once. A table's commit holds its rows and, per topic-partition, the last offset written
// (a Delta txn action). When partitions are assigned, consumption starts at the lowest next offset
// the tables fed by the partition hold (the earliest offset for a table that holds none), and a
// table skips the offsets it already holds. So a crash at any instant (before or after the Parquet
// write, between the Delta commit and the Kafka offset commit) and any rebalance leave each
// change in each table exactly once. Kafka's committed offsets are only advanced afterwards, for
// lag monitoring; correctness does not depend on them.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/fault"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

// Table is one destination table and the topics feeding it.
type Table struct {
	Name   string
	Topics []string
	Writer writer.TableWriter
}

// Direct adapts a Delta writer: its table's txn actions make every commit settle itself.
func Direct(w *writer.Writer) writer.TableWriter { return direct{w} }

type direct struct{ *writer.Writer }

func (d direct) Load(ctx context.Context, _ map[string][]int32) error { return d.Writer.Load(ctx) }
func (d direct) Revoke(map[string][]int32)                            {}

// Batch bounds a table's buffer.
type Batch struct {
	MaxRows  int
	MaxBytes int
	MaxAge   time.Duration
}

// Config is what the pipeline needs.
type Config struct {
	Group       string
	DeadLetters string
	Batch       Batch
	Tables      []Table
	Kafka       []kgo.Opt // base client options (brokers, TLS, SASL)
}

// Pipeline is the sink's main loop.
type Pipeline struct {
	cfg      Config
	dec      *serde.Decoder
	dlq      *serde.DeadLetterEncoder
	log      *slog.Logger
	metrics  *Metrics
	progress *health.Progress

	byTopic map[string][]*tableState
	tables  []*tableState
	cl      *kgo.Client

	mu       sync.Mutex // guards the buffers and assignments against the rebalance callbacks
	assigned map[string]map[int32]bool
}

type tableState struct {
	Table
	buf    []writer.Change
	bytes  int
	oldest time.Time
}

// New returns a pipeline; Run starts it.
func New(cfg Config, dec *serde.Decoder, dlq *serde.DeadLetterEncoder, m *Metrics, progress *health.Progress, log *slog.Logger) *Pipeline {
	p := &Pipeline{cfg: cfg, dec: dec, dlq: dlq, log: log, metrics: m, progress: progress, byTopic: map[string][]*tableState{},
		assigned: map[string]map[int32]bool{}}
	for _, t := range cfg.Tables {
		ts := &tableState{Table: t}
		p.tables = append(p.tables, ts)
		m.initTable(t.Name)
		for _, topic := range t.Topics {
			p.byTopic[topic] = append(p.byTopic[topic], ts)
		}
	}
	return p
}

// Topics returns every topic consumed, sorted.
func (p *Pipeline) Topics() []string { return slices.Sorted(maps.Keys(p.byTopic)) }

// Run consumes until ctx is done, then commits what is buffered and returns.
func (p *Pipeline) Run(ctx context.Context) error {
	opts := append(slices.Clone(p.cfg.Kafka),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.Topics()...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(p.startOffsets),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.lost),
		kgo.FetchMaxWait(200*time.Millisecond),
		// A replica that crashed holds its partitions until the broker expires its session: keep
		// that short (Kafka's default is 45 s) so a restarted or surviving replica takes over fast.
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating the sink's consumer: %w", err)
	}
	p.cl = cl
	defer cl.Close()
	for {
		wait := p.untilDue()
		pctx, cancel := context.WithTimeout(ctx, wait)
		fetches := cl.PollRecords(pctx, 10000)
		cancel()
		if ctx.Err() != nil {
			// Shutting down: commit what is buffered, with a bounded grace period.
			sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			p.mu.Lock()
			err := p.flush(sctx, true)
			p.mu.Unlock()
			scancel()
			cl.AllowRebalance()
			for _, t := range p.cfg.Tables { // a checkpoint being written is finished, not cut off
				t.Writer.Close()
			}
			return err
		}
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.log.Warn("fetching", "topic", t, "partition", part, "error", err)
			}
		})
		p.mu.Lock()
		err := p.route(ctx, fetches)
		if err == nil {
			err = p.flush(ctx, false)
		}
		p.mu.Unlock()
		cl.AllowRebalance()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A table could not be committed (storage or registry unreachable): drop the buffers and
			// rewind to what the tables hold, so nothing is lost or doubled, then go on.
			p.log.Error("committing a batch failed; resuming from the tables' offsets", "error", err)
			p.metrics.failures.Inc()
			p.rewind(ctx)
			_ = backoff.Sleep(ctx, 2*time.Second)
		}
	}
}

// untilDue returns how long to poll before the oldest buffer is due.
func (p *Pipeline) untilDue() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	wait := p.cfg.Batch.MaxAge
	for _, t := range p.tables {
		if len(t.buf) > 0 {
			wait = min(wait, time.Until(t.oldest.Add(p.cfg.Batch.MaxAge)))
		}
	}
	return max(wait, 10*time.Millisecond)
}

// route decodes fetched records into the buffers of their tables; undecodable records go to the
// dead-letter topic. A registry outage is returned (nothing is buffered from this fetch).
func (p *Pipeline) route(ctx context.Context, fetches kgo.Fetches) error {
	var recs []*kgo.Record
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) > 0 {
			last := fp.Records[len(fp.Records)-1]
			p.metrics.lag.WithLabelValues(fp.Topic, fmt.Sprint(fp.Partition)).Set(float64(max(fp.HighWatermark-last.Offset-1, 0)))
		}
		recs = append(recs, fp.Records...)
	})
	results := p.decodeAll(ctx, recs)
	type decoded struct {
		rec *kgo.Record
		ch  writer.Change
	}
	var out []decoded
	var dead []*kgo.Record
	var reasons []error
	for i, r := range recs {
		d := results[i]
		if d.err != nil {
			if serde.Transient(d.err) {
				return fmt.Errorf("decoding %s[%d]@%d: %w", r.Topic, r.Partition, r.Offset, d.err)
			}
			dead, reasons = append(dead, r), append(reasons, d.err)
			continue
		}
		out = append(out, decoded{rec: r, ch: writer.Change{Event: d.ev, Key: d.key,
			Origin: layout.Origin{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}}})
	}
	if len(dead) > 0 {
		if err := p.deadLetter(ctx, dead, reasons, "decode"); err != nil {
			return err
		}
	}
	now := time.Now()
	for _, d := range out {
		for _, t := range p.byTopic[d.rec.Topic] {
			if len(t.buf) == 0 {
				t.oldest = now
			}
			t.buf = append(t.buf, d.ch)
			t.bytes += len(d.rec.Value)
		}
	}
	pending := 0
	for _, t := range p.tables {
		pending += len(t.buf)
	}
	p.progress.SetPending(int64(pending))
	return nil
}

// flush commits every table whose buffer is due (all of them when force is set). Tables are
// independent (each its own writer, Delta log and layout), so due tables commit concurrently: a
// sink writing a changelog and a mirror uses two cores. If any fails, flush fails after all have
// finished, and Run rewinds every table to what it holds.
func (p *Pipeline) flush(ctx context.Context, force bool) error {
	var due []*tableState
	for _, t := range p.tables {
		if len(t.buf) > 0 && (force || len(t.buf) >= p.cfg.Batch.MaxRows || t.bytes >= p.cfg.Batch.MaxBytes ||
			time.Since(t.oldest) >= p.cfg.Batch.MaxAge) {
			due = append(due, t)
		}
	}
	errs := make([]error, len(due))
	var wg sync.WaitGroup
	for i, t := range due {
		wg.Go(func() { errs[i] = p.commit(ctx, t) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(due) > 0 {
		fault.Point(fault.AfterCommit)
		p.commitOffsets(ctx)
		p.progress.Advanced()
		p.progress.SetPending(0)
	}
	return nil
}

// commit writes one table's buffer.
func (p *Pipeline) commit(ctx context.Context, t *tableState) error {
	start := time.Now()
	age := time.Since(t.oldest)
	res, err := t.Writer.Write(ctx, t.buf, func(rs []writer.Rejected) error {
		recs := make([]*kgo.Record, len(rs))
		errs := make([]error, len(rs))
		for i, r := range rs {
			recs[i] = &kgo.Record{Topic: r.Change.Origin.Topic, Partition: r.Change.Origin.Partition, Offset: r.Change.Origin.Offset}
			errs[i] = fmt.Errorf("table %s: %w", t.Name, r.Err)
		}
		return p.deadLetter(ctx, recs, errs, "mapping")
	})
	if err != nil {
		return fmt.Errorf("table %s: %w", t.Name, err)
	}
	m := p.metrics
	if res.Version >= 0 {
		m.commit.WithLabelValues(t.Name).Observe(time.Since(start).Seconds())
		m.batchAge.WithLabelValues(t.Name).Observe(age.Seconds())
		m.rows.WithLabelValues(t.Name).Add(float64(res.Rows))
		m.rescued.WithLabelValues(t.Name).Add(float64(res.Rescued))
		m.bytes.WithLabelValues(t.Name).Add(float64(res.Bytes))
		if res.LiveFiles >= 0 { // a table written directly: its Delta version and files are known
			m.files.WithLabelValues(t.Name).Set(float64(res.LiveFiles))
			m.version.WithLabelValues(t.Name).Set(float64(res.Version))
		}
		now := time.Now()
		for _, c := range t.buf {
			if !c.Event.Source.ApproximateCreationMs.IsZero() && !c.Event.Source.Snapshot {
				m.latency.WithLabelValues(t.Name).Observe(now.Sub(c.Event.Source.ApproximateCreationMs).Seconds())
			}
		}
	}
	m.skipped.WithLabelValues(t.Name).Add(float64(res.Skipped))
	m.stale.WithLabelValues(t.Name).Add(float64(res.Stale))
	p.log.Debug("committed", "table", t.Name, "version", res.Version, "rows", res.Rows, "files", res.Files, "rewritten", res.Rewritten,
		"skipped", res.Skipped, "took", time.Since(start))
	t.buf, t.bytes = t.buf[:0], 0
	return nil
}

// decodedRecord is a record's event and key, or why it cannot be decoded.
type decodedRecord struct {
	ev  *ddbavro.Event
	key avrov1.Key
	err error
}

// decodeAll decodes records on every core (decoding is a third of the sink's work, and
// independent per record), keeping their order.
func (p *Pipeline) decodeAll(ctx context.Context, recs []*kgo.Record) []decodedRecord {
	out := make([]decodedRecord, len(recs))
	workers := min(runtime.GOMAXPROCS(0), (len(recs)+255)/256)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(recs); i += workers {
				d := &out[i]
				d.ev, _, d.err = p.dec.Decode(ctx, recs[i].Value)
				if d.err == nil {
					d.key, d.err = p.dec.DecodeKey(recs[i].Key)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// deadLetter produces records to the dead-letter topic with their reasons and original bytes,
// and waits until the broker has them.
func (p *Pipeline) deadLetter(ctx context.Context, recs []*kgo.Record, reasons []error, class string) error {
	out := make([]*kgo.Record, 0, len(recs))
	for i, r := range recs {
		dl, err := p.dlq.Record(p.cfg.DeadLetters, "sink", class, reasons[i], r)
		if err != nil {
			return err
		}
		p.log.Error("dead-lettering a record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "class", class, "error", reasons[i])
		out = append(out, dl)
	}
	if err := p.cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
		return fmt.Errorf("producing %d dead letters: %w", len(out), err)
	}
	p.metrics.deadLetters.WithLabelValues(class).Add(float64(len(out)))
	return nil
}

// nextOffsets returns, per topic-partition, the lowest next offset the tables fed by it hold
// (-1: a table holds none, start at the beginning).
func (p *Pipeline) nextOffsets(topic string, partition int32) int64 {
	next := int64(-2)
	for _, t := range p.byTopic[topic] {
		n := t.Writer.NextOffset(topic, partition)
		if next == -2 || n < next {
			next = n
		}
	}
	return next
}

// startOffsets is called when partitions are assigned: consumption starts at what the tables
// hold, not at the group's committed offsets.
func (p *Pipeline) startOffsets(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	parts := map[*tableState]map[string][]int32{} // a table fed by several assigned topics is read once
	for topic, ps := range assigned {
		for _, t := range p.byTopic[topic] {
			if parts[t] == nil {
				parts[t] = map[string][]int32{}
			}
			parts[t][topic] = slices.Sorted(maps.Keys(ps))
		}
	}
	for _, t := range p.tables {
		if parts[t] == nil {
			continue
		}
		if err := t.Writer.Load(ctx, parts[t]); err != nil {
			return nil, fmt.Errorf("reading table %s: %w", t.Name, err)
		}
	}
	for topic, parts := range assigned {
		for part := range parts {
			next := p.nextOffsets(topic, part)
			if next < 0 {
				parts[part] = kgo.NewOffset().AtStart().WithEpoch(-1)
			} else {
				parts[part] = kgo.NewOffset().At(next).WithEpoch(-1)
			}
			if p.assigned[topic] == nil {
				p.assigned[topic] = map[int32]bool{}
			}
			p.assigned[topic][part] = true
			p.log.Info("partition assigned", "topic", topic, "partition", part, "start", next)
		}
	}
	return assigned, nil
}

// revoked commits the buffers before partitions move to another replica (their changes would be
// re-read by it otherwise, which is correct but wasted).
func (p *Pipeline) revoked(ctx context.Context, _ *kgo.Client, parts map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.flush(ctx, true); err != nil {
		p.log.Warn("committing before a rebalance failed; the partitions' new owners re-read those changes", "error", err)
	}
	p.drop(parts)
}

// lost drops the buffered changes of partitions lost without a clean revoke.
func (p *Pipeline) lost(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop(parts)
}

func (p *Pipeline) drop(parts map[string][]int32) {
	for topic, ps := range parts {
		for _, part := range ps {
			delete(p.assigned[topic], part)
			// Its lag is another replica's to report now: frozen here, it would be counted
			// twice in a sum, and would keep the job's lag above 0 once the input goes quiet:
			// the "not committing" alert (lag above 0 and no commits for 10 minutes) would fire.
			p.metrics.lag.DeleteLabelValues(topic, fmt.Sprint(part))
		}
	}
	for _, t := range p.tables {
		t.Writer.Revoke(parts)
		keep := t.buf[:0]
		for _, c := range t.buf {
			if !slices.Contains(parts[c.Origin.Topic], c.Origin.Partition) {
				keep = append(keep, c)
			}
		}
		t.buf = keep
	}
}

// rewind drops every buffer and sets each assigned partition back to what its tables hold.
func (p *Pipeline) rewind(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.tables {
		t.buf, t.bytes = t.buf[:0], 0
		assigned := map[string][]int32{}
		for _, topic := range t.Topics {
			if ps := p.assigned[topic]; len(ps) > 0 {
				assigned[topic] = slices.Sorted(maps.Keys(ps))
			}
		}
		if err := t.Writer.Load(ctx, assigned); err != nil {
			p.log.Warn("reading table", "table", t.Name, "error", err)
		}
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for topic, parts := range p.assigned {
		for part := range parts {
			next := p.nextOffsets(topic, part)
			if next < 0 {
				next = 0
			}
			if offsets[topic] == nil {
				offsets[topic] = map[int32]kgo.EpochOffset{}
			}
			offsets[topic][part] = kgo.EpochOffset{Epoch: -1, Offset: next}
		}
	}
	p.cl.SetOffsets(offsets)
}

// commitOffsets records, for lag monitoring, the lowest next offset the tables hold per assigned
// partition. Failures are logged: correctness does not depend on these offsets.
func (p *Pipeline) commitOffsets(ctx context.Context) {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for topic, parts := range p.assigned {
		for part := range parts {
			if next := p.nextOffsets(topic, part); next >= 0 {
				if offsets[topic] == nil {
					offsets[topic] = map[int32]kgo.EpochOffset{}
				}
				offsets[topic][part] = kgo.EpochOffset{Epoch: -1, Offset: next}
			}
		}
	}
	if len(offsets) == 0 {
		return
	}
	p.cl.CommitOffsets(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil && ctx.Err() == nil {
			p.log.Warn("committing consumer offsets (for lag monitoring)", "error", err)
		}
	})
}
