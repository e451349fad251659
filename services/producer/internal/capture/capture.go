// Package capture runs the producer: for each configured table it follows the table's stream,
// reads every readable shard (parents before children), converts each page of stream records to
// change events and publishes the page and the shard's checkpoint in one Kafka transaction.
//
// Guarantee: every stream record reaches its topic exactly once as a read_committed consumer sees
// it, in shard order, across crashes at any instant (see package publish for why). A record that
// cannot be converted goes to the dead-letter topic, in the same transaction, with the reason.
//
// Replicas share shards through leases (package lease): a replica reads only the shards whose lease
// it holds, and stops reading a shard as soon as it learns its lease was taken. Correctness does not
// depend on that: the new owner's claim fences the old one in Kafka.
package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/changes"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/lease"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/publish"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/snapshot"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

// DynamoDB is the part of the DynamoDB API capture calls: DescribeTable finds a table's current
// stream, Scan reads snapshots.
type DynamoDB interface {
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	snapshot.API
}

// Table is one table to capture.
type Table struct {
	Name      string
	StreamARN string // "" follows the table's current stream
	Encoding  ddbavro.Encoding
	Snapshot  *Snapshot // nil: no snapshot
	// StartLatest skips the changes the table's streams hold when the producer first captures
	// the table (start_position latest); false reads them from the trim horizon.
	StartLatest bool
}

// ErrViewType is returned (wrapped) for a stream whose view type has no new image: every
// ddb2delta sink mode (mirror, changelog) needs the item after each change.
var ErrViewType = errors.New("unusable stream view type")

// checkViewType fails for the view types that carry no new image.
func checkViewType(table, arn, viewType string) error {
	switch viewType {
	case "KEYS_ONLY", "OLD_IMAGE":
		return fmt.Errorf("%w: the stream %s of table %s has view type %s; the sink's mirror and changelog need the item after each change: "+
			"set the table's StreamViewType to NEW_AND_OLD_IMAGES (or NEW_IMAGE)", ErrViewType, arn, table, viewType)
	}
	return nil
}

// checkTables refuses to start when a table's current stream has a view type the sinks cannot use.
// Other failures (a table not there yet, DynamoDB unreachable) are left to the table loops, which
// retry.
func (c *Capture) checkTables(ctx context.Context) error {
	for _, t := range c.cfg.Tables {
		if t.StreamARN != "" {
			d, err := streams.Describe(ctx, c.api, t.StreamARN)
			if err == nil {
				err = checkViewType(t.Name, t.StreamARN, d.ViewType)
			}
			if errors.Is(err, ErrViewType) {
				return err
			}
			continue
		}
		out, err := c.tables.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(t.Name)})
		if err != nil || out.Table.StreamSpecification == nil || !aws.ToBool(out.Table.StreamSpecification.StreamEnabled) {
			continue
		}
		if err := checkViewType(t.Name, aws.ToString(out.Table.LatestStreamArn), string(out.Table.StreamSpecification.StreamViewType)); err != nil {
			return err
		}
	}
	return nil
}

// Config is what Capture needs.
type Config struct {
	TopicPrefix     string
	Partitions      int32
	Replication     int16
	CheckpointTopic string
	DeadLetterTopic string
	ReplicaID       string
	Rescan          time.Duration
	Poll            streams.Polling
	MaxMessageBytes int // largest record written (topics.max_message_bytes)
	// CheckpointPartitions is the partition count of the checkpoint topic when the producer
	// creates it (an existing topic keeps its own).
	CheckpointPartitions int32
	StallTimeout         time.Duration // a shard without progress this long fails readiness
	// DescribeRate bounds this replica's DescribeStream calls per second; FullListing is how often
	// a stream's shards are listed in full (in between, only children of finished shards).
	DescribeRate float64
	FullListing  time.Duration
	Tables       []Table
	Kafka        []kgo.Opt // base client options (brokers, TLS, SASL)
}

// Capture is the producer's main loop.
type Capture struct {
	cfg     Config
	log     *slog.Logger
	reg     *serde.Registry
	api     streams.API
	tables  DynamoDB
	metrics *Metrics
	leases  *lease.Coordinator
	stalls  *stalls
	limits  *messageLimits
	kafka   []kgo.Opt // cfg.Kafka with per-topic batch limits

	discovery *streams.Discovery
}

// New returns a capture; Run starts it. It runs the lease coordinator too.
func New(cfg Config, reg *serde.Registry, api streams.API, tables DynamoDB, leases *lease.Coordinator, m *Metrics, log *slog.Logger) *Capture {
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = 8 << 20
	}
	if cfg.CheckpointPartitions == 0 {
		cfg.CheckpointPartitions = 12
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = 2 * time.Minute
	}
	if cfg.DescribeRate == 0 {
		cfg.DescribeRate = 5
	}
	if cfg.FullListing == 0 {
		cfg.FullListing = 10 * time.Minute
	}
	c := &Capture{cfg: cfg, log: log, reg: reg, api: api, tables: tables, leases: leases, metrics: m,
		stalls: newStalls(cfg.StallTimeout, m.shardStalled, log), discovery: streams.NewDiscovery(api, cfg.DescribeRate, cfg.FullListing)}
	for _, t := range cfg.Tables {
		m.initTable(t)
	}
	c.discovery.Calls = func() { m.describeCalls.Inc() }
	c.discovery.Throttled = func() { m.describeThrottles.Inc() }
	leases.SetAccept(c.accepts)
	leases.SetPinned(func(key string) bool { return strings.HasPrefix(key, "lister|") })
	return c
}

// accepts reports whether a lease belongs to a table this producer captures: a shard of one of
// its streams, its lister lease or one of its snapshot's leases. Others (a table removed from the
// configuration) are left alone.
func (c *Capture) accepts(key string) bool {
	arn, _, ok := lease.Split(key)
	if !ok {
		return false
	}
	for _, t := range c.cfg.Tables {
		tc := tableCapture{t: t}
		if tc.ownsStream(arn) || key == tc.listerKey() || strings.HasPrefix(arn, snapshotStream(t.Name, "")) {
			return true
		}
	}
	return false
}

// Ready is the readiness check of the shards: it fails while any shard has been unable to publish
// for longer than the stall timeout.
func (c *Capture) Ready(ctx context.Context) error { return c.stalls.Check(ctx) }

// Run captures every table until ctx is done. Start-up steps (topics, lease table, dead-letter
// schema) are retried with backoff while their dependency fails, so a registry or broker hiccup
// at start-up delays the producer instead of crash-looping it; per-table and per-shard failures are
// retried too. It returns an error only for a client that cannot be built from the configuration.
func (c *Capture) Run(ctx context.Context) error {
	admCl, err := kgo.NewClient(c.cfg.Kafka...)
	if err != nil {
		return fmt.Errorf("creating kafka admin client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	c.limits = newMessageLimits(adm, c.cfg.MaxMessageBytes)
	c.kafka = append(slices.Clip(c.cfg.Kafka), kgo.ProducerBatchMaxBytesFn(c.limits.known))
	var dlq *serde.DeadLetterEncoder
	var cpPartitions int32
	b := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		var err error
		cpPartitions, err = publish.EnsureCheckpointTopic(ctx, adm, c.cfg.CheckpointTopic, c.cfg.CheckpointPartitions, c.cfg.Replication)
		if err == nil {
			err = ensureTopic(ctx, adm, c.cfg.DeadLetterTopic, c.cfg.Partitions, c.cfg.Replication, c.limits.topicConfigs(nil))
		}
		if err == nil {
			_, err = c.limits.limit(ctx, c.cfg.DeadLetterTopic)
		}
		if err == nil {
			err = c.leases.EnsureTable(ctx)
		}
		if err == nil {
			err = c.leases.Register(ctx)
			if errors.Is(err, lease.ErrDuplicateReplica) {
				return err
			}
		}
		if err == nil {
			dlq, err = serde.NewDeadLetterEncoder(ctx, c.reg, c.cfg.DeadLetterTopic)
		}
		if err == nil {
			break
		}
		c.log.Warn("starting up; retrying", "error", err)
		if err := backoff.Sleep(ctx, b.Next()); err != nil {
			return nil // shut down before starting
		}
	}
	cps, err := publish.NewCheckpoints(c.cfg.Kafka, c.cfg.CheckpointTopic, cpPartitions, c.cfg.ReplicaID, c.log)
	if err != nil {
		return err
	}
	if err := c.checkTables(ctx); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return cps.Run(gctx) })
	g.Go(func() error {
		select {
		case err := <-c.leases.Fatal():
			return err // another process took this replica's id
		case <-gctx.Done():
			return nil
		}
	})
	for b.Reset(); ; {
		err := cps.CheckPartitions(gctx)
		if errors.Is(err, publish.ErrPartitionsChanged) {
			cancel()
			_ = g.Wait()
			return err
		}
		if err == nil {
			break
		}
		c.log.Warn("starting up: reading the checkpoint topic; retrying", "error", err)
		if err := backoff.Sleep(gctx, b.Next()); err != nil {
			return g.Wait()
		}
	}
	// The coordinator outlives the shard readers: it releases their leases once they have stopped.
	leaseCtx, stopLeases := context.WithCancel(context.WithoutCancel(ctx))
	leasesDone := make(chan error, 1)
	go func() { leasesDone <- c.leases.Run(leaseCtx) }()
	defer func() { stopLeases(); <-leasesDone }()
	for _, t := range c.cfg.Tables {
		tc := &tableCapture{c: c, t: t, adm: adm, cps: cps, dlq: dlq, topic: c.cfg.TopicPrefix + ".cdc." + t.Name, snapsDone: map[string]bool{}}
		if t.Snapshot != nil && t.Snapshot.Initial {
			tc.snap = &snapshotState{stream: snapshotStream(t.Name, t.Snapshot.ID)}
		}
		g.Go(func() error { tc.run(gctx); return nil })
	}
	return g.Wait()
}

func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, replication int16, configs map[string]*string) error {
	resp, err := adm.CreateTopic(ctx, partitions, replication, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	return nil
}

type tableCapture struct {
	c     *Capture
	t     Table
	adm   *kadm.Client
	cps   *publish.Checkpoints
	dlq   *serde.DeadLetterEncoder
	topic string

	schema    changes.Table   // key schema and view type, for every stream of the table
	snapsDone map[string]bool // snapshots (by pseudo stream) known to be finished
	origin    time.Time       // start_position latest: records stamped before it are not published
	known     []string        // the table's streams not known to be drained, oldest first
	latest    string          // the table's latest stream when last looked up
	listed    bool            // ListStreams has been called

	encMu sync.Mutex // the encoder evolves the table's schema: one shard at a time
	enc   *serde.TableEncoder
	runs  int // shard runs started, to tell a stale completion from the current run's
	snap  *snapshotState
}

type shardDone struct {
	key      string // lease key: stream ARN + shard
	run      int    // which run of the shard: a stale completion must not stop a newer run
	finished bool
	err      error
}

type shardRun struct {
	cancel context.CancelFunc
	run    int
}

// run follows the table's streams until ctx is done, starting a reader for every readable shard
// whose lease this replica holds. A stream that is disabled and enabled again gets a new ARN: the
// new stream is followed as soon as the table reports it, and the old one until its shards are
// read to their end (or it is gone).
func (tc *tableCapture) run(ctx context.Context) {
	log := tc.c.log.With("table", tc.t.Name)
	running := map[string]shardRun{} // by lease key (stream ARN + shard)
	finished := map[string]bool{}    // by lease key
	done := make(chan shardDone)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(tc.c.cfg.Rescan)
	defer tick.Stop()
	acquired := tc.c.leases.Subscribe()
	listing := false
	for {
		if err := tc.prepare(ctx); err != nil {
			log.Error("preparing table; retrying", "error", err)
		} else {
			// A table's snapshot runs before its stream is read, so that in every partition an
			// item's snapshot row precedes its stream changes (see snapshot.go).
			tc.snap = tc.nextSnapshot()
			tc.snapshotStep(ctx, running, finished, done, &wg, log)
			if tc.snap == nil || tc.snap.done {
				// One replica, the holder of the table's lister lease, lists its streams and
				// shards and creates the leases of the readable ones (in a loop of its own: its
				// paced DescribeStream calls must not delay readers); every replica reads the
				// shards whose lease it holds.
				if !listing {
					listing = true
					wg.Add(1)
					go func() { defer wg.Done(); tc.listLoop(ctx, log) }()
				}
				tc.startHeld(ctx, running, done, &wg, log)
			}
			// Stop readers whose lease another replica took.
			for key, r := range running {
				if !tc.c.leases.Held(key) {
					log.Info("lease lost; stopping", "lease", key)
					r.cancel()
					delete(running, key)
				}
			}
		}
		tc.c.metrics.shardsActive.WithLabelValues(tc.t.Name).Set(float64(len(running)))
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-acquired:
		case d := <-done:
			if r, ok := running[d.key]; ok && r.run == d.run {
				r.cancel()
				delete(running, d.key)
			}
			switch {
			case d.finished:
				finished[d.key] = true
				log.Info("shard finished", "lease", d.key)
				if err := tc.c.leases.Finish(ctx, d.key); err != nil {
					log.Warn("finishing the shard's lease", "lease", d.key, "error", err)
				}
			}
		}
	}
}

// prepare creates the topic and the encoder once.
func (tc *tableCapture) prepare(ctx context.Context) error {
	if tc.enc != nil {
		return nil
	}
	if err := ensureTopic(ctx, tc.adm, tc.topic, tc.c.cfg.Partitions, tc.c.cfg.Replication, tc.c.limits.topicConfigs(nil)); err != nil {
		return err
	}
	if _, err := tc.c.limits.limit(ctx, tc.topic); err != nil {
		return err
	}
	if err := tc.describeSchema(ctx); err != nil {
		return err
	}
	enc, err := serde.NewTableEncoder(ctx, tc.c.reg, tc.topic, tc.t.Name, tc.t.Encoding)
	if err != nil {
		return err
	}
	if tc.t.StartLatest {
		origin, err := tc.cps.SetOrigin(ctx, tc.t.Name, time.Now())
		if err != nil {
			return err
		}
		// Streams stamp records to the second, rounded down: a record stamped in the origin's
		// second may be later than the origin, so that second is published.
		tc.origin = origin.Truncate(time.Second)
		tc.c.log.Info("start position latest: changes stamped before the table was first captured are not published", "table", tc.t.Name, "from", tc.origin)
	}
	tc.enc = enc
	return nil
}

// startHeld starts a reader for every shard of the table whose lease this replica holds.
func (tc *tableCapture) startHeld(ctx context.Context, running map[string]shardRun, done chan shardDone, wg *sync.WaitGroup, log *slog.Logger) {
	for _, key := range tc.c.leases.HeldKeys() {
		arn, shard, ok := lease.Split(key)
		if !ok || !tc.ownsStream(arn) {
			continue
		}
		if _, ok := running[key]; ok {
			continue
		}
		table := tc.schema
		table.StreamARN = arn
		shardLog := log.With("shard", shard)
		tc.start(ctx, key, shard, running, done, wg, func(ctx context.Context) (bool, error) { return tc.runShard(ctx, table, shard, shardLog) })
	}
}

// describeSchema reads the table's key schema and stream view type, which every reader of its
// shards needs: from DescribeTable, or for a pinned stream from the stream itself.
func (tc *tableCapture) describeSchema(ctx context.Context) error {
	if tc.t.StreamARN != "" {
		d, err := tc.c.discovery.Header(ctx, tc.t.StreamARN)
		if err != nil {
			return err
		}
		tc.schema = changes.Table{Name: tc.t.Name, ViewType: d.ViewType, PartitionKey: d.PartitionKey, SortKey: d.SortKey}
		return nil
	}
	out, err := tc.c.tables.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tc.t.Name)})
	if err != nil {
		return fmt.Errorf("describing table %s: %w", tc.t.Name, err)
	}
	tc.schema = tableSchema(out.Table)
	return nil
}

// tableSchema is what conversion needs of a table: its name, key schema and stream view type.
func tableSchema(d *ddbtypes.TableDescription) changes.Table {
	t := changes.Table{Name: aws.ToString(d.TableName)}
	for _, k := range d.KeySchema {
		if k.KeyType == ddbtypes.KeyTypeHash {
			t.PartitionKey = aws.ToString(k.AttributeName)
		} else {
			t.SortKey = aws.ToString(k.AttributeName)
		}
	}
	if spec := d.StreamSpecification; spec != nil {
		t.ViewType = string(spec.StreamViewType)
	}
	return t
}

func (tc *tableCapture) streamARN(ctx context.Context) (string, error) {
	if tc.t.StreamARN != "" {
		return tc.t.StreamARN, nil
	}
	out, err := tc.c.tables.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tc.t.Name)})
	if err != nil {
		return "", fmt.Errorf("describing table %s: %w", tc.t.Name, err)
	}
	arn := aws.ToString(out.Table.LatestStreamArn)
	if arn == "" || out.Table.StreamSpecification == nil || !aws.ToBool(out.Table.StreamSpecification.StreamEnabled) {
		return "", fmt.Errorf("table %s has no enabled stream: enable DynamoDB Streams on it", tc.t.Name)
	}
	return arn, nil
}

// runShard claims a shard and publishes it page by page until it is finished, ctx is done, or an
// error stops it (the table loop restarts it from its checkpoint).
func (tc *tableCapture) runShard(ctx context.Context, table changes.Table, shard string, log *slog.Logger) (bool, error) {
	cfg := tc.c.cfg
	w, err := publish.NewShardWriter(tc.c.kafka, publish.TransactionalID(cfg.TopicPrefix, table.StreamARN, shard), tc.cps, table.StreamARN, shard, cfg.ReplicaID)
	if err != nil {
		return false, err
	}
	defer w.Close()
	claimed, readBack, err := tc.claim(ctx, w, table.StreamARN, shard)
	if err != nil {
		return false, err
	}
	cp, _ := tc.cps.Get(table.StreamARN, shard)
	if cp.End {
		return true, nil
	}
	tc.c.metrics.initShard(table.Name, shard)
	// How long the claim's transaction and reading it back took: a slow read-back means the
	// checkpoint partition's last stable offset lags (transactions open long in it).
	log.Info("reading shard", "after", cp.After, "claim_s", claimed.Seconds(), "read_back_s", readBack.Seconds())
	m := tc.c.metrics
	events := streams.Events{
		DataLoss:  func(string, string) { m.dataLoss.WithLabelValues(table.Name, shard).Inc() },
		Throttled: func(string) { m.throttles.WithLabelValues(table.Name).Inc() },
		Call: func(_ string, d time.Duration, _ int) {
			m.getRecords.WithLabelValues(table.Name).Observe(d.Seconds())
		},
	}
	r := streams.NewReader(tc.c.api, table.StreamARN, shard, cp.After, cfg.Poll, events, log)
	key := lease.Key(table.StreamARN, shard)
	for {
		if !tc.c.leases.Held(key) {
			// Taken by another replica, or this replica's heartbeat failing: stop reading at once (Streams
			// allows two readers per shard, and the next owner is one).
			log.Info("lease no longer held; stopping", "after", r.After())
			return false, nil
		}
		page, err := r.Next(ctx)
		if errors.Is(err, streams.ErrShardGone) {
			// Aged out of the stream, or the stream was deleted: nothing more can be read.
			log.Warn("shard is gone from its stream; finishing its lease", "after", r.After(), "error", err)
			return true, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
		if len(page.Records) == 0 && !page.End {
			continue
		}
		if !tc.c.leases.Held(key) {
			log.Info("lease no longer held; stopping before publishing", "after", r.After())
			return false, nil
		}
		tc.c.stalls.read(tc.t.Name, shard, len(page.Records))
		records, bytes, err := tc.convert(ctx, table, shard, page)
		if err != nil {
			return false, err
		}
		start := time.Now()
		if err := w.Commit(ctx, records, r.After(), page.End); err != nil {
			return false, err
		}
		m.commit.WithLabelValues(table.Name).Observe(time.Since(start).Seconds())
		m.records.WithLabelValues(table.Name, shard).Add(float64(len(page.Records)))
		m.bytes.WithLabelValues(table.Name).Add(float64(bytes))
		m.lastCommit.WithLabelValues(table.Name, shard).SetToCurrentTime()
		if n := len(page.Records); n > 0 && page.Records[n-1].Dynamodb.ApproximateCreationDateTime != nil {
			m.recordAge.WithLabelValues(table.Name, shard).Set(time.Since(*page.Records[n-1].Dynamodb.ApproximateCreationDateTime).Seconds())
		}
		tc.c.stalls.progressed(tc.t.Name, shard)
		if page.End {
			return true, nil
		}
	}
}

// convert encodes a page. A record that cannot be converted becomes a dead letter; an error from
// the schema registry stops the shard (it is retried from the checkpoint).
func (tc *tableCapture) convert(ctx context.Context, table changes.Table, shard string, page streams.Page) ([]*kgo.Record, int, error) {
	now := time.Now()
	out := make([]*kgo.Record, 0, len(page.Records))
	bytes := 0
	tc.encMu.Lock()
	defer tc.encMu.Unlock()
	skipped := 0
	defer func() {
		if skipped > 0 {
			tc.c.metrics.skipped.WithLabelValues(tc.t.Name).Add(float64(skipped))
		}
	}()
	for _, rec := range page.Records {
		if !tc.origin.IsZero() && rec.Dynamodb != nil && rec.Dynamodb.ApproximateCreationDateTime != nil &&
			rec.Dynamodb.ApproximateCreationDateTime.Before(tc.origin) {
			skipped++ // before the start position: the checkpoint moves past it unpublished
			continue
		}
		ev, key, err := changes.Convert(table, shard, rec, now)
		seq := ""
		if rec.Dynamodb != nil {
			seq = aws.ToString(rec.Dynamodb.SequenceNumber)
		}
		r, n, err := tc.encode(ctx, ev, key, err, now, origin{
			where: table.StreamARN + "/" + shard + "/" + seq, eventID: aws.ToString(rec.EventID),
			keys:  func() ([]byte, error) { return changes.AppendItemJSON(nil, rec.Dynamodb.Keys) },
			whole: func() ([]byte, error) { return changes.RecordJSON(rec) },
		})
		if err != nil {
			return nil, 0, err
		}
		out = append(out, r)
		bytes += n
	}
	return out, bytes, nil
}
