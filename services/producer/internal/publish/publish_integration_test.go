//go:build integration

package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	s := stacktest.Require(t, stacktest.Kafka)
	ctx := stacktest.Context(t, 2*time.Minute)
	base := []kgo.Opt{kgo.SeedBrokers(s.KafkaAddr)}
	admCl, err := kgo.NewClient(base...)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	n := time.Now().UnixNano()
	data, cpTopic := fmt.Sprintf("stacktest.cdc.fence_%d", n), fmt.Sprintf("stacktest.checkpoints_%d", n)
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, data); err != nil {
		t.Fatal(err)
	}
	if err := EnsureCheckpointTopic(ctx, adm, cpTopic, 1); err != nil {
		t.Fatal(err)
	}
	if err := EnsureCheckpointTopic(ctx, adm, cpTopic, 1); err != nil {
		t.Fatalf("second EnsureCheckpointTopic: %v", err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), data, cpTopic) })

	cps, err := NewCheckpoints(base, cpTopic, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = cps.Run(runCtx) }()

	const arn, shard = "arn:stream", "shard-1"
	txn := TransactionalID("stacktest", arn, fmt.Sprint(n))
	recs := func(vals ...string) []*kgo.Record {
		var out []*kgo.Record
		for _, v := range vals {
			out = append(out, &kgo.Record{Topic: data, Key: []byte(v), Value: []byte(v)})
		}
		return out
	}

	a, err := NewShardWriter(base, txn, cpTopic, arn, shard, "A")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	nonceA, err := a.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cps.WaitClaim(ctx, arn, shard, nonceA); err != nil {
		t.Fatal(err)
	}
	if _, ok := cps.Get(arn, shard); ok {
		t.Fatal("a new shard has a checkpoint")
	}
	if err := a.Commit(ctx, recs("a1", "a2"), "100", false); err != nil {
		t.Fatal(err)
	}

	b, err := NewShardWriter(base, txn, cpTopic, arn, shard, "B")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	nonceB, err := b.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, recs("zombie"), "200", false); !errors.Is(err, ErrFenced) {
		t.Fatalf("the fenced writer's commit = %v, want ErrFenced", err)
	}
	if err := cps.WaitClaim(ctx, arn, shard, nonceB); err != nil {
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
