//go:build integration

package proc

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// streamTable creates a table keyed by "id" with a stream, deleted when the test ends, and returns
// its stream ARN.
func streamTable(t *testing.T, ctx context.Context, ddb *dynamodb.Client, name string, view types.StreamViewType) string {
	t.Helper()
	out, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
		StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: view},
	})
	if err != nil {
		t.Fatalf("creating table %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	})
	return aws.ToString(out.TableDescription.LatestStreamArn)
}

// producerEnv is the environment a producer binary needs to reach the stack.
func producerEnv(s *stacktest.Stack) []string {
	return append(AWSEnv(s), "DDB2DELTA_PRODUCER_KAFKA_BROKERS="+s.KafkaAddr, "DDB2DELTA_PRODUCER_SCHEMA_REGISTRY_URL="+s.RegistryURL,
		"DDB2DELTA_PRODUCER_DYNAMODB_ENDPOINT="+s.DynamoDBURL)
}

// streamEventIDs reads the streams directly: the independent account of what must be published.
func streamEventIDs(t *testing.T, ctx context.Context, s *stacktest.Stack, arns ...string) map[string]bool {
	t.Helper()
	cl := dynamodbstreams.NewFromConfig(s.AWSConfig(), func(o *dynamodbstreams.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	want := map[string]bool{}
	for _, arn := range arns {
		recs, err := stacktest.ReadStream(ctx, cl, arn)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			want[aws.ToString(r.EventID)] = true
		}
	}
	return want
}

// consumeExactlyOnce reads topics read_committed until every stream record of want has arrived,
// failing at the first duplicate or unknown record. each is called with every event.
func consumeExactlyOnce(t *testing.T, ctx context.Context, s *stacktest.Stack, topics []string, want map[string]bool, each func(*ddbavro.Event)) int {
	t.Helper()
	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	dec := serde.NewDecoder(serde.NewRegistry(srcl, slog.New(slog.DiscardHandler)))
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string]int{}
	stacktest.Eventually(t, 2*time.Minute, "every stream record in the topics", func() error {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			ev, _, err := dec.Decode(ctx, r.Value)
			if err != nil {
				t.Fatalf("decoding %s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
			}
			id := aws.ToString(ev.Source.EventID)
			if got[id]++; got[id] > 1 {
				t.Fatalf("stream record %s (sequence %s) duplicated, again at %s[%d]@%d",
					id, aws.ToString(ev.Source.SequenceNumber), r.Topic, r.Partition, r.Offset)
			}
			if !want[id] {
				t.Fatalf("record %s at %s[%d]@%d is not in the stream", id, r.Topic, r.Partition, r.Offset)
			}
			if each != nil {
				each(ev)
			}
		})
		if len(got) < len(want) {
			return fmt.Errorf("%d of %d records", len(got), len(want))
		}
		return nil
	})
	return len(got)
}

// pause waits d as part of a test's schedule (a chaos timetable, not a wait for a condition).
func pause(t *testing.T, ctx context.Context, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-timer.C:
	}
}
