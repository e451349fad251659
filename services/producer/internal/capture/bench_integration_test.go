//go:build integration

package capture

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ddb2delta/ddb2delta/services/platform/benchutil"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/changes"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams/streamsfake"
)

// benchItem is a typical order item of about 200 bytes.
func benchItem(i int) map[string]st.AttributeValue {
	return map[string]st.AttributeValue{
		"pk":       &st.AttributeValueMemberS{Value: fmt.Sprintf("order-%06d", i)},
		"customer": &st.AttributeValueMemberS{Value: fmt.Sprintf("customer-%03d", i%500)},
		"status":   &st.AttributeValueMemberS{Value: "paid"},
		"amount":   &st.AttributeValueMemberN{Value: fmt.Sprintf("%d.%02d", i%1000, i%100)},
		"quantity": &st.AttributeValueMemberN{Value: strconv.Itoa(i % 7)},
		"tags":     &st.AttributeValueMemberSS{Value: []string{"gift", "express"}},
		"address": &st.AttributeValueMemberM{Value: map[string]st.AttributeValue{
			"city": &st.AttributeValueMemberS{Value: "Zürich"}, "zip": &st.AttributeValueMemberN{Value: "8001"}}},
	}
}

// report sets the benchmark's per-record figures for one run of n records.
func report(b *testing.B, n int, wall, cpu time.Duration) {
	b.ReportMetric(float64(n)/wall.Seconds(), "records/s")
	b.ReportMetric(float64(n)/cpu.Seconds(), "records/cpu-s")
}

// BenchmarkProducerPipeline measures the producer from GetRecords pages to records acknowledged
// by Kafka (committed transactions), per CPU-second of this process (the broker and DynamoDB Local
// are other processes) and per wall-clock second, for 5,000 typical records (about 200 bytes each):
//   - baseline-encode-only: converting and encoding the same records, no Kafka;
//   - replay-to-kafka: recorded pages served by the in-process Streams fake: our CPU cost alone;
//   - dynamodb-local-to-kafka: the records written to DynamoDB Local and read from its stream.
func BenchmarkProducerPipeline(b *testing.B) {
	const n = 5000
	b.Run("baseline-encode-only", func(b *testing.B) {
		f := newFixture(b)
		ctx := stacktest.Context(b, 5*time.Minute)
		fake := streamsfake.New("bench")
		for i := range n {
			fake.Put("shard-0000", streamsfake.Record(st.OperationTypeInsert, fmt.Sprint(i), nil, benchItem(i)))
		}
		page, err := streams.NewReader(fake, fake.ARN, "shard-0000", "", streams.Polling{PageLimit: n}, streams.Events{}, slog.New(slog.DiscardHandler)).Next(ctx)
		if err != nil || len(page.Records) != n {
			b.Fatalf("recorded page: %d records, %v", len(page.Records), err)
		}
		enc, err := serde.NewTableEncoder(ctx, f.reg, f.prefix+".cdc.bench", "bench", ddbavro.Typed)
		if err != nil {
			b.Fatal(err)
		}
		table := changes.Table{Name: "bench", StreamARN: fake.ARN, ViewType: "NEW_AND_OLD_IMAGES", PartitionKey: "pk"}
		for b.Loop() {
			wall, cpu := time.Now(), benchutil.CPUTime()
			for _, r := range page.Records {
				ev, key, err := changes.Convert(table, "shard-0000", r, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := enc.Encode(ctx, key, ev); err != nil {
					b.Fatal(err)
				}
			}
			report(b, n, time.Since(wall), benchutil.CPUTime()-cpu)
		}
	})
	b.Run("replay-to-kafka", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			f := newFixture(b)
			fake := streamsfake.New(f.table)
			for i := range n {
				fake.Put("shard-0000", streamsfake.Record(st.OperationTypeInsert, fmt.Sprint(i), nil, benchItem(i)))
			}
			fake.Close("shard-0000")
			cfg := f.config()
			cfg.Tables[0].StreamARN = fake.ARN
			b.StartTimer()
			f.runUntilPublished(b, cfg, fake, n)
		}
	})
	b.Run("dynamodb-local-to-kafka", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			f := newFixture(b)
			ctx := stacktest.Context(b, 5*time.Minute)
			for start := 0; start < n; start += 25 {
				var batch []types.WriteRequest
				for i := start; i < min(start+25, n); i++ {
					it, _ := changes.Item(benchItem(i))
					it["sk"] = &types.AttributeValueMemberN{Value: strconv.Itoa(i)}
					batch = append(batch, types.WriteRequest{PutRequest: &types.PutRequest{Item: it}})
				}
				if _, err := f.ddb.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{f.table: batch}}); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			f.runUntilPublished(b, f.config(), f.api, n)
		}
	})
}

// runUntilPublished runs a capture from its start until n records are committed, and reports.
func (f *fixture) runUntilPublished(b *testing.B, cfg Config, api streams.API, n int) {
	ctx, cancel := context.WithCancel(stacktest.Context(b, 5*time.Minute))
	reg := prometheus.NewRegistry()
	wall, cpu := time.Now(), benchutil.CPUTime()
	c := New(cfg, f.reg, api, f.ddb, f.leases(), NewMetrics(reg), slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stacktest.Eventually(b, 4*time.Minute, "all records published", func() error {
		if got := published(b, reg); got < n {
			return fmt.Errorf("%d of %d published", got, n)
		}
		return nil
	})
	w, u := time.Since(wall), benchutil.CPUTime()-cpu
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	report(b, n, w, u)
}

func published(b *testing.B, reg *prometheus.Registry) int {
	n, err := testutil.GatherAndCount(reg, "ddb2delta_producer_records_total")
	if err != nil || n == 0 {
		return 0
	}
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "ddb2delta_producer_records_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return int(total)
}
