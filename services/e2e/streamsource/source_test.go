package streamsource

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// clients returns the AWS SDK's own DynamoDB and Streams clients pointed at a source: the
// producer's clients, so the wire format is checked by the deserializers that will read it.
func clients(t *testing.T, src *Source, attempts int) (*dynamodb.Client, *dynamodbstreams.Client) {
	srv := httptest.NewServer(src.Handler(nil))
	t.Cleanup(srv.Close)
	cfg := aws.Config{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}}
	ddb := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	st := dynamodbstreams.NewFromConfig(cfg, func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		// The SDK's retries stay on (a retried GetRecords returns the same page again): under the
		// race detector its client failed now and then reading a page with "use of closed network
		// connection", which a plain HTTP client reading the same responses never did, with or
		// without kept-alive connections; the producer retries such calls the same way.
		o.RetryMaxAttempts = attempts
	})
	return ddb, st
}

func waitDone(t *testing.T, src *Source) Progress {
	t.Helper()
	var p Progress
	stacktest.Eventually(t, 30*time.Second, "the generation's end", func() error {
		if p = src.Progress(); !p.Done {
			return fmt.Errorf("%d records generated", p.Generated)
		}
		return nil
	})
	return p
}

// TestSourceReadsLikeAStream reads a source whose shards roll over and split while it generates,
// the way the producer does (DescribeTable, DescribeStream with paging and CHILD_SHARDS,
// TRIM_HORIZON and AFTER_SEQUENCE_NUMBER iterators, GetRecords pages), and checks that every
// record generated is read once, that each item's changes chain (an old image is the previous
// new image), and that a closed shard ends where its children begin.
func TestSourceReadsLikeAStream(t *testing.T) {
	src, err := New(Config{Tables: []string{"items"}, Rate: 3000, Shards: 3, Duration: 2 * time.Second,
		ShardLife: 700 * time.Millisecond, SplitEvery: 3, Keys: 500, DeleteEvery: 4, GetRecordsPerShard: -1, DescribeStreamPerSecond: -1})
	if err != nil {
		t.Fatal(err)
	}
	ddb, api := clients(t, src, 5)
	ctx := context.Background()
	tbl, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("items")})
	if err != nil {
		t.Fatal(err)
	}
	arn := aws.ToString(tbl.Table.LatestStreamArn)
	if arn != src.StreamARN("items") || string(tbl.Table.StreamSpecification.StreamViewType) != "NEW_AND_OLD_IMAGES" {
		t.Fatalf("DescribeTable: stream %q view %v", arn, tbl.Table.StreamSpecification.StreamViewType)
	}
	if _, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("other")}); err == nil {
		t.Fatal("DescribeTable of a table the source does not serve succeeded without an upstream")
	}
	ls, err := api.ListStreams(ctx, &dynamodbstreams.ListStreamsInput{TableName: aws.String("items")})
	if err != nil || len(ls.Streams) != 1 || aws.ToString(ls.Streams[0].StreamArn) != arn {
		t.Fatalf("ListStreams: %v %+v", err, ls)
	}
	src.Begin()
	p := waitDone(t, src)
	if p.Final < 5000 || p.Shards <= 3 {
		t.Fatalf("generated %d records in %d shards, want ~6,000 in more than 3", p.Final, p.Shards)
	}

	// List every shard, two per page, and check the children filter agrees with the parents.
	var shards []types.Shard
	var start *string
	for {
		out, err := api.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), Limit: aws.Int32(2), ExclusiveStartShardId: start})
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, out.StreamDescription.Shards...)
		if start = out.StreamDescription.LastEvaluatedShardId; start == nil {
			break
		}
	}
	if len(shards) != p.Shards {
		t.Fatalf("DescribeStream listed %d shards, progress says %d", len(shards), p.Shards)
	}
	children := map[string][]string{}
	for _, sh := range shards {
		if parent := aws.ToString(sh.ParentShardId); parent != "" {
			children[parent] = append(children[parent], aws.ToString(sh.ShardId))
		}
	}
	splits := 0
	for parent, want := range children {
		out, err := api.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn),
			ShardFilter: &types.ShardFilter{Type: types.ShardFilterTypeChildShards, ShardId: aws.String(parent)}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.StreamDescription.Shards) != len(want) {
			t.Fatalf("children of %s: filter gives %d, listing %d", parent, len(out.StreamDescription.Shards), len(want))
		}
		if len(want) == 2 {
			splits++
		}
	}
	if splits == 0 || len(children) < 3 {
		t.Fatalf("%d parents, %d splits: the schedule should roll over and split", len(children), splits)
	}

	// Read every shard to its end, pages of 100, resuming once per shard after a sequence number.
	type version struct {
		event string
		old   map[string]string
		new   map[string]string
	}
	byItem := map[string][]version{}
	events := map[string]bool{}
	read := 0
	for _, sh := range shards {
		it, err := api.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(arn), ShardId: sh.ShardId,
			ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		if err != nil {
			t.Fatal(err)
		}
		iter, resumed, last := it.ShardIterator, false, ""
		for iter != nil {
			out, err := api.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(100)})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range out.Records {
				d := r.Dynamodb
				if seq := aws.ToString(d.SequenceNumber); seq <= last || len(seq) != 21 {
					t.Fatalf("shard %s: sequence %s after %s", aws.ToString(sh.ShardId), seq, last)
				}
				last = aws.ToString(d.SequenceNumber)
				if events[aws.ToString(r.EventID)] {
					t.Fatalf("event %s read twice", aws.ToString(r.EventID))
				}
				events[aws.ToString(r.EventID)] = true
				id := d.Keys["id"].(*types.AttributeValueMemberS).Value
				byItem[id] = append(byItem[id], version{event: string(r.EventName), old: flat(d.OldImage), new: flat(d.NewImage)})
				if len(d.NewImage) > 0 {
					ms, _ := strconv.ParseInt(d.NewImage["written_ms"].(*types.AttributeValueMemberN).Value, 10, 64)
					if ms != d.ApproximateCreationDateTime.UnixMilli() {
						t.Fatalf("written_ms %d, created %v", ms, d.ApproximateCreationDateTime)
					}
				}
				read++
			}
			iter = out.NextShardIterator
			if !resumed && len(out.Records) > 0 && iter != nil {
				// An iterator after the last record read continues where NextShardIterator would.
				resumed = true
				it, err := api.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(arn), ShardId: sh.ShardId,
					ShardIteratorType: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: aws.String(last)})
				if err != nil {
					t.Fatal(err)
				}
				iter = it.ShardIterator
			}
			if iter != nil && len(out.Records) == 0 && sh.SequenceNumberRange.EndingSequenceNumber == nil {
				break // an open shard at the end of the generation
			}
		}
		if end := aws.ToString(sh.SequenceNumberRange.EndingSequenceNumber); end != "" && end != last {
			t.Fatalf("closed shard %s ends at %s, last record read %s", aws.ToString(sh.ShardId), end, last)
		}
	}
	if uint64(read) != p.Final {
		t.Fatalf("read %d records, the source generated %d", read, p.Final)
	}
	kinds := map[string]int{}
	for id, vs := range byItem {
		for i, v := range vs {
			kinds[v.event]++
			if i == 0 {
				continue
			}
			prev := vs[i-1]
			switch v.event {
			case "INSERT":
				if prev.event != "REMOVE" || v.old != nil {
					t.Fatalf("%s: INSERT after %s", id, prev.event)
				}
			default:
				if prev.new == nil || v.old["version"] != prev.new["version"] || v.old["note"] != prev.new["note"] || v.old["amount"] != prev.new["amount"] {
					t.Fatalf("%s: %s's old image %v is not the previous new image %v", id, v.event, v.old, prev.new)
				}
			}
		}
	}
	if kinds["INSERT"] == 0 || kinds["MODIFY"] == 0 || kinds["REMOVE"] == 0 {
		t.Fatalf("events by kind: %v", kinds)
	}
}

// flat keeps the scalar string and number attributes of an image, for comparisons.
func flat(img map[string]types.AttributeValue) map[string]string {
	if len(img) == 0 {
		return nil
	}
	out := map[string]string{}
	for k, v := range img {
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			out[k] = v.Value
		case *types.AttributeValueMemberN:
			out[k] = v.Value
		}
	}
	return out
}

// TestSourceLimits checks the AWS limits come back as the errors the producer handles:
// LimitExceededException past 5 GetRecords per shard per second, ExpiredIteratorException for an
// old iterator, ResourceNotFoundException for an unknown shard.
func TestSourceLimits(t *testing.T) {
	src, err := New(Config{Tables: []string{"items"}, Rate: 100, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, api := clients(t, src, 1) // limits come back as they are
	ctx := context.Background()
	arn := src.StreamARN("items")
	d, err := api.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	it, err := api.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(arn),
		ShardId: d.StreamDescription.Shards[0].ShardId, ShardIteratorType: types.ShardIteratorTypeLatest})
	if err != nil {
		t.Fatal(err)
	}
	// Ten calls at once on one shard: however slow the machine, more than 5 land within a second.
	var limited *types.LimitExceededException
	errs := make(chan error, 10)
	for range 10 {
		go func() {
			_, err := api.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: it.ShardIterator})
			errs <- err
		}()
	}
	throttled := 0
	for range 10 {
		if err := <-errs; errors.As(err, &limited) {
			throttled++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if throttled < 5 {
		t.Fatalf("10 GetRecords calls on one shard at once: %d throttled, want at least 5", throttled)
	}
	old := "0/" + aws.ToString(d.StreamDescription.Shards[0].ShardId) + "/0/" + strconv.FormatInt(time.Now().Add(-16*time.Minute).UnixMilli(), 10)
	var expired *types.ExpiredIteratorException
	if _, err := api.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String(old)}); !errors.As(err, &expired) {
		t.Fatalf("a 16-minute-old iterator: %v", err)
	}
	var missing *types.ResourceNotFoundException
	_, err = api.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(arn),
		ShardId: aws.String("shardId-nope"), ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	if !errors.As(err, &missing) {
		t.Fatalf("an unknown shard: %v", err)
	}
}
