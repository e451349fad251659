package pipeline

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
	"github.com/twmb/franz-go/pkg/kgo"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/globaltable"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/platform/benchutil"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// benchEvents returns n order changes of ~300-byte items, encoded as the producer writes them.
func benchEvents(b *testing.B, ctx context.Context, reg *serde.Registry, topic, table string, n int, item func(i int) map[string]types.AttributeValue) []*kgo.Record {
	enc, err := serde.NewTableEncoder(ctx, reg, topic, table, ddbavro.Typed)
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]*kgo.Record, n)
	for i := range n {
		it := item(i)
		ev := &ddbavro.Event{Op: "u", After: it, TsMs: time.UnixMilli(1795500000000).UTC(),
			Source: avrov1.Source{Table: table, SequenceNumber: aws.String(strconv.Itoa(1000 + i)), EventID: aws.String(fmt.Sprint(i)),
				ApproximateCreationMs: time.UnixMilli(1795500000000).UTC(), StreamViewType: "NEW_IMAGE"}}
		k, v, err := enc.Encode(ctx, avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(it["id"].(*types.AttributeValueMemberS).Value)}}, ev)
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = &kgo.Record{Topic: topic, Key: k, Value: v, Offset: int64(i)}
	}
	return recs
}

func benchOrder(i int) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"id":          s(fmt.Sprintf("order-%07d", i)),
		"customer_id": s(fmt.Sprintf("customer-%04d", i%1000)),
		"status":      s([]string{"placed", "paid", "shipped"}[i%3]),
		"amount":      n(fmt.Sprintf("%d.%02d", i%500, i%100)),
		"qty":         n(strconv.Itoa(1 + i%9)),
		"note":        s("gift wrap, leave at the door, call before delivery, fragile items inside"),
		"skus":        &types.AttributeValueMemberSS{Value: []string{"sku-" + strconv.Itoa(i%1000), "sku-" + strconv.Itoa(i%77)}},
		"address":     &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"city": s("Lyon"), "zip": s("69001")}},
	}
}

// BenchmarkEnricher measures the enricher's work on batches of 5,000 order changes (~300-byte
// items), per CPU-second, with an in-memory registry:
//   - baseline-decode-encode: decoding each event and encoding it again for the output, no logic;
//   - filter: a filter (two thirds pass) and the images passed through;
//   - filter-join-project: the filter, a join with a 1,000-customer global table in Pebble, and a
//     projection of seven fields.
func BenchmarkEnricher(b *testing.B) {
	const batch = 5000
	ctx := context.Background()
	reg := registry(b)
	recs := benchEvents(b, ctx, reg, "cdc.orders", "orders", batch, benchOrder)
	b.Run("baseline-decode-encode", func(b *testing.B) {
		dec := serde.NewDecoder(reg)
		enc, err := serde.NewTableEncoder(ctx, reg, "out.baseline", "orders", ddbavro.Typed)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		clock := benchutil.Start()
		for range b.N {
			for _, r := range recs {
				key, err := dec.DecodeKey(r.Key)
				if err != nil {
					b.Fatal(err)
				}
				ev, _, err := dec.Decode(ctx, r.Value)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := enc.Encode(ctx, key, ev); err != nil {
					b.Fatal(err)
				}
			}
		}
		clock.Report(b, b.N*batch, "events")
	})
	run := func(b *testing.B, body string, src Sources) {
		st := settings.Defaults()
		if err := loadString(body, st); err != nil {
			b.Fatal(err)
		}
		dlq, err := serde.NewDeadLetterEncoder(ctx, reg, st.DeadLetters)
		if err != nil {
			b.Fatal(err)
		}
		e, err := New(ctx, st, src, reg, dlq, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		clock := benchutil.Start()
		outs := 0
		for range b.N {
			out, err := e.Process(ctx, recs)
			if err != nil {
				b.Fatal(err)
			}
			outs += len(out)
		}
		clock.Report(b, b.N*batch, "events")
		b.ReportMetric(float64(outs)/float64(b.N*batch), "out/event")
	}
	b.Run("filter", func(b *testing.B) {
		run(b, `
pipelines:
  - name: paid
    inputs: [cdc.orders]
    filter: 'op != "d" && item.status != "placed"'
`, Sources{})
	})
	b.Run("filter-join-project", func(b *testing.B) {
		store, err := globaltable.Open(b.TempDir(), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		customers := globaltable.New("customers", "cdc.customers", store, nil, nil, serde.NewDecoder(reg),
			globaltable.NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
		crecs := benchEvents(b, ctx, reg, "cdc.customers", "customers", 1000, func(i int) map[string]types.AttributeValue {
			return map[string]types.AttributeValue{"id": s(fmt.Sprintf("customer-%04d", i)), "name": s(fmt.Sprintf("Customer %d", i)),
				"tier": s([]string{"gold", "silver", "bronze"}[i%3]), "since": n("2019")}
		})
		if err := customers.Apply(ctx, crecs); err != nil {
			b.Fatal(err)
		}
		run(b, `
global_tables: [{name: customers, topic: cdc.customers}]
pipelines:
  - name: paid_with_customer
    inputs: [cdc.orders]
    filter: 'op != "d" && item.status != "placed"'
    joins: [{as: customer, global_table: customers, on: {id: item.customer_id}, type: inner}]
    projection:
      - {name: order_id, expr: key.id}
      - {name: amount, expr: item.amount}
      - {name: qty, expr: item.qty}
      - {name: customer_name, expr: customer.name}
      - {name: tier, expr: customer.tier}
      - {name: is_gold, expr: 'customer.tier == "gold"'}
      - {name: city, expr: item.address.city}
`, Sources{Global: map[string]Source{"customers": Global{T: customers}}})
	})
}
