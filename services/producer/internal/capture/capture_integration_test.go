//go:build integration

package capture

import (
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/lease"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

type fixture struct {
	t      testing.TB
	s      *stacktest.Stack
	ddb    *dynamodb.Client
	api    *dynamodbstreams.Client
	reg    *serde.Registry
	table  string
	prefix string
	log    *slog.Logger // the captures' logger; nil: testLog
}

func newFixture(t testing.TB) *fixture {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, time.Minute)
	cfg := s.AWSConfig()
	f := &fixture{t: t, s: s,
		ddb:    dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) }),
		api:    dynamodbstreams.NewFromConfig(cfg, func(o *dynamodbstreams.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) }),
		table:  fmt.Sprintf("capture_%d", time.Now().UnixNano()),
		prefix: fmt.Sprintf("stacktest%d", time.Now().UnixNano()),
	}
	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	f.reg = serde.NewRegistry(srcl, slog.New(slog.DiscardHandler))
	_, err = f.ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(f.table),
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: types.ScalarAttributeTypeN},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange},
		},
		BillingMode:         types.BillingModePayPerRequest,
		StreamSpecification: &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	})
	if err != nil {
		t.Fatalf("creating table: %v", err)
	}
	t.Cleanup(func() {
		_, _ = f.ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(f.table)})
	})
	return f
}

func (f *fixture) config() Config {
	return Config{
		TopicPrefix: f.prefix, Partitions: 3, Replication: 1,
		CheckpointTopic: f.prefix + ".producer.checkpoints", DeadLetterTopic: f.prefix + ".dlq.producer",
		ReplicaID: "test", Rescan: 300 * time.Millisecond,
		Poll:   streams.Polling{MinInterval: 20 * time.Millisecond, MaxIdle: 100 * time.Millisecond},
		Tables: []Table{{Name: f.table, Encoding: ddbavro.Typed}},
		Kafka:  []kgo.Opt{kgo.SeedBrokers(f.s.KafkaAddr)},
	}
}

// leases returns a coordinator on a lease table of this test's own.
func (f *fixture) leases() *lease.Coordinator {
	table := f.prefix + "_leases"
	f.t.Cleanup(func() {
		_, _ = f.ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	return lease.New(f.ddb, lease.Config{Table: table, Owner: "test", Duration: 2 * time.Second}, slog.New(slog.DiscardHandler))
}

// start runs a capture until the returned stop is called; stop waits for it to return.
func (f *fixture) start(ctx context.Context) (stop func()) {
	stop, _ = f.startWith(ctx, f.config(), prometheus.NewRegistry())
	return stop
}

// startWith runs a capture of cfg, its metrics in reg, until stop is called.
func (f *fixture) startWith(ctx context.Context, cfg Config, reg *prometheus.Registry) (stop func(), c *Capture) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	log := f.log
	if log == nil {
		log = testLog(f.t)
	}
	c = New(cfg, f.reg, f.api, f.ddb, f.leases(), NewMetrics(reg), log)
	go func() { done <- c.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("capture: %v", err)
		}
	}, c
}

func key(pk string, sk int) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}, "sk": &types.AttributeValueMemberN{Value: fmt.Sprint(sk)}}
}

func item(pk string, sk int, attrs map[string]types.AttributeValue) map[string]types.AttributeValue {
	it := key(pk, sk)
	for k, v := range attrs {
		it[k] = v
	}
	return it
}

func (f *fixture) put(ctx context.Context, it map[string]types.AttributeValue) {
	if _, err := f.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(f.table), Item: it}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) update(ctx context.Context, pk string, sk int, amount string) {
	if _, err := f.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(f.table), Key: key(pk, sk),
		UpdateExpression:          aws.String("SET amount = :a"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":a": &types.AttributeValueMemberN{Value: amount}}}); err != nil {
		f.t.Fatal(err)
	}
}

// TestCaptureEveryChangeOnceInOrder writes inserts, updates, deletes, a batch write and a
// transaction, stops the producer gracefully in the middle and starts it again, and checks that the
// topic (read_committed) holds every stream record exactly once, in per-key order, with images
// equal to the table's state.
func TestCaptureEveryChangeOnceInOrder(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 3*time.Minute)
	stop := f.start(ctx)

	for i := range 5 {
		f.put(ctx, item(fmt.Sprintf("a%d", i), i, map[string]types.AttributeValue{
			"amount": &types.AttributeValueMemberN{Value: "12.50"}, "tags": &types.AttributeValueMemberSS{Value: []string{"x"}}}))
	}
	f.update(ctx, "a0", 0, "13")
	f.update(ctx, "a0", 0, "14.25")
	f.update(ctx, "a1", 1, "99999999999999999999999999999999999999")
	if _, err := f.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(f.table), Key: key("a2", 2)}); err != nil {
		t.Fatal(err)
	}
	var batch []types.WriteRequest
	for i := range 25 {
		batch = append(batch, types.WriteRequest{PutRequest: &types.PutRequest{Item: item(fmt.Sprintf("b%d", i), i, map[string]types.AttributeValue{
			"blob": &types.AttributeValueMemberB{Value: []byte{byte(i)}}, "ünïcode attr": &types.AttributeValueMemberS{Value: "漢"}})}})
	}
	if _, err := f.ddb.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{f.table: batch}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Update: &types.Update{TableName: aws.String(f.table), Key: key("a3", 3), UpdateExpression: aws.String("SET nested = :m"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
				"l": &types.AttributeValueMemberL{Value: []types.AttributeValue{&types.AttributeValueMemberNULL{Value: true}}}}}}}},
		{Put: &types.Put{TableName: aws.String(f.table), Item: item("c0", 0, nil)}},
		{Delete: &types.Delete{TableName: aws.String(f.table), Key: key("a4", 4)}},
	}}); err != nil {
		t.Fatal(err)
	}
	// Stop gracefully once the first 37 changes are in, write while it is down, start again.
	topic := f.prefix + ".cdc." + f.table
	f.consume(ctx, topic, 37)
	stop()
	f.put(ctx, item("d0", 0, nil))
	f.update(ctx, "a0", 0, "15")
	stop = f.start(ctx)
	defer stop()

	events := f.consume(ctx, topic, 39)
	counts := map[string]int{}
	for _, e := range events {
		counts[e.ev.Op]++
	}
	if counts["c"] != 32 || counts["u"] != 5 || counts["d"] != 2 {
		t.Fatalf("ops %v, want 32 inserts, 5 updates, 2 removes", counts)
	}
	f.checkAgainstTable(ctx, events)
}

type received struct {
	ev        *ddbavro.Event
	key       string
	partition int32
	offset    int64
}

// consume reads the topic from the start, read_committed, until it holds want records, then checks
// that no more arrive within a second and that no stream record appears twice.
func (f *fixture) consume(ctx context.Context, topic string, want int) []received {
	f.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.s.KafkaAddr), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		f.t.Fatal(err)
	}
	defer cl.Close()
	dec := serde.NewDecoder(f.reg)
	var out []received
	seen := map[string]bool{}
	poll := func(pctx context.Context) {
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			ev, _, err := dec.Decode(ctx, r.Value)
			if err != nil {
				f.t.Fatalf("decoding %s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
			}
			id := aws.ToString(ev.Source.EventID)
			if ev.Op == "r" { // a snapshot row: once per item and snapshot position
				id = "r/" + string(r.Key) + "/" + aws.ToString(ev.Source.SequenceNumber)
			}
			if seen[id] {
				f.t.Fatalf("stream record %s (sequence %s) appears twice; second at partition %d offset %d",
					id, aws.ToString(ev.Source.SequenceNumber), r.Partition, r.Offset)
			}
			seen[id] = true
			out = append(out, received{ev: ev, key: string(r.Key), partition: r.Partition, offset: r.Offset})
		})
	}
	stacktest.Eventually(f.t, 90*time.Second, fmt.Sprintf("%d records in %s", want, topic), func() error {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		poll(pctx)
		if len(out) < want {
			return fmt.Errorf("%d records so far", len(out))
		}
		return nil
	})
	quiet, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	poll(quiet)
	if len(out) != want {
		f.t.Fatalf("topic holds %d records, want exactly %d", len(out), want)
	}
	return out
}

// checkAgainstTable checks per-key order (one partition per key, increasing sequence numbers) and
// that each key's last event leaves the item as the table holds it.
func (f *fixture) checkAgainstTable(ctx context.Context, events []received) {
	f.t.Helper()
	last := map[string]received{}
	for _, e := range events {
		k := e.key
		if prev, ok := last[k]; ok {
			if prev.partition != e.partition {
				f.t.Fatalf("key %q in partitions %d and %d", k, prev.partition, e.partition)
			}
			a, _ := new(big.Int).SetString(aws.ToString(prev.ev.Source.SequenceNumber), 10)
			b, _ := new(big.Int).SetString(aws.ToString(e.ev.Source.SequenceNumber), 10)
			if a.Cmp(b) >= 0 {
				f.t.Fatalf("key %q: sequence %s after %s", k, b, a)
			}
		}
		last[k] = e
	}
	for _, e := range last {
		keys := map[string]types.AttributeValue{}
		img := e.ev.After
		if img == nil {
			img = e.ev.Before
		}
		keys["pk"], keys["sk"] = img["pk"], img["sk"]
		got, err := f.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(f.table), Key: keys, ConsistentRead: aws.Bool(true)})
		if err != nil {
			f.t.Fatal(err)
		}
		want, err := ddbavro.CanonicalItem(got.Item)
		if err != nil {
			f.t.Fatal(err)
		}
		if e.ev.Op == "d" {
			if len(got.Item) != 0 {
				f.t.Fatalf("last event of %v is a remove but the table holds %v", keys, got.Item)
			}
			continue
		}
		if !reflect.DeepEqual(e.ev.After, want) {
			f.t.Fatalf("last image of %s differs from the table:\n got %#v\nwant %#v", strings.TrimSpace(fmt.Sprint(keys)), e.ev.After, want)
		}
	}
}

// TestCaptureFollowsAReenabledStream disables the table's stream and enables it again (a new
// stream ARN) while the producer runs: the records of both streams are published, each once.
func TestCaptureFollowsAReenabledStream(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 4*time.Minute)
	topic := f.prefix + ".cdc." + f.table
	streams := []string{f.latestStream(ctx)}
	stop := f.start(ctx)
	for i := range 3 {
		f.put(ctx, item(fmt.Sprintf("old%d", i), i, nil))
	}
	f.consume(ctx, topic, 3)

	// While the producer runs: a backlog on the old stream and an update of "x" at its end, then
	// the stream is re-enabled (new ARN) and "x" deleted on the new stream. The producer lags on
	// the old stream; the delete must still come after the update.
	written := 3
	f.put(ctx, item("x", 1, nil))
	written += f.backlog(ctx, "lag1", 400) + 1
	f.update(ctx, "x", 1, "1")
	streams = append(streams, f.reenable(ctx))
	f.deleteItem(ctx, "x", 1)
	f.put(ctx, item("y", 1, nil))
	written += 3
	f.consume(ctx, topic, written)
	stop()

	// While the producer is down: more on that stream, re-enabled again, and "x" written and
	// deleted on the third stream. After the restart the second stream's unread tail (found with
	// ListStreams: this process never saw it) is published first.
	written += f.backlog(ctx, "lag2", 400)
	f.update(ctx, "y", 1, "2")
	streams = append(streams, f.reenable(ctx))
	f.put(ctx, item("x", 1, nil))
	f.deleteItem(ctx, "y", 1)
	written += 3
	stop = f.start(ctx)
	defer stop()
	events := f.consume(ctx, topic, written)
	f.checkAgainstTable(ctx, events)

	// In every partition, no record of a stream comes before a record of an older one.
	rank := map[string]int{}
	for i, a := range streams {
		rank[a] = i
	}
	last := map[int32]int{}
	perStream := map[int]int{}
	for _, e := range events {
		r, ok := rank[aws.ToString(e.ev.Source.StreamArn)]
		if !ok {
			t.Fatalf("event from unknown stream %s", aws.ToString(e.ev.Source.StreamArn))
		}
		perStream[r]++
		if r < last[e.partition] {
			t.Fatalf("partition %d: a record of stream %d (%s) at offset %d follows a record of stream %d",
				e.partition, r, aws.ToString(e.ev.Source.SequenceNumber), e.offset, last[e.partition])
		}
		last[e.partition] = r
	}
	if len(perStream) != 3 {
		t.Fatalf("records per stream %v, want records from all three", perStream)
	}
}

// latestStream returns the table's current stream ARN.
func (f *fixture) latestStream(ctx context.Context) string {
	out, err := f.ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(f.table)})
	if err != nil {
		f.t.Fatal(err)
	}
	return aws.ToString(out.Table.LatestStreamArn)
}

// reenable disables the table's stream and enables it again (a new ARN), and returns the new ARN.
func (f *fixture) reenable(ctx context.Context) string {
	old := f.latestStream(ctx)
	for _, enabled := range []bool{false, true} {
		spec := &types.StreamSpecification{StreamEnabled: aws.Bool(enabled)}
		if enabled {
			spec.StreamViewType = types.StreamViewTypeNewAndOldImages
		}
		if _, err := f.ddb.UpdateTable(ctx, &dynamodb.UpdateTableInput{TableName: aws.String(f.table), StreamSpecification: spec}); err != nil {
			f.t.Fatalf("setting stream enabled=%v: %v", enabled, err)
		}
	}
	arn := f.latestStream(ctx)
	if arn == old {
		f.t.Fatalf("re-enabling the stream kept its ARN %s", arn)
	}
	return arn
}

// backlog writes n items with BatchWriteItem and returns n.
func (f *fixture) backlog(ctx context.Context, pk string, n int) int {
	for i := 0; i < n; i += 25 {
		var reqs []types.WriteRequest
		for j := i; j < min(i+25, n); j++ {
			reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: item(pk, j, nil)}})
		}
		if _, err := f.ddb.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{f.table: reqs}}); err != nil {
			f.t.Fatal(err)
		}
	}
	return n
}

func (f *fixture) deleteItem(ctx context.Context, pk string, sk int) {
	if _, err := f.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(f.table), Key: key(pk, sk)}); err != nil {
		f.t.Fatal(err)
	}
}

// testLog logs to the test's output when DDB2DELTA_TEST_LOG is set, and nowhere otherwise.
func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("DDB2DELTA_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestGapSnapshotAfterReenable: with snapshot.after_stream_gap, changes made while the table's
// stream was disabled (lost by DynamoDB) reach the topic as a snapshot taken before the new stream
// is published: folding the topic gives the table.
func TestGapSnapshotAfterReenable(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 4*time.Minute)
	cfg := f.config()
	cfg.Tables[0].Snapshot = &Snapshot{AfterGap: true, ID: "initial", Segments: 2, PageSize: 100, CapacityShare: 1, OnDemandCapacity: 1000, Consistent: true}
	stop, _ := f.startWith(ctx, cfg, prometheus.NewRegistry())
	defer stop()
	topic := cfg.TopicPrefix + ".cdc." + f.table
	f.put(ctx, item("a", 1, map[string]types.AttributeValue{"v": &types.AttributeValueMemberN{Value: "1"}}))
	f.put(ctx, item("b", 1, nil))
	f.consume(ctx, topic, 2)

	if _, err := f.ddb.UpdateTable(ctx, &dynamodb.UpdateTableInput{TableName: aws.String(f.table),
		StreamSpecification: &types.StreamSpecification{StreamEnabled: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	// Lost by DynamoDB: no stream is enabled.
	f.update(ctx, "a", 1, "2")
	f.put(ctx, item("c", 1, nil))
	if _, err := f.ddb.UpdateTable(ctx, &dynamodb.UpdateTableInput{TableName: aws.String(f.table),
		StreamSpecification: &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages}}); err != nil {
		t.Fatal(err)
	}
	// The snapshot: a, b and c as they are.
	events := f.consume(ctx, topic, 5)
	snap := 0
	for _, e := range events {
		if e.ev.Op == "r" {
			snap++
		}
	}
	if snap != 3 {
		t.Fatalf("%d snapshot rows after the gap, want 3: %+v", snap, events)
	}
	f.put(ctx, item("d", 1, nil)) // on the new stream, published after the snapshot
	events = f.consume(ctx, topic, 6)
	f.checkAgainstTable(ctx, events)
}
