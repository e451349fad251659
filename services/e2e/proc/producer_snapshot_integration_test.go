//go:build integration

package proc

import (
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestProducerSnapshotUnderKillsAndWrites loads a table of 1,200 items with a snapshot shared by
// two producer replicas, paced slowly enough that the replicas are killed with SIGKILL (four times,
// at random moments) while it runs, and while items are updated, deleted and inserted. Afterwards,
// read read_committed:
//   - every item never written during the run has exactly one snapshot row (op r), no item has two;
//   - in every partition, every snapshot row precedes every stream change;
//   - every stream record is in the topic exactly once;
//   - folding the topic per key by (sequence number, stream over snapshot) — the sink's mirror
//     rule — gives exactly the table's final Scan: no snapshot row overwrote a newer change.
func TestProducerSnapshotUnderKillsAndWrites(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 6*time.Minute)
	bins := Build(t, s.Root, "producer")
	ddb := dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	table := fmt.Sprintf("snap_%d", time.Now().UnixNano())
	prefix := fmt.Sprintf("snaptest%d", time.Now().UnixNano())
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(prefix + "_producer_leases")})
	})
	arn := streamTable(t, ctx, ddb, table, types.StreamViewTypeNewAndOldImages)

	const preloaded, untouched = 1200, 600 // items 0..599 are never written during the run
	pad := strings.Repeat("p", 400)
	for i := 0; i < preloaded; i += 25 {
		var reqs []types.WriteRequest
		for j := i; j < i+25; j++ {
			reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: map[string]types.AttributeValue{
				"id": &types.AttributeValueMemberS{Value: fmt.Sprintf("item-%04d", j)}, "n": &types.AttributeValueMemberN{Value: strconv.Itoa(j)},
				"pad": &types.AttributeValueMemberS{Value: pad}}}})
		}
		out, err := ddb.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{table: reqs}})
		if err != nil || len(out.UnprocessedItems) > 0 {
			t.Fatalf("preloading: %v (%d unprocessed)", err, len(out.UnprocessedItems))
		}
	}

	// About 180 read units at 10 per second: the snapshot takes well over ten seconds.
	conf := filepath.Join(t.TempDir(), "producer.yaml")
	body := fmt.Sprintf(`topic_prefix: %s
topics: {partitions: 3, replication_factor: 1}
polling: {min_interval: 20ms, max_idle: 100ms}
rescan_interval: 500ms
leases: {duration: 2s}
tables:
  - name: %s
    snapshot: {enabled: true, segments: 4, page_size: 20, capacity_share: 1, on_demand_capacity: 10}
`, prefix, table)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := producerEnv(s)
	addrs := map[string]string{"a": FreeAddr(t), "b": FreeAddr(t)}
	start := func(replica string) *Process {
		return Start(t, "producer-"+replica, bins["producer"], []string{"-config", conf}, append(env,
			"DDB2DELTA_PRODUCER_HTTP_LISTEN="+addrs[replica], "DDB2DELTA_PRODUCER_REPLICA_ID="+replica))
	}

	writes := make(chan error, 1)
	writeCtx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	go func() {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
		for i := 0; writeCtx.Err() == nil; i++ {
			id := fmt.Sprintf("item-%04d", untouched+rng.IntN(preloaded-untouched))
			var err error
			switch i % 4 {
			case 0, 1:
				_, err = ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table),
					Key:              map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}},
					UpdateExpression: aws.String("SET n = :n, w = :w"),
					ExpressionAttributeValues: map[string]types.AttributeValue{
						":n": &types.AttributeValueMemberN{Value: strconv.Itoa(100000 + i)}, ":w": &types.AttributeValueMemberS{Value: "written"}}})
			case 2:
				_, err = ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table),
					Key: map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}}})
			case 3:
				_, err = ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]types.AttributeValue{
					"id": &types.AttributeValueMemberS{Value: fmt.Sprintf("new-%d", i)}, "n": &types.AttributeValueMemberN{Value: strconv.Itoa(i)}}})
			}
			if err != nil && writeCtx.Err() == nil {
				writes <- err
				return
			}
		}
		writes <- nil
	}()

	procs := map[string]*Process{"a": start("a"), "b": start("b")}
	// The kills start once the snapshot is publishing, so that they interrupt it.
	stacktest.Eventually(t, time.Minute, "snapshot rows committed", func() error {
		if metricSum(t, addrs["a"], "ddb2delta_producer_snapshot_rows_total")+metricSum(t, addrs["b"], "ddb2delta_producer_snapshot_rows_total") == 0 {
			return fmt.Errorf("no snapshot row yet")
		}
		return nil
	})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	midSnapshot := 0
	for kill := range 4 {
		pause(t, ctx, time.Duration(500+rng.IntN(1500))*time.Millisecond)
		victim := []string{"a", "b"}[rng.IntN(2)]
		p := procs[victim]
		if p.Exited() {
			t.Fatalf("producer %s exited on its own before kill %d:\n%s", victim, kill, p.Output())
		}
		if max(remaining(addrs["a"]), remaining(addrs["b"])) > 0 {
			midSnapshot++
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		procs[victim] = start(victim)
	}
	stopWrites()
	if err := <-writes; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if midSnapshot < 2 {
		t.Fatalf("only %d of 4 kills hit a replica with snapshot segments left: the test did not exercise resumption", midSnapshot)
	}

	wantStream := streamEventIDs(t, ctx, s, arn)
	final := scanTable(t, ctx, ddb, table)
	f := newFolder(t, s, prefix+".cdc."+table)
	stacktest.Eventually(t, 3*time.Minute, "the topic folds to the table", func() error {
		f.poll(ctx)
		for i := range untouched {
			if id := fmt.Sprintf("item-%04d", i); f.snapshotRows[id] != 1 {
				return fmt.Errorf("untouched %s has %d snapshot rows", id, f.snapshotRows[id])
			}
		}
		if len(f.streamIDs) < len(wantStream) {
			return fmt.Errorf("%d of %d stream records", len(f.streamIDs), len(wantStream))
		}
		return f.matches(final)
	})
	for id := range f.streamIDs {
		if !wantStream[id] {
			t.Fatalf("event %s is not in the stream", id)
		}
	}
	units := 0.0
	for _, a := range addrs {
		units += metricSum(t, a, "ddb2delta_producer_snapshot_read_units_total")
	}
	t.Logf("%d items at the start, %d kills (%d mid-snapshot), %d stream records and %d snapshot rows, each once; %d items in the final table equal the fold; read units reported by the last processes: %.0f",
		preloaded, 4, midSnapshot, len(wantStream), f.snapshots, len(final), units)
	for _, p := range procs {
		if _, err := p.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
			t.Error(err)
		}
	}
}

// remaining reads a replica's snapshot_segments_remaining gauge; -1 when it has not reported one.
func remaining(addr string) float64 {
	_, body, err := Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`(?m)^ddb2delta_producer_snapshot_segments_remaining\{[^}]*\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// metricSum adds up every series of a metric on a replica's /metrics (0 while it does not answer).
func metricSum(t *testing.T, addr, name string) float64 {
	t.Helper()
	_, body, err := Get("http://" + addr + "/metrics")
	if err != nil {
		return 0 // not listening yet
	}
	sum := 0.0
	for _, m := range regexp.MustCompile(`(?m)^`+name+`(?:\{[^}]*\})? (\S+)$`).FindAllStringSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

// scanTable returns every item of a table by id, numbers canonical.
func scanTable(t *testing.T, ctx context.Context, ddb *dynamodb.Client, table string) map[string]map[string]types.AttributeValue {
	t.Helper()
	out := map[string]map[string]types.AttributeValue{}
	p := dynamodb.NewScanPaginator(ddb, &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			c, err := ddbavro.CanonicalItem(it)
			if err != nil {
				t.Fatal(err)
			}
			out[it["id"].(*types.AttributeValueMemberS).Value] = c
		}
	}
	return out
}

// folder reads a topic read_committed and keeps, per key, the event of greatest rank: sequence
// number, then a stream change over a snapshot row.
type folder struct {
	t            *testing.T
	cl           *kgo.Client
	dec          *serde.Decoder
	latest       map[string]*ddbavro.Event
	snapshotRows map[string]int
	streamIDs    map[string]bool
	snapshots    int
	streamFrom   map[int32]int64 // partition → offset of its first stream change
}

func newFolder(t *testing.T, s *stacktest.Stack, topic string) *folder {
	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &folder{t: t, cl: cl, dec: serde.NewDecoder(serde.NewRegistry(srcl, slog.New(slog.DiscardHandler))),
		latest: map[string]*ddbavro.Event{}, snapshotRows: map[string]int{}, streamIDs: map[string]bool{}, streamFrom: map[int32]int64{}}
}

func rank(ev *ddbavro.Event) (*big.Int, int) {
	n, ok := new(big.Int).SetString(aws.ToString(ev.Source.SequenceNumber), 10)
	if !ok {
		n = big.NewInt(-1)
	}
	if ev.Source.Snapshot {
		return n, 0
	}
	return n, 1
}

func (f *folder) poll(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	f.cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
		ev, _, err := f.dec.Decode(ctx, r.Value)
		if err != nil {
			f.t.Fatalf("decoding %s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		img := ev.After
		if img == nil {
			img = ev.Before
		}
		id := img["id"].(*types.AttributeValueMemberS).Value
		if from, ok := f.streamFrom[r.Partition]; ok && ev.Source.Snapshot {
			f.t.Fatalf("snapshot row of %s at %s[%d]@%d comes after a stream change at offset %d: the snapshot must precede the stream",
				id, r.Topic, r.Partition, r.Offset, from)
		}
		if _, ok := f.streamFrom[r.Partition]; !ok && !ev.Source.Snapshot {
			f.streamFrom[r.Partition] = r.Offset
		}
		if ev.Source.Snapshot {
			f.snapshots++
			if f.snapshotRows[id]++; f.snapshotRows[id] > 1 {
				f.t.Fatalf("item %s has a second snapshot row at %s[%d]@%d", id, r.Topic, r.Partition, r.Offset)
			}
		} else {
			eid := aws.ToString(ev.Source.EventID)
			if f.streamIDs[eid] {
				f.t.Fatalf("stream record %s (item %s) duplicated at %s[%d]@%d", eid, id, r.Topic, r.Partition, r.Offset)
			}
			f.streamIDs[eid] = true
		}
		if old := f.latest[id]; old != nil {
			on, os := rank(old)
			nn, ns := rank(ev)
			if c := nn.Cmp(on); c < 0 || (c == 0 && ns <= os) {
				return
			}
		}
		f.latest[id] = ev
	})
}

// matches compares the fold with the table's items.
func (f *folder) matches(table map[string]map[string]types.AttributeValue) error {
	live := 0
	for id, ev := range f.latest {
		want, ok := table[id]
		if ev.Op == "d" {
			if ok {
				return fmt.Errorf("item %s is in the table but its newest event is a delete (sequence %s)", id, aws.ToString(ev.Source.SequenceNumber))
			}
			continue
		}
		live++
		if !ok {
			return fmt.Errorf("item %s is gone from the table but its newest event is op %s (sequence %s, snapshot %v)", id, ev.Op, aws.ToString(ev.Source.SequenceNumber), ev.Source.Snapshot)
		}
		got, err := ddbavro.CanonicalItem(ev.After)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("item %s: newest event (op %s, sequence %s, snapshot %v) has %v, the table %v", id, ev.Op, aws.ToString(ev.Source.SequenceNumber), ev.Source.Snapshot, got, want)
		}
	}
	if live != len(table) {
		return fmt.Errorf("the fold has %d live items, the table %d", live, len(table))
	}
	return nil
}
