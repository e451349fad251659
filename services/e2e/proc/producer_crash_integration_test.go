//go:build integration

package proc

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestProducerSurvivesKill9 runs the real producer binary while writes go on, kills it with
// SIGKILL at random moments (five times) and starts it again each time. Afterwards the topic, read
// read_committed, must hold every record of the DynamoDB stream exactly once.
func TestProducerSurvivesKill9(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 5*time.Minute)
	bins := Build(t, s.Root, "producer")
	cfg := s.AWSConfig()
	ddb := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	table := fmt.Sprintf("crash_%d", time.Now().UnixNano())
	prefix := fmt.Sprintf("crashtest%d", time.Now().UnixNano())
	created, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
		StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})

	conf := filepath.Join(t.TempDir(), "producer.yaml")
	body := fmt.Sprintf("topic_prefix: %s\ntopics: {partitions: 3, replication_factor: 1}\npolling: {min_interval: 20ms, max_idle: 100ms}\nrescan_interval: 500ms\ntables:\n  - name: %s\n", prefix, table)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(awsEnv(s), "DDB2DELTA_PRODUCER_KAFKA_BROKERS="+s.KafkaAddr, "DDB2DELTA_PRODUCER_SCHEMA_REGISTRY_URL="+s.RegistryURL,
		"DDB2DELTA_PRODUCER_DYNAMODB_ENDPOINT="+s.DynamoDBURL, "DDB2DELTA_PRODUCER_DYNAMODB_REGION="+s.Env["STACK_AWS_REGION"])
	start := func() *Process {
		return Start(t, "producer", bins["producer"], []string{"-config", conf}, append(env, "DDB2DELTA_PRODUCER_HTTP_LISTEN="+FreeAddr(t)))
	}

	// The workload: new items and updates of earlier ones, for as long as the kills go on.
	type result struct {
		n   int
		err error
	}
	writes := make(chan result, 1)
	writeCtx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	go func() {
		for i := 0; ; i++ {
			if writeCtx.Err() != nil {
				writes <- result{n: i}
				return
			}
			id := fmt.Sprintf("item-%d", i)
			if i%3 == 2 {
				id = fmt.Sprintf("item-%d", i-1) // update an item written just before
			}
			_, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]types.AttributeValue{
				"id": &types.AttributeValueMemberS{Value: id}, "n": &types.AttributeValueMemberN{Value: fmt.Sprint(i)}}})
			if err != nil {
				writes <- result{n: i, err: err}
				return
			}
		}
	}()

	p := start()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for kill := range 5 {
		// A random moment: mid-page, mid-transaction, or idle, depending on the draw.
		timer := time.NewTimer(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-timer.C:
		}
		if p.Exited() {
			t.Fatalf("producer exited on its own before kill %d:\n%s", kill, p.Output())
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		p = start()
	}
	stopWrites()
	w := <-writes
	if w.err != nil && writeCtx.Err() == nil {
		t.Fatalf("writing: %v", w.err)
	}

	records, err := stacktest.ReadStream(ctx, dynamodbstreams.NewFromConfig(cfg, func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = aws.String(s.DynamoDBURL)
	}), aws.ToString(created.TableDescription.LatestStreamArn))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, r := range records {
		want[aws.ToString(r.EventID)] = true
	}
	if len(want) < w.n || w.n < 10 { // writes overlapped the kills, however slow the machine
		t.Fatalf("the stream holds %d records after %d writes", len(want), w.n)
	}

	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	dec := serde.NewDecoder(serde.NewRegistry(srcl, slog.New(slog.DiscardHandler)))
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr), kgo.ConsumeTopics(prefix+".cdc."+table),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string]int{}
	stacktest.Eventually(t, 2*time.Minute, "every stream record in the topic", func() error {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			ev, _, err := dec.Decode(ctx, r.Value)
			if err != nil {
				t.Fatalf("decoding partition %d offset %d: %v", r.Partition, r.Offset, err)
			}
			id := aws.ToString(ev.Source.EventID)
			got[id]++
			if got[id] > 1 {
				t.Fatalf("stream record %s (sequence %s) duplicated, again at partition %d offset %d",
					id, aws.ToString(ev.Source.SequenceNumber), r.Partition, r.Offset)
			}
			if !want[id] {
				t.Fatalf("record %s is not in the stream", id)
			}
		})
		if len(got) < len(want) {
			return fmt.Errorf("%d of %d records", len(got), len(want))
		}
		return nil
	})
	t.Logf("5 kills during %d writes: %d stream records, each exactly once in the topic", w.n, len(got))
}
