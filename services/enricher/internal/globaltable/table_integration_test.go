//go:build integration

package globaltable

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/keys"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestGlobalTableRestoresResumesAndFollows writes customers to a compacted topic in transactions
// (some aborted), restores a table from it, follows new changes, resumes from the stored offsets
// after a restart, and starts afresh when the topic is created again.
func TestGlobalTableRestoresResumesAndFollows(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry)
	ctx := stacktest.Context(t, 3*time.Minute)
	topic := fmt.Sprintf("gt%d.cdc.customers", time.Now().UnixNano())
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr), kgo.TransactionalID(topic+"-writer"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cl.Close() }()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	create := func() {
		if _, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": aws.String("compact")}, topic); err != nil {
			t.Fatal(err)
		}
	}
	create()
	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	reg := serde.NewRegistry(srcl, slog.New(slog.DiscardHandler))
	enc, err := serde.NewTableEncoder(ctx, reg, topic, "customers", ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}
	// write commits (or aborts) one transaction of changes: id → tier ("" deletes).
	write := func(commit bool, changes map[string]string) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for id, tier := range changes {
			ev := &ddbavro.Event{Op: "u", After: map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}, "tier": &types.AttributeValueMemberS{Value: tier}},
				Source: avrov1.Source{Table: "customers"}, TsMs: time.Now()}
			if tier == "" {
				ev.Op, ev.After = "d", nil
			}
			k, v, err := enc.Encode(ctx, avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(id)}}, ev)
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: k, Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	batch := map[string]string{}
	for i := range 200 {
		batch["c"+strconv.Itoa(i)] = "silver"
	}
	write(true, batch)
	write(false, map[string]string{"c1": "aborted", "ghost": "aborted"}) // never visible
	write(true, map[string]string{"c2": "gold", "c3": ""})

	dir := t.TempDir()
	open := func() (*Table, *Store, *Metrics, context.CancelFunc, chan struct{}) {
		store, err := Open(dir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		m := NewMetrics(prometheus.NewRegistry())
		tb := New("customers", topic, store, []kgo.Opt{kgo.SeedBrokers(s.KafkaAddr)}, adm, serde.NewDecoder(reg), m, slog.New(slog.DiscardHandler))
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = tb.Run(rctx); close(done) }()
		select {
		case <-tb.Restored():
		case <-ctx.Done():
			t.Fatal("not restored")
		}
		return tb, store, m, cancel, done
	}
	tier := func(tb *Table, id string) string {
		t.Helper()
		k, _ := keys.Encode(map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}})
		item, ok, err := tb.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return ""
		}
		return item["tier"].(*types.AttributeValueMemberS).Value
	}
	tb, store, m, cancel, done := open()
	if got := testutil.ToFloat64(m.entries.WithLabelValues("customers")); got != 199 {
		t.Fatalf("%g entries after the restore, want 199 (200 less a delete)", got)
	}
	if tier(tb, "c1") != "silver" || tier(tb, "c2") != "gold" || tier(tb, "c3") != "" || tier(tb, "ghost") != "" {
		t.Fatalf("c1 %q c2 %q c3 %q ghost %q", tier(tb, "c1"), tier(tb, "c2"), tier(tb, "c3"), tier(tb, "ghost"))
	}
	if names := tb.KeyNames(); len(names) != 1 || names[0] != "id" {
		t.Fatalf("key names %v", names)
	}
	write(true, map[string]string{"c4": "platinum"})
	stacktest.Eventually(t, 30*time.Second, "a change after the restore", func() error {
		if got := tier(tb, "c4"); got != "platinum" {
			return fmt.Errorf("c4 is %q", got)
		}
		return nil
	})
	cancel()
	<-done
	store.Close()

	// Restart: only what came since is read.
	write(true, map[string]string{"c5": "gold"})
	tb, store, m, cancel, done = open()
	if applied := testutil.ToFloat64(m.applied.WithLabelValues("customers")); applied > 3 {
		t.Errorf("the restart read %g records; it should resume after the stored offsets", applied)
	}
	if tier(tb, "c5") != "gold" || tier(tb, "c4") != "platinum" || tier(tb, "c10") != "silver" {
		t.Fatalf("after the restart: c5 %q c4 %q c10 %q", tier(tb, "c5"), tier(tb, "c4"), tier(tb, "c10"))
	}
	cancel()
	<-done
	store.Close()

	// The topic created again: the store starts afresh.
	if resp, err := adm.DeleteTopics(ctx, topic); err != nil || resp.Error() != nil {
		t.Fatal(err, resp.Error())
	}
	stacktest.Eventually(t, 30*time.Second, "topic created again", func() error {
		resp, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": aws.String("compact")}, topic)
		if err == nil {
			err = resp.Err
		}
		return err
	})
	// A producer that wrote to the old topic refuses the new one (franz-go checks topic ids).
	cl.Close()
	if cl, err = kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr), kgo.TransactionalID(topic+"-writer2")); err != nil {
		t.Fatal(err)
	}
	write(true, map[string]string{"n1": "new"})
	tb, store, _, cancel, done = open()
	defer func() { cancel(); <-done; store.Close() }()
	if tier(tb, "n1") != "new" || tier(tb, "c1") != "" {
		t.Fatalf("after the topic was recreated: n1 %q, c1 %q (should be gone)", tier(tb, "n1"), tier(tb, "c1"))
	}
}
