package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams/streamsfake"
)

var fast = Polling{MinInterval: time.Millisecond, MaxIdle: 2 * time.Millisecond, PageLimit: 3}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func put(s *streamsfake.Stream, shard string, n int, prefix string) []string {
	var recs []types.Record
	for i := range n {
		recs = append(recs, streamsfake.Record(types.OperationTypeInsert, fmt.Sprintf("%s-%d", prefix, i), nil,
			map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: fmt.Sprintf("%s-%d", prefix, i)}}))
	}
	return s.Put(shard, recs...)
}

// drain reads a shard until End (or until it is idle and open, when want records have arrived).
func drain(t *testing.T, r *Reader, want int) (seqs []string, ended bool) {
	t.Helper()
	for len(seqs) < want || want < 0 {
		p, err := r.Next(ctx(t))
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		for _, rec := range p.Records {
			seqs = append(seqs, aws.ToString(rec.Dynamodb.SequenceNumber))
		}
		if p.End {
			return seqs, true
		}
	}
	return seqs, false
}

func TestDescribePaginatesShardsAndReadsKeySchema(t *testing.T) {
	s := streamsfake.New("orders")
	s.PageShardsBy = 1
	s.Split("shard-0000", "shard-0001", "shard-0002")
	d, err := Describe(ctx(t), s, s.ARN)
	if err != nil {
		t.Fatal(err)
	}
	if d.Table != "orders" || d.PartitionKey != "pk" || d.ViewType != "NEW_AND_OLD_IMAGES" || len(d.Shards) != 3 {
		t.Fatalf("description = %+v", d)
	}
	if !d.Shards[0].Closed || d.Shards[1].Parent != "shard-0000" || d.Shards[2].Closed {
		t.Fatalf("shards = %+v", d.Shards)
	}
	s.Delete()
	if _, err := Describe(ctx(t), s, s.ARN); !errors.Is(err, ErrStreamGone) {
		t.Fatalf("deleted stream: %v", err)
	}
}

func TestReadableFollowsLineage(t *testing.T) {
	shards := []Shard{{ID: "a", Closed: true}, {ID: "b", Parent: "a"}, {ID: "c", Parent: "a"}, {ID: "d", Parent: "gone"}, {ID: "e", Parent: "b"}}
	ids := func(ss []Shard) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.ID)
		}
		return out
	}
	tests := []struct {
		finished map[string]bool
		want     []string
	}{
		{nil, []string{"a", "d"}}, // children wait for a; d's parent aged out
		{map[string]bool{"a": true}, []string{"b", "c", "d"}},
		{map[string]bool{"a": true, "b": true}, []string{"c", "d", "e"}},
	}
	for _, tt := range tests {
		if got := ids(Readable(shards, tt.finished)); !slices.Equal(got, tt.want) {
			t.Errorf("finished %v: readable %v, want %v", tt.finished, got, tt.want)
		}
	}
}

func TestReaderReadsEveryRecordOnceThroughSplitsAndFailures(t *testing.T) {
	s := streamsfake.New("orders")
	var throttled, losses int
	events := Events{Throttled: func(string) { throttled++ }, DataLoss: func(string, string) { losses++ }}
	want := put(s, "shard-0000", 7, "p")

	r := NewReader(s, s.ARN, "shard-0000", "", fast, events, slog.New(slog.DiscardHandler))
	got, _ := drain(t, r, 3) // one page of 3
	// Failures in the middle of the shard: expired iterators and throttling.
	s.ExpireIterators()
	s.Throttle(2)
	more, _ := drain(t, r, 4)
	got = append(got, more...)
	// The shard splits: the parent ends after its last record; children hold what follows.
	s.Split("shard-0000", "shard-0001", "shard-0002")
	rest, ended := drain(t, r, -1)
	got = append(got, rest...)
	if !ended || !slices.Equal(got, want) {
		t.Fatalf("parent: read %v (ended %v), want %v", got, ended, want)
	}
	if throttled != 2 || losses != 0 {
		t.Fatalf("throttled %d, losses %d", throttled, losses)
	}
	childWant := put(s, "shard-0001", 2, "c")
	child := NewReader(s, s.ARN, "shard-0001", "", fast, events, slog.New(slog.DiscardHandler))
	if got, _ := drain(t, child, 2); !slices.Equal(got, childWant) {
		t.Fatalf("child: read %v, want %v", got, childWant)
	}

	// Resuming after a position reads exactly what follows it.
	resumed := NewReader(s, s.ARN, "shard-0000", want[3], fast, events, slog.New(slog.DiscardHandler))
	if got, ended := drain(t, resumed, -1); !ended || !slices.Equal(got, want[4:]) {
		t.Fatalf("resumed: read %v (ended %v), want %v", got, ended, want[4:])
	}
}

func TestReaderReportsTrimmedRecordsAsDataLossAndContinues(t *testing.T) {
	s := streamsfake.New("orders")
	var lostAfter []string
	events := Events{DataLoss: func(_, after string) { lostAfter = append(lostAfter, after) }}
	seqs := put(s, "shard-0000", 6, "p")
	// A reader whose checkpoint is at record 1; records 0..3 then age out before it reads.
	r := NewReader(s, s.ARN, "shard-0000", seqs[1], fast, events, slog.New(slog.DiscardHandler))
	s.Trim("shard-0000", 4)
	got, _ := drain(t, r, 2)
	if !slices.Equal(got, seqs[4:]) || !slices.Equal(lostAfter, []string{seqs[1]}) {
		t.Fatalf("read %v, loss reported after %v; want %v after %s", got, lostAfter, seqs[4:], seqs[1])
	}
}

func TestReaderStopsWhenTheShardIsGone(t *testing.T) {
	s := streamsfake.New("orders")
	put(s, "shard-0000", 1, "p")
	r := NewReader(s, s.ARN, "shard-0000", "", fast, Events{}, slog.New(slog.DiscardHandler))
	drain(t, r, 1)
	s.RemoveShard("shard-0000")
	s.ExpireIterators()
	if _, err := r.Next(ctx(t)); !errors.Is(err, ErrShardGone) {
		t.Fatalf("Next on a removed shard = %v", err)
	}
}

func TestReaderBacksOffWhileIdle(t *testing.T) {
	s := streamsfake.New("orders")
	r := NewReader(s, s.ARN, "shard-0000", "", Polling{MinInterval: time.Millisecond, MaxIdle: 20 * time.Millisecond}, Events{}, slog.New(slog.DiscardHandler))
	for range 8 {
		if _, err := r.Next(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if r.idle != 20*time.Millisecond {
		t.Fatalf("idle wait after 8 empty pages = %s, want the 20ms maximum", r.idle)
	}
	put(s, "shard-0000", 1, "p")
	if _, err := r.Next(ctx(t)); err != nil || r.idle != 0 {
		t.Fatalf("after a record: idle %s, %v", r.idle, err)
	}
}
