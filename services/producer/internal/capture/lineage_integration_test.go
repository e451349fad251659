//go:build integration

package capture

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams/streamsfake"
)

// TestCaptureReadsParentsBeforeChildren runs the capture over the in-process Streams fake (DynamoDB
// Local never splits shards) into real Kafka: one key's changes start in a shard that then splits
// and continue in a child, while iterators expire and calls are throttled. The topic must hold the
// key's changes in order: every parent record before any child record.
func TestCaptureReadsParentsBeforeChildren(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 2*time.Minute)
	fake := streamsfake.New(f.table)
	cfg := f.config()
	cfg.Tables[0].StreamARN = fake.ARN
	rec := func(op st.OperationType, n int) st.Record {
		img := map[string]st.AttributeValue{"pk": &st.AttributeValueMemberS{Value: "k"}, "n": &st.AttributeValueMemberN{Value: fmt.Sprint(n)}}
		return streamsfake.Record(op, "k", nil, img)
	}
	fake.Put("shard-0000", rec(st.OperationTypeInsert, 0), rec(st.OperationTypeModify, 1), rec(st.OperationTypeModify, 2))
	// The children get records before the parent is even read: a reader that did not wait for the
	// parent would publish them first.
	fake.Split("shard-0000", "shard-0001", "shard-0002")
	fake.Put("shard-0002", rec(st.OperationTypeModify, 3), rec(st.OperationTypeModify, 4))
	fake.Put("shard-0001", rec(st.OperationTypeInsert, 100))
	fake.Throttle(3)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	c := New(cfg, f.reg, fake, f.ddb, f.leases(), NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	go func() { done <- c.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	events := f.consume(ctx, cfg.TopicPrefix+".cdc."+f.table, 6)
	var order []string
	for _, e := range events {
		order = append(order, e.ev.After["n"].(*types.AttributeValueMemberN).Value)
	}
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	if fmt.Sprint(order[:3]) != "[0 1 2]" || pos["3"] > pos["4"] || len(pos) != 6 {
		t.Fatalf("published order %v: want the parent's 0 1 2 first, then the children's records, each child in order", order)
	}
	if fake.Calls() == 0 {
		t.Fatal("the fake was not used")
	}
}
