package streamsfake

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go"

	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

var (
	_ streams.API = (*Stream)(nil)
	_ streams.API = (*Account)(nil)
)

// t0 is the start of every test clock.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func isThrottled(err error) bool {
	var le *types.LimitExceededException
	return errors.As(err, &le)
}

func isNotFound(err error) bool {
	var nf *types.ResourceNotFoundException
	return errors.As(err, &nf)
}

func isValidation(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "ValidationException"
}

func describe(t testing.TB, api streams.API, in *dynamodbstreams.DescribeStreamInput) *types.StreamDescription {
	t.Helper()
	out, err := api.DescribeStream(testCtx(t), in)
	if err != nil {
		t.Fatalf("DescribeStream: %v", err)
	}
	return out.StreamDescription
}

func iter(t testing.TB, api streams.API, arn, shard string) *string {
	t.Helper()
	out, err := api.GetShardIterator(testCtx(t), &dynamodbstreams.GetShardIteratorInput{
		StreamArn: aws.String(arn), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatalf("GetShardIterator %s: %v", shard, err)
	}
	return out.ShardIterator
}

// readShard reads a shard from its oldest record until the end of a closed shard or the last
// record of an open one, and reports whether it reached a closed shard's end.
func readShard(t testing.TB, api streams.API, arn, shard string) (recs []types.Record, ended bool) {
	t.Helper()
	it := iter(t, api, arn, shard)
	for it != nil {
		out, err := api.GetRecords(testCtx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it})
		if err != nil {
			t.Fatalf("GetRecords %s: %v", shard, err)
		}
		recs = append(recs, out.Records...)
		if len(out.Records) == 0 && out.NextShardIterator != nil {
			return recs, false
		}
		it = out.NextShardIterator
	}
	return recs, true
}

// readLineage reads every shard of a stream, each parent before its children (as the producer
// does), and returns the records in that order with the shard each came from.
func readLineage(t testing.TB, api streams.API, arn string) (recs []types.Record, from []string) {
	t.Helper()
	d, err := streams.Describe(testCtx(t), api, arn)
	if err != nil {
		t.Fatal(err)
	}
	done := map[string]bool{}
	for {
		ready := streams.Readable(d.Shards, done)
		if len(ready) == 0 {
			return recs, from
		}
		for _, sh := range ready {
			rs, _ := readShard(t, api, arn, sh.ID)
			for _, r := range rs {
				recs = append(recs, r)
				from = append(from, sh.ID)
			}
			done[sh.ID] = true // open shards are leaves: done too
		}
	}
}

func seqOf(r types.Record) string { return aws.ToString(r.Dynamodb.SequenceNumber) }
