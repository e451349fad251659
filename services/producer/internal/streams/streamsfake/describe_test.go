package streamsfake

import (
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

func ids(shards []types.Shard) []string {
	var out []string
	for _, s := range shards {
		out = append(out, aws.ToString(s.ShardId))
	}
	return out
}

func TestDescribeStreamPagesByAtMost100Shards(t *testing.T) {
	a := NewAccount(Options{})
	s := a.NewStreamWithShards("orders", 250, Sim{})
	arn := aws.String(s.ARN)

	var all []string
	var sizes []int
	in := &dynamodbstreams.DescribeStreamInput{StreamArn: arn}
	for {
		d := describe(t, a, in)
		sizes = append(sizes, len(d.Shards))
		all = append(all, ids(d.Shards)...)
		if d.LastEvaluatedShardId == nil {
			break
		}
		if aws.ToString(d.LastEvaluatedShardId) != all[len(all)-1] {
			t.Fatalf("LastEvaluatedShardId %s is not the page's last shard", aws.ToString(d.LastEvaluatedShardId))
		}
		in.ExclusiveStartShardId = d.LastEvaluatedShardId
	}
	if !slices.Equal(sizes, []int{100, 100, 50}) {
		t.Fatalf("page sizes %v, want [100 100 50]", sizes)
	}
	if !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != 250 || !slices.Equal(all, s.OpenShards()) {
		t.Fatalf("shards not listed once each in creation order: %v", all)
	}

	if d := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, Limit: aws.Int32(7)}); len(d.Shards) != 7 || aws.ToString(d.LastEvaluatedShardId) != all[6] {
		t.Fatalf("Limit 7: %d shards, last evaluated %v", len(d.Shards), aws.ToString(d.LastEvaluatedShardId))
	}
	if d := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, ExclusiveStartShardId: aws.String(all[244])}); !slices.Equal(ids(d.Shards), all[245:]) || d.LastEvaluatedShardId != nil {
		t.Fatalf("last page: %v, %v", ids(d.Shards), d.LastEvaluatedShardId)
	}
	s.PageShardsBy = 30
	if d := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, Limit: aws.Int32(50)}); len(d.Shards) != 30 {
		t.Fatalf("PageShardsBy 30 with Limit 50: %d shards", len(d.Shards))
	}
	for _, bad := range []int32{0, -1, 101} {
		if _, err := a.DescribeStream(testCtx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: arn, Limit: aws.Int32(bad)}); !isValidation(err) {
			t.Errorf("Limit %d: %v, want ValidationException", bad, err)
		}
	}
	d, err := streams.Describe(testCtx(t), a, s.ARN)
	if err != nil || len(d.Shards) != 250 || d.Table != "orders" || d.PartitionKey != "pk" || d.Status != "ENABLED" {
		t.Fatalf("streams.Describe: %+v, %v", d, err)
	}
}

func TestDescribeStreamChildShardsFilter(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStreamWithShards("orders", 10, Sim{Lifetime: time.Second, SplitChance: 1, MaxOpen: 100})
	parents := s.OpenShards()
	if closed, opened := s.Roll(c.Add(time.Second)); closed != 10 || opened != 20 {
		t.Fatalf("Roll closed %d and opened %d, want 10 and 20", closed, opened)
	}
	arn := aws.String(s.ARN)
	seen := map[string]bool{}
	for _, p := range parents {
		filter := &types.ShardFilter{Type: types.ShardFilterTypeChildShards, ShardId: aws.String(p)}
		d := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, ShardFilter: filter})
		if len(d.Shards) != 2 || d.LastEvaluatedShardId != nil {
			t.Fatalf("children of %s: %v", p, ids(d.Shards))
		}
		for _, ch := range d.Shards {
			if aws.ToString(ch.ParentShardId) != p || seen[aws.ToString(ch.ShardId)] {
				t.Fatalf("child %+v of %s", ch, p)
			}
			seen[aws.ToString(ch.ShardId)] = true
		}
		// The filter pages too.
		first := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, ShardFilter: filter, Limit: aws.Int32(1)})
		next := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, ShardFilter: filter, Limit: aws.Int32(1), ExclusiveStartShardId: first.LastEvaluatedShardId})
		if got := append(ids(first.Shards), ids(next.Shards)...); !slices.Equal(got, ids(d.Shards)) || next.LastEvaluatedShardId != nil {
			t.Fatalf("paged children of %s: %v, then %v", p, got, next.LastEvaluatedShardId)
		}
	}
	leaf := s.OpenShards()[0]
	if d := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, ShardFilter: &types.ShardFilter{Type: types.ShardFilterTypeChildShards, ShardId: aws.String(leaf)}}); len(d.Shards) != 0 {
		t.Fatalf("children of an open shard: %v", ids(d.Shards))
	}
	for _, bad := range []*types.ShardFilter{{Type: "PARENT_SHARDS", ShardId: aws.String(leaf)}, {Type: types.ShardFilterTypeChildShards}} {
		if _, err := a.DescribeStream(testCtx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: arn, ShardFilter: bad}); !isValidation(err) {
			t.Errorf("filter %+v: %v", bad, err)
		}
	}
}

func TestSequenceNumberRanges(t *testing.T) {
	s := New("orders")
	parentSeqs := s.Put("shard-0000", insert("a"), insert("b"))
	s.Split("shard-0000", "shard-0001", "shard-0002")
	childSeqs := s.Put("shard-0001", insert("a"))
	s.Close("shard-0002") // closed without a record since it opened

	r := map[string]*types.SequenceNumberRange{}
	for _, sh := range describe(t, s, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)}).Shards {
		r[aws.ToString(sh.ShardId)] = sh.SequenceNumberRange
	}
	p, c1, c2 := r["shard-0000"], r["shard-0001"], r["shard-0002"]
	start, end := aws.ToString, aws.ToString
	switch {
	case start(p.StartingSequenceNumber) > parentSeqs[0] || end(p.EndingSequenceNumber) < parentSeqs[1]:
		t.Errorf("parent range %v..%v does not hold its records %v", start(p.StartingSequenceNumber), end(p.EndingSequenceNumber), parentSeqs)
	case start(c1.StartingSequenceNumber) <= end(p.EndingSequenceNumber) || start(c1.StartingSequenceNumber) > childSeqs[0]:
		t.Errorf("child range starts at %v: parent ends at %v, child's record is %v", start(c1.StartingSequenceNumber), end(p.EndingSequenceNumber), childSeqs[0])
	case c1.EndingSequenceNumber != nil:
		t.Errorf("open shard has an ending sequence number")
	case c2.EndingSequenceNumber == nil || end(c2.EndingSequenceNumber) < start(c2.StartingSequenceNumber):
		t.Errorf("empty closed shard range %v..%v", start(c2.StartingSequenceNumber), end(c2.EndingSequenceNumber))
	}
	// Ranges do not move once the shard is closed.
	s.Put("shard-0001", insert("c"))
	again := describe(t, s, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)}).Shards[0].SequenceNumberRange
	if end(again.EndingSequenceNumber) != end(p.EndingSequenceNumber) {
		t.Errorf("parent's ending sequence number moved: %v then %v", end(p.EndingSequenceNumber), end(again.EndingSequenceNumber))
	}
}

func TestExclusiveStartShardIdOfAShardThatAgedOut(t *testing.T) {
	a := NewAccount(Options{})
	s := a.NewStreamWithShards("orders", 5, Sim{})
	all := s.OpenShards()
	arn := aws.String(s.ARN)
	first := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, Limit: aws.Int32(2)})
	s.RemoveShard(aws.ToString(first.LastEvaluatedShardId))
	next := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: arn, ExclusiveStartShardId: first.LastEvaluatedShardId})
	if !slices.Equal(ids(next.Shards), all[2:]) {
		t.Fatalf("after removed %s: %v, want %v", aws.ToString(first.LastEvaluatedShardId), ids(next.Shards), all[2:])
	}
}
