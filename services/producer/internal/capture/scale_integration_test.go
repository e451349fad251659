//go:build integration

package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/benchutil"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/lease"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams/streamsfake"
)

// The scale simulation runs several producer replicas (in this process) against the in-process
// Streams fake with AWS's limits enforced (DescribeStream 10 calls/s for the account, GetRecords
// 5 calls/s and 2 readers per shard, ListStreams 5/s) and a lease table in DynamoDB Local. Shards
// close and split on a compressed schedule (a shard's ~4 hours in seconds), one replica is killed
// (its DynamoDB calls fail and it stops without releasing anything) and one is added while
// records are written. It checks that every record is published once, that no call was
// throttled, and measures how long any readable shard went unread.

type scaleConfig struct {
	shards, replicas int
	lifetime         time.Duration // a shard's life before it closes (AWS: about 4 hours)
	rate             float64       // records written per second, spread over the shards
	run              time.Duration // how long records are written
	lease            time.Duration // leases.duration
	rescan           time.Duration
	// partition cuts the first replica from DynamoDB a third of the way, instead of killing it:
	// it keeps running, and reaching Kafka.
	partition bool
}

type scaleResult struct {
	written, published int
	stats              streamsfake.Stats
	leaseCalls         int64   // lease-table calls by every replica
	readUnits          float64 // lease-table capacity consumed
	writeUnits         float64
	maxUnread          time.Duration   // longest a readable shard went without a GetRecords call
	maxUnreadShard     string          // and which
	childToFirst       []time.Duration // per child shard: creation to its first published record
	childToRead        []time.Duration // per child shard: creation to its first GetRecords call
	parentEndToRead    []time.Duration // per child shard: its parent's end read to its first read
	wall, cpu          time.Duration
	rssBytes           int64 // the process's resident set at the end
	closed, opened     int   // shards rolled over during the run
	cutAt              time.Time
	claimsAfterCut     map[string]int // claims committed after cutAt + 2/3 lease, by owner
}

// countingLeases counts a replica's lease-table calls and the capacity they consume, and fails
// every call while down (the replica was killed).
type countingLeases struct {
	lease.API
	calls *atomic.Int64
	units *capacity
	down  atomic.Bool
}

type capacity struct {
	mu          sync.Mutex
	read, write float64
}

func (c *capacity) add(read, write float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read += read
	c.write += write
}

func consumed(cc *types.ConsumedCapacity) (read, write float64) {
	if cc == nil {
		return 0, 0
	}
	return aws.ToFloat64(cc.ReadCapacityUnits), aws.ToFloat64(cc.WriteCapacityUnits)
}

// units returns the capacity of a call: DynamoDB Local reports only CapacityUnits, so reads and
// writes are told apart by the operation.
func units(cc *types.ConsumedCapacity, write bool) (float64, float64) {
	if cc == nil {
		return 0, 0
	}
	r, w := consumed(cc)
	if r == 0 && w == 0 {
		if write {
			return 0, aws.ToFloat64(cc.CapacityUnits)
		}
		return aws.ToFloat64(cc.CapacityUnits), 0
	}
	return r, w
}

func (c *countingLeases) enter() error {
	c.calls.Add(1)
	if c.down.Load() {
		return errors.New("connection refused (replica killed)")
	}
	return nil
}

func (c *countingLeases) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := c.API.Scan(ctx, in, opts...)
	if err == nil {
		c.units.add(units(out.ConsumedCapacity, false))
	}
	return out, err
}

func (c *countingLeases) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := c.API.GetItem(ctx, in, opts...)
	if err == nil {
		c.units.add(units(out.ConsumedCapacity, false))
	}
	return out, err
}

func (c *countingLeases) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := c.API.PutItem(ctx, in, opts...)
	if err == nil {
		c.units.add(units(out.ConsumedCapacity, true))
	} else {
		c.units.add(0, 1) // a failed condition consumes a write unit too
	}
	return out, err
}

func (c *countingLeases) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := c.API.UpdateItem(ctx, in, opts...)
	if err == nil {
		c.units.add(units(out.ConsumedCapacity, true))
	} else {
		c.units.add(0, 1)
	}
	return out, err
}

func (c *countingLeases) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := c.API.DeleteItem(ctx, in, opts...)
	if err == nil {
		c.units.add(units(out.ConsumedCapacity, true))
	}
	return out, err
}

func (c *countingLeases) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	return c.API.CreateTable(ctx, in, opts...)
}

// simTable answers DescribeTable for the simulated table (its stream is the fake's).
type simTable struct {
	name, arn string
}

func (s simTable) DescribeTable(_ context.Context, in *dynamodb.DescribeTableInput, _ ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	if aws.ToString(in.TableName) != s.name {
		return nil, &types.ResourceNotFoundException{Message: aws.String("no table " + aws.ToString(in.TableName))}
	}
	return &dynamodb.DescribeTableOutput{Table: &types.TableDescription{
		TableName: aws.String(s.name), LatestStreamArn: aws.String(s.arn),
		KeySchema:           []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		StreamSpecification: &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	}}, nil
}

func (s simTable) Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	return nil, errors.New("the simulated table has no snapshot")
}

// readTracker records, per shard, when it was last read and the longest it went unread while
// readable: between two GetRecords calls, or from its creation to its first call once its parent
// was read to its end.
type readTracker struct {
	*streamsfake.Account
	stream *streamsfake.Stream
	now    func() time.Time

	mu      sync.Mutex
	first   map[string]time.Time // shard → first GetRecords call
	last    map[string]time.Time // shard → last GetRecords call
	ended   map[string]bool      // shard → read to its end
	endAt   map[string]time.Time // shard → when its end was read
	parent  map[string]string    // shard → its parent, from the listings the lister saw
	worst   time.Duration
	worstID string
}

func (r *readTracker) GetRecords(ctx context.Context, in *dynamodbstreams.GetRecordsInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error) {
	out, err := r.Account.GetRecords(ctx, in, opts...)
	parts := strings.Split(aws.ToString(in.ShardIterator), "|")
	if len(parts) < 2 {
		return out, err
	}
	shard, now := parts[1], r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.last[shard]; ok {
		r.note(shard, now.Sub(prev))
	} else {
		r.first[shard] = now
	}
	r.last[shard] = now
	if err == nil && out.NextShardIterator == nil {
		if !r.ended[shard] {
			r.endAt[shard] = now
		}
		r.ended[shard] = true
	}
	return out, err
}

func (r *readTracker) DescribeStream(ctx context.Context, in *dynamodbstreams.DescribeStreamInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error) {
	out, err := r.Account.DescribeStream(ctx, in, opts...)
	if err == nil && out.StreamDescription != nil {
		r.mu.Lock()
		for _, sh := range out.StreamDescription.Shards {
			if p := aws.ToString(sh.ParentShardId); p != "" {
				r.parent[aws.ToString(sh.ShardId)] = p
			}
		}
		r.mu.Unlock()
	}
	return out, err
}

// parentEndToRead returns, per child shard, the time from its parent's end being read to its own
// first read: how long discovery and the lease hand-off took.
func (r *readTracker) parentEndToRead() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for child, p := range r.parent {
		end, ok1 := r.endAt[p]
		first, ok2 := r.first[child]
		if ok1 && ok2 {
			out = append(out, max(first.Sub(end), 0))
		}
	}
	slices.Sort(out)
	return out
}

func (r *readTracker) note(shard string, d time.Duration) {
	if d > r.worst {
		r.worst, r.worstID = d, shard
	}
}

// finish accounts for the shards still unread or open at the end: a shard readable since t and
// not read since counts now - t.
func (r *readTracker) finish(open []string) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range open {
		if last, ok := r.last[id]; ok && !r.ended[id] {
			r.note(id, now.Sub(last))
		}
	}
}

// runScale runs the simulation and returns its measurements.
func runScale(t testing.TB, sc scaleConfig) scaleResult {
	f := newFixture(t)
	ctx := stacktest.Context(t, sc.run+5*time.Minute)
	acct := streamsfake.NewAccount(streamsfake.Options{Limits: streamsfake.AWSLimits(), Retention: 3 * sc.lifetime})
	table := f.table + "_sim"
	stream := acct.NewStreamWithShards(table, sc.shards, streamsfake.Sim{
		Lifetime: sc.lifetime, Jitter: sc.lifetime / 4, SplitChance: 0.2, Keys: 50_000, RemoveChance: 0.05, Seed: 7})
	initial := map[string]bool{}
	for _, id := range stream.OpenShards() {
		initial[id] = true
	}
	tracker := &readTracker{Account: acct, stream: stream, now: time.Now, first: map[string]time.Time{}, last: map[string]time.Time{},
		ended: map[string]bool{}, endAt: map[string]time.Time{}, parent: map[string]string{}}
	tables := simTable{name: table, arn: stream.ARN}

	leaseTable := f.prefix + "_leases"
	t.Cleanup(func() {
		_, _ = f.ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(leaseTable)})
	})
	var calls atomic.Int64
	units := &capacity{}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("DDB2DELTA_TEST_LOG") != "" {
		log = testLog(t)
	}
	if path := os.Getenv("DDB2DELTA_SCALE_LOG"); path != "" {
		// The 1,000-shard run's log is too large for the test's: a JSON file to analyse.
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		log = slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	type replica struct {
		leases *countingLeases
		cancel context.CancelFunc
		done   chan error
	}
	start := func(i int) *replica {
		cl := &countingLeases{API: f.ddb, calls: &calls, units: units}
		id := fmt.Sprintf("r%d", i)
		co := lease.New(cl, lease.Config{Table: leaseTable, Owner: id, Duration: sc.lease}, log.With("replica", id))
		cfg := Config{
			TopicPrefix: f.prefix, Partitions: 6, Replication: 1,
			CheckpointTopic: f.prefix + ".producer.checkpoints", DeadLetterTopic: f.prefix + ".dlq.producer",
			ReplicaID: id, Rescan: sc.rescan, DescribeRate: 5, FullListing: 4 * sc.lifetime,
			Poll:   streams.Polling{MinInterval: 250 * time.Millisecond, MaxIdle: time.Second},
			Tables: []Table{{Name: table, Encoding: ddbavro.Document}},
			Kafka:  []kgo.Opt{kgo.SeedBrokers(f.s.KafkaAddr)},
		}
		rctx, cancel := context.WithCancel(ctx)
		r := &replica{leases: cl, cancel: cancel, done: make(chan error, 1)}
		c := New(cfg, f.reg, tracker, tables, co, NewMetrics(prometheus.NewRegistry()), log.With("replica", id))
		go func() { r.done <- c.Run(rctx) }()
		return r
	}

	cpu0 := benchutil.CPUTime()
	began := time.Now()
	var replicas []*replica
	for i := range sc.replicas {
		replicas = append(replicas, start(i))
	}
	written, closed, opened := 0, 0, 0
	tick := time.NewTicker(100 * time.Millisecond)
	killed, added := false, false
	var cutAt time.Time
	carry := 0.0
	last := time.Now()
	for time.Since(began) < sc.run {
		<-tick.C
		now := time.Now()
		c, o := stream.Roll(now)
		closed, opened = closed+c, opened+o
		carry += sc.rate * now.Sub(last).Seconds()
		last = now
		if n := int(carry); n > 0 {
			written += stream.PutRandom(n)
			carry -= float64(n)
		}
		if !killed && time.Since(began) > sc.run/3 {
			// Killed: its DynamoDB calls fail from now on, and it stops without releasing. Or
			// partitioned: its DynamoDB calls fail, and it keeps running.
			replicas[0].leases.down.Store(true)
			cutAt = time.Now()
			if !sc.partition {
				replicas[0].cancel()
			}
			killed = true
		}
		if !added && time.Since(began) > sc.run/2 {
			replicas = append(replicas, start(sc.replicas))
			added = true
		}
	}
	tick.Stop()

	res := scaleResult{written: written, closed: closed, opened: opened, cutAt: cutAt}
	res.published, res.childToFirst = consumeScale(t, ctx, f, stream, initial, written)
	tracker.finish(stream.OpenShards())
	res.wall, res.cpu = time.Since(began), benchutil.CPUTime()-cpu0
	res.rssBytes = rss()
	for _, r := range replicas {
		r.cancel()
	}
	for _, r := range replicas {
		if err := <-r.done; err != nil {
			t.Errorf("replica: %v", err)
		}
	}
	res.stats = acct.Stats()
	res.leaseCalls = calls.Load()
	res.readUnits, res.writeUnits = units.read, units.write
	res.maxUnread, res.maxUnreadShard = tracker.worst, tracker.worstID
	tracker.mu.Lock()
	for shard, at := range tracker.first {
		if born, ok := stream.ShardCreated(shard); ok && !initial[shard] {
			res.childToRead = append(res.childToRead, max(at.Sub(born), 0))
		}
	}
	tracker.mu.Unlock()
	for shard, at := range tracker.first {
		born, _ := stream.ShardCreated(shard)
		parent := tracker.parent[shard]
		log.Debug("sim shard", "shard", shard, "initial", initial[shard], "created", born, "first_read", at, "parent", parent, "parent_end_read", tracker.endAt[parent])
	}
	slices.Sort(res.childToRead)
	res.parentEndToRead = tracker.parentEndToRead()
	res.claimsAfterCut = claimsAfter(t, ctx, f, cutAt.Add(sc.lease*2/3+time.Second))
	return res
}

// claimsAfter counts, by owner, the shard claims committed to the checkpoint topic after at.
func claimsAfter(t testing.TB, ctx context.Context, f *fixture, at time.Time) map[string]int {
	t.Helper()
	topic := f.prefix + ".producer.checkpoints"
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.s.KafkaAddr), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[string]int{}
	read := 0
	// The replicas have stopped: the topic no longer changes. Read until a poll brings nothing.
	stacktest.Eventually(t, time.Minute, "the checkpoint topic read", func() error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		n := 0
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			n++
			if !strings.HasPrefix(string(r.Key), "claim/") || r.Timestamp.Before(at) {
				return
			}
			var c struct {
				Owner string `json:"owner"`
			}
			if json.Unmarshal(r.Value, &c) == nil {
				out[c.Owner]++
			}
		})
		read += n
		if n > 0 || read == 0 {
			return fmt.Errorf("%d records read so far", read)
		}
		return nil
	})
	return out
}

// consumeScale reads the table's topic until every written record is there, failing on a
// duplicate, and returns how many were read and, per child shard, the time from its creation to
// its first published record (the Kafka timestamp of the record).
func consumeScale(t testing.TB, ctx context.Context, f *fixture, stream *streamsfake.Stream, initial map[string]bool, want int) (int, []time.Duration) {
	t.Helper()
	topic := f.prefix + ".cdc." + stream.Table
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.s.KafkaAddr), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	dec := serde.NewDecoder(f.reg)
	seen := make(map[string]bool, want)
	first := map[string]time.Time{}
	stacktest.Eventually(t, 4*time.Minute, fmt.Sprintf("%d records published", want), func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			ev, _, err := dec.Decode(ctx, r.Value)
			if err != nil {
				t.Fatalf("decoding %s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
			}
			id := aws.ToString(ev.Source.EventID)
			if seen[id] {
				t.Fatalf("record %s published twice (partition %d offset %d)", id, r.Partition, r.Offset)
			}
			seen[id] = true
			shard := aws.ToString(ev.Source.ShardID)
			if ts, ok := first[shard]; !ok || r.Timestamp.Before(ts) {
				first[shard] = r.Timestamp
			}
		})
		if len(seen) < want {
			return fmt.Errorf("%d of %d", len(seen), want)
		}
		return nil
	})
	var lat []time.Duration
	for shard, ts := range first {
		if born, ok := stream.ShardCreated(shard); ok && !initial[shard] {
			lat = append(lat, max(ts.Sub(born), 0))
		}
	}
	slices.Sort(lat)
	return len(seen), lat
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// rss returns this process's resident set size.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// TestScaleSimulation: 100 shards rolling over every ~20 s (a 4-hour shard life compressed), three
// replicas, one killed and one added, with AWS's Streams limits enforced: every record published
// once, no call throttled (but a few GetRecords at a handover), no readable shard unread for
// longer than a lease takeover takes.
func TestScaleSimulation(t *testing.T) {
	sc := scaleConfig{shards: 100, replicas: 3, lifetime: 20 * time.Second, rate: 200, run: 60 * time.Second,
		lease: 3 * time.Second, rescan: time.Second}
	res := runScale(t, sc)
	t.Logf("written %d, published %d, shards closed %d opened %d; DescribeStream %d calls (peak %d/s), GetRecords %d, ListStreams %d; lease table %d calls, %.0f RCU %.0f WCU; longest unread %s (%s); child to first record p50 %s p99 %s",
		res.written, res.published, res.closed, res.opened, res.stats.DescribeStream.Calls, res.stats.DescribeStreamPeak,
		res.stats.GetRecords.Calls, res.stats.ListStreams.Calls, res.leaseCalls, res.readUnits, res.writeUnits,
		res.maxUnread, res.maxUnreadShard, percentile(res.childToFirst, 0.5), percentile(res.childToFirst, 0.99))
	if res.published != res.written {
		t.Errorf("published %d of %d records", res.published, res.written)
	}
	if res.closed == 0 {
		t.Errorf("no shard rolled over: the simulation did not exercise lineage")
	}
	for name, cs := range map[string]streamsfake.CallStats{"DescribeStream": res.stats.DescribeStream, "GetRecords": res.stats.GetRecords,
		"ListStreams": res.stats.ListStreams, "GetShardIterator": res.stats.GetShardIterator} {
		// A lease taken for balance is read by its new owner once its previous owner's next
		// scan should have ended (lease.Coordinator: a third of the duration and a tenth); a
		// scan slower than that on a loaded machine lets both read the shard for a moment, and
		// a few GetRecords calls are throttled and retried (CI saw 2 of 14,922). Polling any
		// faster than the limit throttles thousands: allow one in a thousand.
		allowed := int64(0)
		if name == "GetRecords" {
			allowed = cs.Calls / 1000
		}
		if cs.Throttled > allowed {
			t.Errorf("%s: %d of %d calls throttled (at most %d allowed)", name, cs.Throttled, cs.Calls, allowed)
		}
	}
	// A killed replica's shards wait for its leases to expire (the lease duration, as the others
	// observe it from their scans every third of it), then for a reader to start: about 5 s here
	// (4.5 s measured alone). The bound allows for a busy machine (8.2 s was seen with the whole
	// suite running) while still failing for a shard left to a restart backoff or an untaken lease.
	// Beside the other integration packages it was exceeded (13.7 s in CI, lease rounds running
	// slow): make test runs this test alone (scripts/test).
	bound := 3*sc.lease + 2*sc.rescan
	if res.maxUnread > bound {
		t.Errorf("shard %s went unread for %s, longer than a lease takeover (%s)", res.maxUnreadShard, res.maxUnread, bound)
	}
}

// BenchmarkScaleSimulation runs the scale simulation at 1,000 shards and 10 replicas (beside the
// test's 100 shards and 3 replicas as the baseline) and reports, per second of the run: the
// Streams calls (DescribeStream, GetRecords), the lease-table calls and the capacity they
// consume, the p99 time from a child shard's creation to its first published record, and the CPU
// and memory per replica (the replicas run in this process: its CPU time and resident set divided
// by the number of replicas). Each variant runs once whatever b.N: it takes minutes.
func BenchmarkScaleSimulation(b *testing.B) {
	for _, v := range []struct {
		name string
		sc   scaleConfig
	}{
		{"baseline-100shards-3replicas", scaleConfig{shards: 100, replicas: 3, lifetime: 20 * time.Second, rate: 200, run: time.Minute,
			lease: 3 * time.Second, rescan: time.Second}},
		{"1000shards-10replicas", scaleConfig{shards: 1000, replicas: 10, lifetime: 2 * time.Minute, rate: scaleRate(), run: 3 * time.Minute,
			lease: 10 * time.Second, rescan: time.Second}},
	} {
		b.Run(v.name, func(b *testing.B) {
			res := runScale(b, v.sc)
			secs := res.wall.Seconds()
			replicas := float64(v.sc.replicas) // one killed, one added: as many at any time
			b.ReportMetric(float64(res.stats.DescribeStream.Calls)/secs, "describe/s")
			b.ReportMetric(float64(res.stats.GetRecords.Calls)/secs, "getrecords/s")
			b.ReportMetric(float64(res.stats.DescribeStream.Throttled+res.stats.GetRecords.Throttled+res.stats.ListStreams.Throttled), "throttled")
			b.ReportMetric(float64(res.leaseCalls)/secs, "lease-calls/s")
			b.ReportMetric(res.readUnits/secs, "lease-RCU/s")
			b.ReportMetric(res.writeUnits/secs, "lease-WCU/s")
			b.ReportMetric(percentile(res.childToFirst, 0.99).Seconds(), "child-first-p99-s")
			b.ReportMetric(percentile(res.childToFirst, 0.5).Seconds(), "child-first-p50-s")
			b.ReportMetric(res.maxUnread.Seconds(), "max-unread-s")
			b.ReportMetric(percentile(res.childToRead, 0.99).Seconds(), "child-read-p99-s")
			b.ReportMetric(percentile(res.childToRead, 0.5).Seconds(), "child-read-p50-s")
			b.ReportMetric(percentile(res.parentEndToRead, 0.5).Seconds(), "parent-end-to-child-read-p50-s")
			b.ReportMetric(percentile(res.parentEndToRead, 0.99).Seconds(), "parent-end-to-child-read-p99-s")
			b.ReportMetric(res.cpu.Seconds()/secs/replicas, "cpu-cores/replica")
			b.ReportMetric(float64(res.rssBytes)/replicas/(1<<20), "rss-MB/replica")
			b.ReportMetric(float64(res.published)/secs, "records/s")
			if res.published != res.written {
				b.Errorf("published %d of %d", res.published, res.written)
			}
		})
	}
}

// TestReplicaWithoutDynamoDBDoesNotFightItsSuccessor: a replica that loses DynamoDB but keeps
// Kafka stops using its leases before they can expire for the others; its successors take its
// shards, and it commits no claim afterwards (a claim would fence the successor, which would claim
// back: the two would fence each other in turns). Every record is still published once.
func TestReplicaWithoutDynamoDBDoesNotFightItsSuccessor(t *testing.T) {
	sc := scaleConfig{shards: 20, replicas: 2, lifetime: 20 * time.Second, rate: 100, run: 30 * time.Second,
		lease: 3 * time.Second, rescan: time.Second, partition: true}
	res := runScale(t, sc)
	t.Logf("written %d, published %d; claims after the cut by owner: %v; longest unread %s", res.written, res.published, res.claimsAfterCut, res.maxUnread)
	if res.published != res.written {
		t.Errorf("published %d of %d records", res.published, res.written)
	}
	if n := res.claimsAfterCut["r0"]; n > 0 {
		t.Errorf("the replica without DynamoDB claimed %d shards after it should have stopped", n)
	}
	if res.claimsAfterCut["r1"]+res.claimsAfterCut["r2"] == 0 {
		t.Errorf("no successor claimed the cut replica's shards: %v", res.claimsAfterCut)
	}
}

// scaleRate is the 1,000-shard benchmark's write rate: DDB2DELTA_SCALE_RATE records/s, or 250.
// It measures discovery and leases, not throughput: at 1,000 records/s over 1,000 shards every
// shard commits a transaction about every second, which the one broker on this machine's 2 cores
// cannot sustain beside everything else (commits time out, shards back off, and the figures
// measure the broker). Throughput has its own benchmarks.
func scaleRate() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("DDB2DELTA_SCALE_RATE"), 64); err == nil && v > 0 {
		return v
	}
	return 250
}
