package streamsfake

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/ddb2delta/ddb2delta/services/producer/internal/changes"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

// retained counts the records the stream holds.
func retained(s *Stream) (n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range s.shards {
		n += len(sh.entries)
	}
	return n
}

// listing describes every shard of s through the API.
func listing(t testing.TB, s *Stream) []streams.Shard {
	t.Helper()
	d, err := streams.Describe(testCtx(t), s, s.ARN)
	if err != nil {
		t.Fatal(err)
	}
	return d.Shards
}

func TestRollKeepsAboutNShardsOpenAndSpreadsCloses(t *testing.T) {
	const n = 200
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStreamWithShards("orders", n, Sim{Lifetime: 10 * time.Second, Jitter: 3 * time.Second, SplitChance: 0.2, Seed: 1})
	children := map[string]int{}
	var closes, maxStep int
	for range 600 { // a minute in steps of 100ms
		now := c.Add(100 * time.Millisecond)
		closed, opened := s.Roll(now)
		closes += closed
		maxStep = max(maxStep, closed)
		open := s.OpenShards()
		if len(open) < n || len(open) > n+n/10 {
			t.Fatalf("%d shards open at %v, want %d to %d", len(open), now.Sub(t0), n, n+n/10)
		}
		if opened < closed || opened > 2*closed {
			t.Fatalf("closed %d shards but opened %d", closed, opened)
		}
		l := listing(t, s) // creation order: the new shards are last
		for _, sh := range l[len(l)-opened:] {
			if born, ok := s.ShardCreated(sh.ID); !ok || !born.Equal(now) || sh.Parent == "" || sh.Closed {
				t.Fatalf("new shard %+v born %v (ok %v), want an open child born %v", sh, born, ok, now)
			}
			children[sh.Parent]++
		}
	}
	// 200 shards living 10s close at about 20/s: 1200 in the minute, 2 per step.
	if closes < 1000 || closes > 1400 {
		t.Fatalf("%d closes in a minute, want about 1200", closes)
	}
	if maxStep > 12 {
		t.Fatalf("%d shards closed in one 100ms step: closes are not spread out", maxStep)
	}
	splits := 0
	for _, k := range children {
		if k == 2 {
			splits++
		}
	}
	if splits == 0 || len(children) != closes {
		t.Fatalf("%d parents, %d of them split, %d closes", len(children), splits, closes)
	}
	for _, sh := range listing(t, s) {
		if sh.Parent != "" && children[sh.Parent] == 0 {
			t.Fatalf("shard %+v has a parent that never closed", sh)
		}
	}
}

func TestPutRandomKeepsEachKeysChangesInOrderAlongOneLineage(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStreamWithShards("orders", 8, Sim{Lifetime: 2 * time.Second, Jitter: 500 * time.Millisecond, SplitChance: 0.3, Keys: 64, RemoveChance: 0.2, ItemBytes: 16, Seed: 7})
	written := 0
	for range 400 {
		written += s.PutRandom(25)
		s.Roll(c.Add(50 * time.Millisecond))
	}
	end := c.Now()
	if written != 400*25 {
		t.Fatalf("wrote %d of %d", written, 400*25)
	}
	parent := map[string]string{}
	for _, sh := range listing(t, s) {
		parent[sh.ID] = sh.Parent
	}
	descends := func(child, ancestor string) bool {
		for p := parent[child]; p != ""; p = parent[p] {
			if p == ancestor {
				return true
			}
		}
		return false
	}

	recs, from := readLineage(t, a, s.ARN)
	if len(recs) != written {
		t.Fatalf("read %d records, wrote %d", len(recs), written)
	}
	table := changes.Table{Name: "orders", StreamARN: s.ARN, ViewType: "NEW_AND_OLD_IMAGES", PartitionKey: "pk"}
	type state struct {
		ver   int
		live  bool
		shard string
	}
	keys := map[string]*state{}
	lastSeq := map[string]string{}
	for i, r := range recs {
		if _, _, err := changes.Convert(table, from[i], r, end); err != nil {
			t.Fatalf("record %d does not convert: %v", i, err)
		}
		sr := r.Dynamodb
		if seqOf(r) <= lastSeq[from[i]] {
			t.Fatalf("sequence numbers not increasing in shard %s", from[i])
		}
		lastSeq[from[i]] = seqOf(r)
		if sr.StreamViewType != types.StreamViewTypeNewAndOldImages || sr.ApproximateCreationDateTime == nil ||
			sr.ApproximateCreationDateTime.Before(t0) || sr.ApproximateCreationDateTime.After(end) || aws.ToString(r.EventSource) != "aws:dynamodb" {
			t.Fatalf("record %+v", sr)
		}
		pk := sr.Keys["pk"].(*types.AttributeValueMemberS).Value
		version := func(img map[string]types.AttributeValue) int {
			if img["pk"].(*types.AttributeValueMemberS).Value != pk || len(img["pad"].(*types.AttributeValueMemberS).Value) != 16 {
				t.Fatalf("image %v of key %s", img, pk)
			}
			v, _ := strconv.Atoi(img["v"].(*types.AttributeValueMemberN).Value)
			return v
		}
		k := keys[pk]
		if k == nil {
			k = &state{}
			keys[pk] = k
		}
		// Every change is the next version of the key, and fits the item's existence.
		switch r.EventName {
		case types.OperationTypeInsert:
			if k.live || sr.OldImage != nil || version(sr.NewImage) != k.ver+1 {
				t.Fatalf("key %s: INSERT of version %v after version %d (live %v)", pk, sr.NewImage["v"], k.ver, k.live)
			}
			k.live = true
		case types.OperationTypeModify:
			if !k.live || version(sr.OldImage) != k.ver || version(sr.NewImage) != k.ver+1 {
				t.Fatalf("key %s: MODIFY %v -> %v after version %d (live %v)", pk, sr.OldImage["v"], sr.NewImage["v"], k.ver, k.live)
			}
		case types.OperationTypeRemove:
			if !k.live || sr.NewImage != nil || version(sr.OldImage) != k.ver {
				t.Fatalf("key %s: REMOVE of %v after version %d (live %v)", pk, sr.OldImage["v"], k.ver, k.live)
			}
			k.live = false
		default:
			t.Fatalf("event name %q", r.EventName)
		}
		k.ver++
		// A key moves only from a shard to a descendant of it.
		if k.shard != "" && k.shard != from[i] && !descends(from[i], k.shard) {
			t.Fatalf("key %s moved from shard %s to %s, not a descendant", pk, k.shard, from[i])
		}
		k.shard = from[i]
	}
	if len(keys) != 64 {
		t.Fatalf("%d keys written, want all 64", len(keys))
	}
}

func TestShardCreatedAndGeneratedRecordTimes(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStreamWithShards("orders", 1, Sim{Lifetime: time.Second})
	first := s.OpenShards()[0]
	if born, ok := s.ShardCreated(first); !ok || !born.Equal(t0) {
		t.Fatalf("initial shard born %v %v", born, ok)
	}
	rolledAt := c.Add(1500 * time.Millisecond)
	s.Roll(rolledAt)
	child := s.OpenShards()[0]
	if born, ok := s.ShardCreated(child); child == first || !ok || !born.Equal(rolledAt) {
		t.Fatalf("child %s born %v %v, want %v", child, born, ok, rolledAt)
	}
	if _, ok := s.ShardCreated("nope"); ok {
		t.Fatal("unknown shard has a creation time")
	}
	writtenAt := c.Add(250 * time.Millisecond)
	s.PutRandom(1)
	recs, _ := readShard(t, a, s.ARN, child)
	if len(recs) != 1 || !recs[0].Dynamodb.ApproximateCreationDateTime.Equal(writtenAt) {
		t.Fatalf("records %+v, want one written at %v", recs, writtenAt)
	}
}

func TestRetentionTrimsRecordsAndAgesShardsOut(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now, Retention: 10 * time.Second})
	s := a.NewStreamWithShards("orders", 4, Sim{Lifetime: 5 * time.Second, Seed: 3})
	initial := s.OpenShards()
	for range 30 {
		s.PutRandom(100)
		s.Roll(c.Add(time.Second))
	}
	now := c.Now()
	// Records written at t0+20s..t0+29s remain; the one at t0+20s exactly is out (cutoff is
	// inclusive): 9 seconds' worth.
	if got := retained(s); got != 900 {
		t.Fatalf("%d records retained, want 900", got)
	}
	for _, sh := range listing(t, s) {
		recs, _ := readShard(t, a, s.ARN, sh.ID)
		for _, r := range recs {
			if !r.Dynamodb.ApproximateCreationDateTime.After(now.Add(-10 * time.Second)) {
				t.Fatalf("record from %v retained at %v", r.Dynamodb.ApproximateCreationDateTime, now)
			}
		}
	}
	listed := map[string]bool{}
	for _, sh := range listing(t, s) {
		listed[sh.ID] = true
	}
	for _, id := range initial {
		if listed[id] {
			t.Fatalf("initial shard %s, closed more than 10s ago, still listed", id)
		}
		if _, ok := s.ShardCreated(id); !ok {
			t.Fatalf("creation time of aged-out shard %s forgotten", id)
		}
	}
	// The producer's lineage order copes with parents that aged out.
	if recs, _ := readLineage(t, a, s.ARN); len(recs) != 900 {
		t.Fatalf("read %d records", len(recs))
	}
}

func TestDriveStepWritesAtTheClocksRate(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStreamWithShards("orders", 4, Sim{Lifetime: 500 * time.Millisecond})
	d := driver{s: s, perSecond: 25, last: t0}
	var got []int
	for range 10 {
		got = append(got, d.step(c.Add(100*time.Millisecond))) // 2.5 records per step
	}
	if fmt.Sprint(got) != "[2 3 2 3 2 3 2 3 2 3]" || retained(s) != 25 {
		t.Fatalf("wrote %v per step, %d in all: want 25 over one second, fractions carried over", got, retained(s))
	}
	if len(listing(t, s)) == 4 {
		t.Fatal("steps did not roll shards over")
	}
	if d.step(c.Now()) != 0 {
		t.Fatal("wrote records with no time elapsed")
	}
}

func TestDriveRunsUntilCancelled(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStreamWithShards("orders", 4, Sim{Lifetime: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Drive(ctx, time.Millisecond, 1000)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for retained(s) == 0 || len(listing(t, s)) == 4 {
		if time.Now().After(deadline) {
			t.Fatalf("Drive wrote %d records and listed %d shards in 10s", retained(s), len(listing(t, s)))
		}
		c.Add(10 * time.Millisecond)
		time.Sleep(time.Millisecond) // poll: let the ticker fire
	}
	cancel()
	<-done
}

func TestDisableStopsTheSimulation(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStreamWithShards("orders", 3, Sim{Lifetime: time.Second})
	s.PutRandom(10)
	a.NewStream("orders") // re-enabling disables s
	if s.PutRandom(10) != 0 || len(s.OpenShards()) != 0 {
		t.Fatal("a disabled stream still takes writes")
	}
	if closed, _ := s.Roll(c.Add(time.Hour)); closed != 0 {
		t.Fatal("a disabled stream still rolls over")
	}
	for _, sh := range describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)}).Shards {
		if sh.SequenceNumberRange.EndingSequenceNumber == nil {
			t.Fatalf("shard %s of a disabled stream is open", aws.ToString(sh.ShardId))
		}
	}
}

// TestScaleStaysCheap runs 1,000 shards rolling over every ~20s for two simulated minutes at
// 10,000 records/s with a 30s retention, as a scale simulation would: memory must follow what is
// retained, not what was written.
func TestScaleStaysCheap(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	const shards, perStep = 1000, 1000 // 10,000 records/s in steps of 100ms
	c := newClock()
	// AWS's limits, but DescribeStream's: listing 2,000-odd shards takes more than ten pages, and
	// the clock stands still while the test lists them.
	limits := AWSLimits()
	limits.DescribeStreamPerSecond = 0
	a := NewAccount(Options{Now: c.Now, Retention: 30 * time.Second, Limits: limits})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	s := a.NewStreamWithShards("orders", shards, Sim{Lifetime: 20 * time.Second, Jitter: 5 * time.Second, SplitChance: 0.05, Keys: 1_000_000, Seed: 9})
	var closes int
	for range 1200 {
		s.PutRandom(perStep)
		closed, _ := s.Roll(c.Add(100 * time.Millisecond))
		closes += closed
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)

	if got := retained(s); got > 300*perStep {
		t.Fatalf("%d records retained, want at most 30s' worth (%d)", got, 300*perStep)
	}
	open := len(s.OpenShards())
	if open < shards || open > shards+shards/10 || closes < 5000 {
		t.Fatalf("%d shards open, %d closes", open, closes)
	}
	listed := listing(t, s)
	if len(listed) > 3*shards {
		t.Fatalf("%d shards listed: closed shards do not age out", len(listed))
	}
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d closes, %d shards listed, %d open, %d records retained, heap %+d MB", closes, len(listed), open, retained(s), grown>>20)
	if grown > 128<<20 {
		t.Fatalf("heap grew %d MB", grown>>20)
	}
	runtime.KeepAlive(s)
}

func BenchmarkPutRandom(b *testing.B) {
	s := NewAccount(Options{}).NewStreamWithShards("orders", 1000, Sim{Keys: 1_000_000})
	b.ReportAllocs()
	for b.Loop() {
		s.PutRandom(1000)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/record")
}

func BenchmarkGetRecordsFullPage(b *testing.B) {
	a := NewAccount(Options{})
	s := a.NewStreamWithShards("orders", 1, Sim{ItemBytes: 100})
	s.PutRandom(1000)
	ctx := context.Background()
	out, err := a.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(s.ARN), ShardId: aws.String(s.OpenShards()[0]), ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		page, err := a.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: out.ShardIterator})
		if err != nil || len(page.Records) != 1000 {
			b.Fatal(err)
		}
	}
}
