//go:build integration

package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestTakeoverFencesThePreviousWriter: writer A commits a page; writer B takes the shard over with
// a claim; A can commit nothing more, B resumes from A's last committed checkpoint, and a
// read_committed consumer sees A's committed page and B's, and nothing of A's fenced attempt.
func TestTakeoverFencesThePreviousWriter(t *testing.T) {
	ctx, base, adm := brokerSetup(t)
	n := time.Now().UnixNano()
	data, cpTopic := fmt.Sprintf("stacktest.cdc.fence_%d", n), fmt.Sprintf("stacktest.checkpoints_%d", n)
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, data); err != nil {
		t.Fatal(err)
	}
	cps := followCheckpoints(t, ctx, adm, base, cpTopic, 4)
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), data) })

	const arn, shard = "arn:stream", "shard-1"
	txn := TransactionalID("stacktest", arn, fmt.Sprint(n))
	recs := func(vals ...string) []*kgo.Record {
		var out []*kgo.Record
		for _, v := range vals {
			out = append(out, &kgo.Record{Topic: data, Key: []byte(v), Value: []byte(v)})
		}
		return out
	}

	a, err := NewShardWriter(base, txn, cps, arn, shard, "A")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	posA, err := a.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cps.WaitRead(ctx, posA); err != nil {
		t.Fatal(err)
	}
	if _, ok := cps.Get(arn, shard); ok {
		t.Fatal("a new shard has a checkpoint")
	}
	if err := a.Commit(ctx, recs("a1", "a2"), "100", false); err != nil {
		t.Fatal(err)
	}

	b, err := NewShardWriter(base, txn, cps, arn, shard, "B")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	posB, err := b.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, recs("zombie"), "200", false); !errors.Is(err, ErrFenced) {
		t.Fatalf("the fenced writer's commit = %v, want ErrFenced", err)
	}
	if err := cps.WaitRead(ctx, posB); err != nil {
		t.Fatal(err)
	}
	cp, ok := cps.Get(arn, shard)
	if !ok || cp.After != "100" || cp.Owner != "A" {
		t.Fatalf("checkpoint after takeover = %+v, %v; want A's at 100", cp, ok)
	}
	if err := b.Commit(ctx, recs("b1"), "300", true); err != nil {
		t.Fatal(err)
	}

	cons, err := kgo.NewClient(append(base, kgo.ConsumeTopics(data), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	seen := map[string]int{}
	stacktest.Eventually(t, 30*time.Second, "read_committed sees a1 a2 b1", func() error {
		cons.PollRecords(ctx, 100).EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
		if seen["a1"] != 1 || seen["a2"] != 1 || seen["b1"] != 1 {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})
	if seen["zombie"] != 0 || len(seen) != 3 {
		t.Fatalf("read_committed saw %v", seen)
	}
}

// followCheckpoints creates a checkpoint topic of partitions partitions and runs a follower of it.
func followCheckpoints(t *testing.T, ctx context.Context, adm *kadm.Client, base []kgo.Opt, topic string, partitions int32) *Checkpoints {
	t.Helper()
	n, err := EnsureCheckpointTopic(ctx, adm, topic, partitions, 1)
	if err != nil {
		t.Fatal(err)
	}
	if n2, err := EnsureCheckpointTopic(ctx, adm, topic, partitions+5, 1); err != nil || n2 != n || n != partitions {
		t.Fatalf("EnsureCheckpointTopic: %d partitions, then %d, %v; want %d both times", n, n2, err, partitions)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
	cps, err := NewCheckpoints(base, topic, n, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = cps.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	if err := cps.CheckPartitions(ctx); err != nil {
		t.Fatal(err)
	}
	return cps
}

// TestClaimsAcrossPartitions: a claim is recognised by its offset even when a later claim of the
// same shard follows it before the follower reads either; a transaction left open in one partition
// of the checkpoint topic does not hold back claims of shards in another; a tombstoned shard has no
// checkpoint; and adding partitions to the topic is refused.
func TestClaimsAcrossPartitions(t *testing.T) {
	ctx, base, adm := brokerSetup(t)
	n := time.Now().UnixNano()
	cpTopic := fmt.Sprintf("stacktest.checkpoints_%d", n)
	cps := followCheckpoints(t, ctx, adm, base, cpTopic, 4)
	const arn = "arn:stream"

	// Two shards in different partitions.
	shardP, shardQ := "shard-p", ""
	for i := 0; shardQ == ""; i++ {
		if c := fmt.Sprintf("shard-q%d", i); Partition(arn, c, 4) != Partition(arn, shardP, 4) {
			shardQ = c
		}
	}
	// An abandoned transaction holds shard P's partition.
	stuck, err := kgo.NewClient(append(base, kgo.TransactionalID(fmt.Sprintf("stacktest-stuck-%d", n)),
		kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(partitioner{topic: cpTopic}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if err := stuck.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := stuck.ProduceSync(ctx, &kgo.Record{Topic: cpTopic, Partition: Partition(arn, shardP, 4),
		Key: []byte(checkpointKey(arn, shardP)), Value: []byte(`{"sequence_number":"1"}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Shard Q: writer A claims, writer B claims right after; A's claim is recognised by its
	// offset (the newest claim is B's by then).
	txn := TransactionalID("stacktest", arn, fmt.Sprint(n)+shardQ)
	a, err := NewShardWriter(base, txn, cps, arn, shardQ, "A")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	posA, err := a.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewShardWriter(base, txn, cps, arn, shardQ, "B")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	posB, err := b.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if posB.Partition != posA.Partition || posB.Offset <= posA.Offset {
		t.Fatalf("claims at %+v then %+v", posA, posB)
	}
	// Well within the stuck transaction's minute: its partition is not Q's.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := cps.WaitRead(wctx, posA); err != nil {
		t.Fatalf("claim of shard %s held back by a transaction open in another partition: %v", shardQ, err)
	}
	if err := b.Commit(ctx, nil, "42", true); err != nil {
		t.Fatal(err)
	}
	if err := cps.Sync(wctx, posB.Partition); err != nil {
		t.Fatal(err)
	}
	if cp, ok := cps.Get(arn, shardQ); !ok || cp.After != "42" || !cp.End {
		t.Fatalf("checkpoint of %s = %+v, %v", shardQ, cp, ok)
	}
	if got := cps.Shards(arn); len(got) != 1 || got[shardQ].After != "42" {
		t.Fatalf("Shards = %+v", got)
	}
	if err := cps.Forget(ctx, arn, shardQ); err != nil {
		t.Fatal(err)
	}
	if err := cps.Sync(wctx, posB.Partition); err != nil {
		t.Fatal(err)
	}
	if cp, ok := cps.Get(arn, shardQ); ok {
		t.Fatalf("a forgotten shard has checkpoint %+v", cp)
	}
	if err := stuck.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}

	// Adding partitions moves shards: refused.
	if _, err := adm.CreatePartitions(ctx, 1, cpTopic); err != nil {
		t.Fatal(err)
	}
	// The broker answers metadata from its cache, which may still show four partitions for a
	// moment after CreatePartitions returns.
	var grown int32
	stacktest.Eventually(t, 30*time.Second, "the checkpoint topic shows 5 partitions", func() error {
		var err error
		grown, err = EnsureCheckpointTopic(ctx, adm, cpTopic, 4, 1)
		if err == nil && grown != 5 {
			err = fmt.Errorf("%d partitions", grown)
		}
		return err
	})
	cps2, err := NewCheckpoints(base, cpTopic, grown, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = cps2.Run(runCtx) }()
	if err := cps2.CheckPartitions(ctx); !errors.Is(err, ErrPartitionsChanged) || !strings.Contains(err.Error(), "has 5 partitions but was first used with 4") {
		t.Fatalf("CheckPartitions after adding one = %v", err)
	}
}

// brokerSetup requires Kafka and returns a test context, the base client options and an admin
// client closed with the test.
func brokerSetup(t *testing.T) (context.Context, []kgo.Opt, *kadm.Client) {
	t.Helper()
	s := stacktest.Require(t, stacktest.Kafka)
	base := []kgo.Opt{kgo.SeedBrokers(s.KafkaAddr)}
	admCl, err := kgo.NewClient(base...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admCl.Close)
	return stacktest.Context(t, 2*time.Minute), base, kadm.NewClient(admCl)
}
