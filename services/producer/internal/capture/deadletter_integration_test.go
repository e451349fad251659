//go:build integration

package capture

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/hamba/avro/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams/streamsfake"
)

// TestUnconvertibleRecordsBecomeDeadLetters: a stream record whose number DynamoDB itself would
// never produce (1E+999) goes to the dead-letter topic with the reason; the records around it
// reach the table's topic and the shard keeps flowing.
func TestUnconvertibleRecordsBecomeDeadLetters(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 2*time.Minute)
	fake := streamsfake.New(f.table)
	cfg := f.config()
	cfg.Tables[0].StreamARN = fake.ARN
	rec := func(pk, n string) st.Record {
		return streamsfake.Record(st.OperationTypeInsert, pk, nil, map[string]st.AttributeValue{
			"pk": &st.AttributeValueMemberS{Value: pk}, "n": &st.AttributeValueMemberN{Value: n}})
	}
	seqs := fake.Put("shard-0000", rec("good-1", "1"), rec("bad", "1E+999"), rec("good-2", "2"))

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	c := New(cfg, f.reg, fake, f.ddb, f.leases(), NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	go func() { done <- c.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	events := f.consume(ctx, cfg.TopicPrefix+".cdc."+f.table, 2)
	if events[0].ev.After["pk"] == nil || events[1].ev.After["pk"] == nil {
		t.Fatalf("events = %+v", events)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(f.s.KafkaAddr), kgo.ConsumeTopics(cfg.DeadLetterTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var dl avrov1.DeadLetter
	stacktest.Eventually(t, time.Minute, "a dead letter", func() error {
		recs := cl.PollRecords(ctx, 10).Records()
		if len(recs) == 0 {
			return fmt.Errorf("no dead letter yet")
		}
		_, payload, err := serde.SplitHeader(recs[0].Value)
		if err != nil {
			return err
		}
		return avro.Unmarshal(avrov1.MustParse().DeadLetter, payload, &dl)
	})
	if dl.Service != "producer" || !strings.Contains(dl.Reason, "attribute n") || !strings.Contains(dl.Reason, "1E+999") ||
		dl.Source == nil || !strings.HasSuffix(*dl.Source, "/shard-0000/"+seqs[1]) {
		t.Fatalf("dead letter = %+v (source %v)", dl, dl.Source)
	}
}
