//go:build integration

package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

type fixture struct {
	t      *testing.T
	s      *stacktest.Stack
	reg    *serde.Registry
	prefix string
	cl     *kgo.Client
}

func newFixture(t *testing.T) *fixture {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry)
	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &fixture{t: t, s: s, reg: serde.NewRegistry(srcl, slog.New(slog.DiscardHandler)),
		prefix: fmt.Sprintf("sinktest%d", time.Now().UnixNano()), cl: cl}
}

func (f *fixture) topic(name string, partitions int32) string {
	topic := f.prefix + "." + name
	resp, err := kadm.NewClient(f.cl).CreateTopic(context.Background(), partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		f.t.Fatal(err)
	}
	return topic
}

// produce writes change events of items id → value, at sequence numbers seq.
func (f *fixture) produce(ctx context.Context, enc *serde.TableEncoder, topic string, evs ...*ddbavro.Event) {
	f.t.Helper()
	var recs []*kgo.Record
	for _, ev := range evs {
		img := ev.After
		if img == nil {
			img = ev.Before
		}
		key, err := ddbavro.KeyOf(img, "id", "")
		if err != nil {
			f.t.Fatal(err)
		}
		k, v, err := enc.Encode(ctx, key, ev)
		if err != nil {
			f.t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: k, Value: v})
	}
	if err := f.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
}

func event(op, id string, seq int, v string) *ddbavro.Event {
	item := map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}, "v": &types.AttributeValueMemberS{Value: v}}
	ev := &ddbavro.Event{Op: op, TsMs: time.Now().UTC().Truncate(time.Millisecond),
		Source: avrov1.Source{Table: "orders", TableArn: "arn:aws:dynamodb:us-east-1:1:table/orders", SequenceNumber: aws.String(fmt.Sprint(seq)),
			ShardID: aws.String("shard-1"), EventID: aws.String(fmt.Sprint("e", seq)), ApproximateCreationMs: time.Now().UTC().Truncate(time.Millisecond),
			StreamViewType: "NEW_AND_OLD_IMAGES"}}
	if op == "d" {
		ev.Before = item
	} else {
		ev.After = item
	}
	return ev
}

func (f *fixture) pipeline(tables []Table) (*Pipeline, *serde.DeadLetterEncoder) {
	f.topic("dlq.sink", 1) // the sink's main creates it
	dlq, err := serde.NewDeadLetterEncoder(context.Background(), f.reg, f.prefix+".dlq.sink")
	if err != nil {
		f.t.Fatal(err)
	}
	return New(Config{Group: f.prefix + "-sink", DeadLetters: f.prefix + ".dlq.sink", Tables: tables,
		Batch: Batch{MaxRows: 50, MaxBytes: 1 << 20, MaxAge: 200 * time.Millisecond},
		Kafka: []kgo.Opt{kgo.SeedBrokers(f.s.KafkaAddr)}}, serde.NewDecoder(f.reg), dlq,
		NewMetrics(prometheus.NewRegistry()), health.NewProgress(time.Minute), slog.New(slog.DiscardHandler)), dlq
}

func run(t *testing.T, p *Pipeline) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pipeline: %v", err)
		}
	}
}

func rows(t *testing.T, w *writer.Writer) []parquetio.Row {
	t.Helper()
	r, err := delta.ReadRows(context.Background(), w.Table())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPipelineRoutesBatchesAndResumes feeds one topic into a mirror and a changelog table and a
// second topic into the changelog too, with a record that cannot be decoded among them; stops the
// pipeline and starts a new one (a new process) while more events arrive. Every event is in the
// changelog once, the mirror equals the fold of the events, and the bad record is a dead letter
// with its original bytes.
func TestPipelineRoutesBatchesAndResumes(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 2*time.Minute)
	orders, returns := f.topic("cdc.orders", 3), f.topic("cdc.returns", 1)
	enc, err := serde.NewTableEncoder(ctx, f.reg, orders, "orders", ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}
	encR, err := serde.NewTableEncoder(ctx, f.reg, returns, "returns", ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	newTables := func() ([]Table, *writer.Writer, *writer.Writer) {
		mst, _ := storage.NewLocal(dir + "/mirror")
		cst, _ := storage.NewLocal(dir + "/changelog")
		m := writer.New(writer.Config{Name: "orders_mirror", Mode: layout.Mirror, Buckets: 4}, mst, slog.New(slog.DiscardHandler))
		c := writer.New(writer.Config{Name: "changes", Mode: layout.Changelog}, cst, slog.New(slog.DiscardHandler))
		return []Table{{Name: "orders_mirror", Topics: []string{orders}, Writer: Direct(m)}, {Name: "changes", Topics: []string{orders, returns}, Writer: Direct(c)}}, m, c
	}
	want := map[string]string{}
	seq := 0
	total := 0
	batch := func(n int) {
		var evs []*ddbavro.Event
		for i := range n {
			seq++
			id := fmt.Sprintf("o-%d", seq%37)
			op := []string{"c", "u", "u", "d"}[i%4]
			v := fmt.Sprint("v", seq)
			evs = append(evs, event(op, id, seq, v))
			if op == "d" {
				delete(want, `[["S","`+id+`"]]`)
			} else {
				want[`[["S","`+id+`"]]`] = v
			}
		}
		f.produce(ctx, enc, orders, evs...)
		f.produce(ctx, encR, returns, event("c", fmt.Sprint("r-", seq), seq, "returned"))
		total += n + 1
	}
	batch(120)
	poison := []byte("definitely not avro")
	if err := f.cl.ProduceSync(ctx, &kgo.Record{Topic: orders, Key: []byte("k"), Value: poison, Partition: 0}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tables, _, _ := newTables()
	p, _ := f.pipeline(tables)
	stop := run(t, p)
	batch(80)
	check := func(m, c *writer.Writer) error {
		got := map[string]string{}
		for _, r := range rows(t, m) {
			got[r["_key"].(string)] = r["v"].(string)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("mirror has %d items, want %d", len(got), len(want))
		}
		seen := map[string]bool{}
		for _, r := range rows(t, c) {
			id := fmt.Sprint(r["_kafka_topic"], r["_kafka_partition"], "@", r["_kafka_offset"])
			if seen[id] {
				t.Fatalf("changelog holds %s twice", id)
			}
			seen[id] = true
		}
		if len(seen) != total {
			return fmt.Errorf("changelog has %d rows, want %d", len(seen), total)
		}
		return nil
	}
	_, m, c := newTables()
	stacktest.Eventually(t, time.Minute, "tables caught up", func() error { return check(m, c) })
	stop()
	// A new pipeline (a restarted process) resumes from the tables' offsets.
	batch(60)
	tables2, m2, c2 := newTables()
	p2, _ := f.pipeline(tables2)
	stop2 := run(t, p2)
	defer stop2()
	stacktest.Eventually(t, time.Minute, "tables caught up after the restart", func() error { return check(m2, c2) })
	// The independent readers see the same tables.
	for _, r := range [][2]string{{f.s.DeltaPython, "read_table.py"}, {f.s.SparkPython, "spark_read_table.py"}} {
		mirror, changelog := independent(t, f.s, r, dir+"/mirror"), independent(t, f.s, r, dir+"/changelog")
		got := map[string]string{}
		for _, row := range mirror {
			got[fmt.Sprint(row["_key"])] = fmt.Sprint(row["v"])
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || len(changelog) != total {
			t.Fatalf("%s reads a mirror of %d items (want %d) and a changelog of %d rows (want %d)", r[1], len(got), len(want), len(changelog), total)
		}
	}

	// The poison record is a dead letter carrying its bytes and a reason naming it.
	dl, err := kgo.NewClient(kgo.SeedBrokers(f.s.KafkaAddr), kgo.ConsumeTopics(f.prefix+".dlq.sink"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	stacktest.Eventually(t, 30*time.Second, "the dead letter", func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var found error = fmt.Errorf("no dead letter yet")
		dl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			d, err := serde.DecodeDeadLetter(r.Value)
			if err != nil {
				t.Fatalf("decoding the dead letter: %v", err)
			}
			if d.Value == nil || string(*d.Value) != string(poison) || *d.Topic != orders || !strings.Contains(d.Reason, "wire format") {
				t.Fatalf("dead letter %+v", d)
			}
			found = nil
		})
		return found
	})
}

// independent reads a table with read_table.py (delta-rs) or spark_read_table.py (Spark).
func independent(t *testing.T, s *stacktest.Stack, r [2]string, location string) []map[string]any {
	t.Helper()
	cmd := exec.Command(r[0], filepath.Join(s.Root, "scripts", "python", r[1]), location)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s reading %s: %v\n%s", r[1], location, err, stderr.String())
	}
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s output: %v", r[1], err)
	}
	return got.Rows
}
