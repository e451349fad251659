package streamsfake

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

func insert(pk string) types.Record {
	return Record(types.OperationTypeInsert, pk, nil, map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}})
}

func TestListStreamsPagesOldestFirstAndFiltersByTable(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	oldOrders := a.NewStream("orders")
	users := a.NewStream("users") // same clock reading: its label must still be unique
	c.Add(time.Hour)
	newOrders := a.NewStream("orders") // the orders stream disabled and enabled again
	audit := a.NewStream("audit")

	if oldOrders.ARN == newOrders.ARN || oldOrders.ARN == users.ARN {
		t.Fatalf("ARNs not unique: %s %s %s", oldOrders.ARN, users.ARN, newOrders.ARN)
	}
	var got []string
	var pages int
	in := &dynamodbstreams.ListStreamsInput{Limit: aws.Int32(3)}
	for {
		out, err := a.ListStreams(testCtx(t), in)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, s := range out.Streams {
			if aws.ToString(s.TableName) == "" || aws.ToString(s.StreamLabel) == "" || !slices.Contains([]string{oldOrders.ARN, users.ARN, newOrders.ARN, audit.ARN}, aws.ToString(s.StreamArn)) {
				t.Fatalf("stream %+v", s)
			}
			got = append(got, aws.ToString(s.StreamArn))
		}
		if out.LastEvaluatedStreamArn == nil {
			break
		}
		in.ExclusiveStartStreamArn = out.LastEvaluatedStreamArn
	}
	if want := []string{oldOrders.ARN, users.ARN, newOrders.ARN, audit.ARN}; !slices.Equal(got, want) || pages != 2 {
		t.Fatalf("listed %v in %d pages, want %v in 2", got, pages, want)
	}

	out, err := a.ListStreams(testCtx(t), &dynamodbstreams.ListStreamsInput{TableName: aws.String("orders")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Streams) != 2 || aws.ToString(out.Streams[0].StreamArn) != oldOrders.ARN || aws.ToString(out.Streams[1].StreamArn) != newOrders.ARN || out.LastEvaluatedStreamArn != nil {
		t.Fatalf("orders streams = %+v", out)
	}

	for _, bad := range []*dynamodbstreams.ListStreamsInput{{Limit: aws.Int32(0)}, {Limit: aws.Int32(101)}, {ExclusiveStartStreamArn: aws.String("arn:nope")}} {
		if _, err := a.ListStreams(testCtx(t), bad); !isValidation(err) {
			t.Errorf("ListStreams(%+v) = %v, want ValidationException", bad, err)
		}
	}
}

func TestReenablingDisablesTheOldStreamWhichStaysReadable(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now, Retention: 24 * time.Hour})
	old := a.NewStream("orders")
	seqs := old.Put("shard-0000", insert("a"), insert("b"))
	c.Add(time.Minute)
	cur := a.NewStream("orders")

	d := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(old.ARN)})
	if d.StreamStatus != types.StreamStatusDisabled || old.Status() != types.StreamStatusDisabled {
		t.Fatalf("old stream status %s", d.StreamStatus)
	}
	r := d.Shards[0].SequenceNumberRange
	if r.EndingSequenceNumber == nil || aws.ToString(r.EndingSequenceNumber) < seqs[1] {
		t.Fatalf("old stream's shard not closed after its records: %+v", r)
	}
	if d := describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(cur.ARN)}); d.StreamStatus != types.StreamStatusEnabled || d.Shards[0].SequenceNumberRange.EndingSequenceNumber != nil {
		t.Fatalf("new stream %+v", d)
	}
	// The old stream's records are all readable, then its shard ends.
	recs, ended := readShard(t, a, old.ARN, "shard-0000")
	if len(recs) != 2 || !ended {
		t.Fatalf("read %d records, ended %v", len(recs), ended)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Put to a disabled stream's shard did not panic")
			}
		}()
		old.Put("shard-0000", insert("c"))
	}()

	// A day after it was disabled it is gone.
	a.Roll(c.Add(24*time.Hour - time.Second))
	if _, err := a.DescribeStream(testCtx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(old.ARN)}); err != nil {
		t.Fatalf("old stream gone too early: %v", err)
	}
	a.Roll(c.Add(time.Second))
	if _, err := a.DescribeStream(testCtx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(old.ARN)}); !isNotFound(err) {
		t.Fatalf("old stream after retention: %v", err)
	}
	out, _ := a.ListStreams(testCtx(t), &dynamodbstreams.ListStreamsInput{})
	if len(out.Streams) != 1 || aws.ToString(out.Streams[0].StreamArn) != cur.ARN {
		t.Fatalf("listed %+v, want only the current stream", out.Streams)
	}
}

func TestAccountDispatchesOnStreamARN(t *testing.T) {
	a := NewAccount(Options{})
	orders, users := a.NewStream("orders"), a.NewStream("users")
	orders.Put("shard-0000", insert("o1"), insert("o2"))
	users.Put("shard-0000", insert("u1"))

	if a.Stream(orders.ARN) != orders || a.Stream("arn:nope") != nil {
		t.Fatal("Stream lookup")
	}
	for _, tc := range []struct {
		s    *Stream
		want []string
	}{{orders, []string{"o1", "o2"}}, {users, []string{"u1"}}} {
		// Both shards are "shard-0000": only the iterator's stream tells them apart.
		recs, _ := readShard(t, a, tc.s.ARN, "shard-0000")
		var keys []string
		for _, r := range recs {
			keys = append(keys, r.Dynamodb.Keys["pk"].(*types.AttributeValueMemberS).Value)
		}
		if !slices.Equal(keys, tc.want) {
			t.Errorf("%s: read %v, want %v", tc.s.Table, keys, tc.want)
		}
	}
	ctx := testCtx(t)
	if _, err := a.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String("arn:nope")}); !isNotFound(err) {
		t.Errorf("DescribeStream of unknown ARN: %v", err)
	}
	if _, err := a.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String("arn:nope"), ShardId: aws.String("shard-0000"), ShardIteratorType: types.ShardIteratorTypeTrimHorizon}); !isNotFound(err) {
		t.Errorf("GetShardIterator of unknown ARN: %v", err)
	}
	if _, err := a.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("arn:nope|shard-0000|0|0")}); !isNotFound(err) {
		t.Errorf("GetRecords of unknown stream: %v", err)
	}
	if _, err := a.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("garbage")}); !isValidation(err) {
		t.Errorf("GetRecords of a malformed iterator: %v", err)
	}
	// An iterator of one stream given to another stream directly is refused.
	if _, err := users.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: iter(t, a, orders.ARN, "shard-0000")}); !isValidation(err) {
		t.Errorf("foreign iterator: %v", err)
	}
	orders.Delete()
	if _, err := a.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String(orders.ARN + "|shard-0000|0|0")}); !isNotFound(err) {
		t.Errorf("GetRecords of a deleted stream: %v", err)
	}
	if st := a.Stats(); st.DescribeStream.Calls != 1 || st.GetShardIterator.Calls != 4 || st.GetRecords.Calls != 8 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPutDoesNotModifyTheCallersRecord(t *testing.T) {
	s := New("orders")
	r := insert("a")
	s1 := s.Put("shard-0000", r)
	s2 := s.Put("shard-0000", r)
	if r.Dynamodb.SequenceNumber != nil || r.EventID != nil {
		t.Fatalf("caller's record was numbered: %+v", r.Dynamodb)
	}
	recs, _ := readShard(t, s, s.ARN, "shard-0000")
	if len(recs) != 2 || seqOf(recs[0]) != s1[0] || seqOf(recs[1]) != s2[0] || s1[0] >= s2[0] {
		t.Fatalf("records %v %v, seqs %v %v", seqOf(recs[0]), seqOf(recs[1]), s1, s2)
	}
}

func TestIteratorTypesAndTrim(t *testing.T) {
	s := New("orders")
	seqs := s.Put("shard-0000", insert("a"), insert("b"), insert("c"), insert("d"))
	get := func(typ types.ShardIteratorType, seq string) ([]string, error) {
		out, err := s.GetShardIterator(testCtx(t), &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(s.ARN), ShardId: aws.String("shard-0000"), ShardIteratorType: typ, SequenceNumber: aws.String(seq)})
		if err != nil {
			return nil, err
		}
		page, err := s.GetRecords(testCtx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: out.ShardIterator})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range page.Records {
			got = append(got, seqOf(r))
		}
		return got, nil
	}
	for _, tc := range []struct {
		typ  types.ShardIteratorType
		seq  string
		want []string
	}{
		{types.ShardIteratorTypeTrimHorizon, "", seqs},
		{types.ShardIteratorTypeLatest, "", nil},
		{types.ShardIteratorTypeAtSequenceNumber, seqs[1], seqs[1:]},
		{types.ShardIteratorTypeAfterSequenceNumber, seqs[1], seqs[2:]},
	} {
		if got, err := get(tc.typ, tc.seq); err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s %s: %v %v, want %v", tc.typ, tc.seq, got, err, tc.want)
		}
	}
	s.Trim("shard-0000", 2)
	if got, _ := get(types.ShardIteratorTypeTrimHorizon, ""); !slices.Equal(got, seqs[2:]) {
		t.Errorf("after trim: %v", got)
	}
	var trimmed *types.TrimmedDataAccessException
	if _, err := get(types.ShardIteratorTypeAfterSequenceNumber, seqs[0]); !errors.As(err, &trimmed) {
		t.Errorf("after a trimmed record: %v", err)
	}
}

func TestStandaloneStreamHasNoLimits(t *testing.T) {
	s := New("orders")
	s.Put("shard-0000", insert("a"))
	for range 50 {
		describe(t, s, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)})
		if _, ended := readShard(t, s, s.ARN, "shard-0000"); ended {
			t.Fatal("open shard ended")
		}
	}
	st := s.Stats()
	if st.DescribeStream.Calls != 50 || st.DescribeStream.Throttled != 0 || st.GetRecords.Calls != 100 || st.GetRecords.Throttled != 0 || st.DescribeStreamPeak < 1 || st.DescribeStreamPeak > 50 {
		t.Fatalf("stats = %+v", st)
	}
	if s.Calls() != 50+50+100 {
		t.Fatalf("Calls() = %d", s.Calls())
	}
}
