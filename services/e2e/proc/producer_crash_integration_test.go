//go:build integration

package proc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestProducerSurvivesKill9 runs the real producer binary while writes go on, kills it with
// SIGKILL at random moments (five times) and starts it again each time. Afterwards the topic, read
// read_committed, must hold every record of the DynamoDB stream exactly once.
func TestProducerSurvivesKill9(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 5*time.Minute)
	bins := Build(t, s.Root, "producer")
	ddb := dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	table := fmt.Sprintf("crash_%d", time.Now().UnixNano())
	prefix := fmt.Sprintf("crashtest%d", time.Now().UnixNano())
	t.Cleanup(func() { // the lease table the producers create
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(prefix + "_producer_leases")})
	})
	arn := streamTable(t, ctx, ddb, table, types.StreamViewTypeNewAndOldImages)

	conf := filepath.Join(t.TempDir(), "producer.yaml")
	body := fmt.Sprintf("topic_prefix: %s\ntopics: {partitions: 3, replication_factor: 1}\npolling: {min_interval: 20ms, max_idle: 100ms}\nrescan_interval: 500ms\ntables:\n  - name: %s\n", prefix, table)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := producerEnv(s)
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
		pause(t, ctx, time.Duration(300+rng.IntN(1500))*time.Millisecond)
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

	want := streamEventIDs(t, ctx, s, arn)
	if len(want) < w.n || w.n < 10 { // writes overlapped the kills, however slow the machine
		t.Fatalf("the stream holds %d records after %d writes", len(want), w.n)
	}
	got := consumeExactlyOnce(t, ctx, s, []string{prefix + ".cdc." + table}, want, nil)
	t.Logf("5 kills during %d writes: %d stream records, each exactly once in the topic", w.n, got)
}
