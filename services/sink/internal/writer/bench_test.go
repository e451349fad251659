package writer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/benchutil"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// eventBytes is the size of a bench event's item, as DynamoDB counts it: about 500 bytes.
const eventBytes = 500

// benchChange is a change of item i at sequence seq, about 500 bytes of attributes.
func benchChange(i, seq int, off int64) Change {
	item := map[string]types.AttributeValue{
		"id":       &types.AttributeValueMemberS{Value: fmt.Sprintf("order-%07d", i)},
		"customer": &types.AttributeValueMemberS{Value: fmt.Sprintf("customer-%05d", i%5000)},
		"status":   &types.AttributeValueMemberS{Value: []string{"placed", "paid", "shipped"}[seq%3]},
		"amount":   &types.AttributeValueMemberN{Value: fmt.Sprintf("%d.%02d", seq%10000, i%100)},
		"quantity": &types.AttributeValueMemberN{Value: fmt.Sprint(i % 7)},
		"tags":     &types.AttributeValueMemberSS{Value: []string{"gift", "express"}},
		"address": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
			"city": &types.AttributeValueMemberS{Value: "Zürich"}, "zip": &types.AttributeValueMemberN{Value: "8001"}}},
		"note": &types.AttributeValueMemberS{Value: strings.Repeat("n", 330)},
	}
	return Change{
		Event: &ddbavro.Event{Op: "u", After: item, TsMs: time.UnixMilli(1795500000000 + int64(seq)), Source: avrov1.Source{Table: "orders",
			SequenceNumber: aws.String(fmt.Sprint(seq)), ShardID: aws.String("shardId-000001"), EventID: aws.String(fmt.Sprint("e", seq)),
			ApproximateCreationMs: time.UnixMilli(1795500000000 + int64(seq))}},
		Key:    avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(fmt.Sprintf("order-%07d", i))}},
		Origin: layout.Origin{Topic: "cdc", Partition: int32(i % 6), Offset: off},
	}
}

func report(b *testing.B, rows int, wall, cpu time.Duration) {
	b.ReportMetric(float64(rows)/wall.Seconds(), "rows/s")
	b.ReportMetric(float64(rows)/cpu.Seconds(), "rows/cpu-s")
	b.ReportMetric(float64(rows*eventBytes)/1e6/cpu.Seconds(), "MB/cpu-s")
}

// BenchmarkSinkWriter measures the sink's table writer on the local filesystem, per CPU-second,
// with batches of 10,000 changes of ~500-byte items:
//   - baseline-parquet-encode: encoding the same rows as Parquet, nothing else;
//   - changelog: appending batches (rows, Parquet, stats, commit);
//   - mirror-1m-1pct: a mirror of 1,000,000 rows receiving batches updating 1% of them (10,000
//     random keys): compaction to the newest change, the sequence guard, reading and rewriting the
//     touched files (with 16 buckets every bucket is touched: see the README's cost model).
func BenchmarkSinkWriter(b *testing.B) {
	const batch = 10_000
	ctx := context.Background()
	changes := make([]Change, batch)
	for i := range changes {
		changes[i] = benchChange(i, i, int64(i))
	}
	b.Run("baseline-parquet-encode", func(b *testing.B) {
		lay, _ := layout.New(layout.Options{Mode: layout.Changelog}, nil, nil)
		rows := make([]parquetio.Row, batch)
		for i, c := range changes {
			r, err := lay.Row(c.Event, c.Key, c.Origin)
			if err != nil {
				b.Fatal(err)
			}
			rows[i] = parquetio.Row(r)
		}
		schema := lay.Schema()
		b.ResetTimer()
		start, cpu := time.Now(), benchutil.CPUTime()
		for range b.N {
			if _, _, err := parquetio.Write(schema, nil, rows, parquetio.Options{}); err != nil {
				b.Fatal(err)
			}
		}
		report(b, b.N*batch, time.Since(start), benchutil.CPUTime()-cpu)
	})
	b.Run("changelog", func(b *testing.B) {
		st, _ := storage.NewLocal(b.TempDir())
		w := New(Config{Name: "bench", Mode: layout.Changelog}, st, slog.New(slog.DiscardHandler))
		b.Cleanup(w.Close)
		off := int64(0)
		b.ResetTimer()
		start, cpu := time.Now(), benchutil.CPUTime()
		for n := range b.N {
			for i := range changes {
				off++
				changes[i].Origin.Offset = off
				changes[i].Event.Source.SequenceNumber = aws.String(fmt.Sprint(n*batch + i))
			}
			if _, err := w.Write(ctx, changes, nil); err != nil {
				b.Fatal(err)
			}
		}
		report(b, b.N*batch, time.Since(start), benchutil.CPUTime()-cpu)
	})
	b.Run("mirror-1m-1pct", func(b *testing.B) {
		const size = 1_000_000
		st, _ := storage.NewLocal(b.TempDir())
		w := New(Config{Name: "bench", Mode: layout.Mirror, Buckets: 16}, st, slog.New(slog.DiscardHandler))
		b.Cleanup(w.Close)
		seq, off := 0, int64(0)
		for start := 0; start < size; start += 100_000 {
			load := make([]Change, 0, 100_000)
			for i := start; i < start+100_000; i++ {
				seq++
				off++
				load = append(load, benchChange(i, seq, off))
			}
			if _, err := w.Write(ctx, load, nil); err != nil {
				b.Fatal(err)
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		b.ResetTimer()
		start, cpu := time.Now(), benchutil.CPUTime()
		rewritten := 0
		for range b.N {
			upd := make([]Change, batch)
			for i := range upd {
				seq++
				off++
				upd[i] = benchChange(rng.IntN(size), seq, off)
			}
			res, err := w.Write(ctx, upd, nil)
			if err != nil {
				b.Fatal(err)
			}
			rewritten += res.Rewritten
		}
		report(b, b.N*batch, time.Since(start), benchutil.CPUTime()-cpu)
		b.ReportMetric(float64(rewritten)/float64(b.N), "files-rewritten/op")
	})
}
