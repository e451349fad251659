//go:build integration

package proc

import (
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/ddb2delta/ddb2delta/services/e2e/streamsource"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestProducerReadsTheStreamSource is the smoke run of make bench-e2e's Streams source: the real
// producer binary, pointed at the source by its dynamodb.endpoint alone (its lease table goes
// through the source to DynamoDB Local), publishes a few seconds of generated changes while the
// source's shards roll over and split, under the source's AWS limits. Every generated record must
// be in the topic exactly once, decoded with every attribute type of the generated items.
func TestProducerReadsTheStreamSource(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 4*time.Minute)
	bins := Build(t, s.Root, "producer")
	prefix := fmt.Sprintf("source%d", time.Now().UnixNano())
	table := prefix + "_items"
	src, err := streamsource.New(streamsource.Config{Tables: []string{table}, Rate: 300, Shards: 3, Duration: 4 * time.Second,
		ShardLife: 1500 * time.Millisecond, SplitEvery: 3, Keys: 200, DeleteEvery: 5})
	if err != nil {
		t.Fatal(err)
	}
	upstream, err := url.Parse(s.DynamoDBURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(src.Handler(upstream))
	t.Cleanup(srv.Close)

	conf := filepath.Join(t.TempDir(), "producer.yaml")
	body := fmt.Sprintf("topic_prefix: %s\ntopics: {partitions: 3, replication_factor: 1}\nrescan_interval: 500ms\nleases: {duration: 4s}\n"+
		"tables:\n  - {name: %s, encoding: typed}\n", prefix, table)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
	env := append(AWSEnv(s), "DDB2DELTA_PRODUCER_KAFKA_BROKERS="+s.KafkaAddr, "DDB2DELTA_PRODUCER_SCHEMA_REGISTRY_URL="+s.RegistryURL,
		"DDB2DELTA_PRODUCER_DYNAMODB_ENDPOINT="+srv.URL, "DDB2DELTA_PRODUCER_HTTP_LISTEN="+addr)
	p := Start(t, "producer", bins["producer"], []string{"-config", conf}, env)
	WaitReady(t, p, "http://"+addr)
	src.Begin()
	var prog streamsource.Progress
	stacktest.Eventually(t, time.Minute, "the generation to end", func() error {
		if prog = src.Progress(); !prog.Done {
			return fmt.Errorf("%d records generated", prog.Generated)
		}
		return nil
	})
	if prog.Shards <= 3 {
		t.Fatalf("%d shards: the schedule should have rolled over and split", prog.Shards)
	}

	// The independent account: the stream read to its end by the SDK, not by the producer.
	cl := dynamodbstreams.NewFromConfig(s.AWSConfig(), func(o *dynamodbstreams.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	recs, err := stacktest.ReadStream(ctx, cl, src.StreamARN(table))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, r := range recs {
		want[aws.ToString(r.EventID)] = true
	}
	if uint64(len(want)) != prog.Final {
		t.Fatalf("the stream holds %d records, the source generated %d", len(want), prog.Final)
	}
	attrs := map[string]bool{}
	consumeExactlyOnce(t, ctx, s, []string{prefix + ".cdc." + table}, want, func(ev *ddbavro.Event) {
		for _, img := range []map[string]types.AttributeValue{ev.Before, ev.After} {
			for k := range img {
				attrs[k] = true
			}
		}
	})
	for _, a := range []string{"written_ms", "amount", "big", "active", "gone", "tags", "sizes", "blob", "blobs", "history", "address"} {
		if !attrs[a] {
			t.Errorf("no event carried attribute %s (saw %v)", a, attrs)
		}
	}
	if st := src.Progress().Stats; st.Forwarded == 0 {
		t.Errorf("no call reached DynamoDB Local through the source: where is the lease table? %+v", st)
	}
}
