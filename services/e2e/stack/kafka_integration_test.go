//go:build integration

package stack

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestKafkaTransactions produces a committed, an aborted and another committed transaction, and
// checks that a read_committed consumer sees exactly the committed records while read_uncommitted
// sees all of them: the broker's transaction coordinator works with one replica.
func TestKafkaTransactions(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka)
	ctx := stacktest.Context(t, 90*time.Second)
	topic := fmt.Sprintf("stacktest.txn.%d", time.Now().UnixNano())

	admin, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })

	prod, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr), kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID("stacktest-"+topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	txn := func(commit kgo.TransactionEndTry, values ...string) {
		t.Helper()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatalf("begin transaction: %v", err)
		}
		for _, v := range values {
			if err := prod.ProduceSync(ctx, kgo.StringRecord(v)).FirstErr(); err != nil {
				t.Fatalf("producing %s: %v", v, err)
			}
		}
		if err := prod.EndTransaction(ctx, commit); err != nil {
			t.Fatalf("ending transaction: %v", err)
		}
	}
	txn(kgo.TryCommit, "a1", "a2", "a3")
	txn(kgo.TryAbort, "x1", "x2")
	txn(kgo.TryCommit, "b1")

	tests := []struct {
		name      string
		isolation kgo.IsolationLevel
		want      []string
	}{
		{"read_committed", kgo.ReadCommitted(), []string{"a1", "a2", "a3", "b1"}},
		{"read_uncommitted", kgo.ReadUncommitted(), []string{"a1", "a2", "a3", "x1", "x2", "b1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := consumeUntil(t, ctx, s.KafkaAddr, topic, tt.isolation, "b1")
			if !slices.Equal(got, tt.want) {
				t.Fatalf("consumed %v, want %v", got, tt.want)
			}
		})
	}
}

// consumeUntil reads topic from the start until it sees the value last. Records of one partition
// arrive in order, so anything that should have been filtered before last would have shown up.
func consumeUntil(t *testing.T, ctx context.Context, addr, topic string, iso kgo.IsolationLevel, last string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(iso),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("gave up waiting for %q; consumed so far %v", last, got)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetching %s[%d]: %v", topic, p, err) })
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			got = append(got, string(r.Value))
			done = done || string(r.Value) == last
		})
		if done {
			return got
		}
	}
}
