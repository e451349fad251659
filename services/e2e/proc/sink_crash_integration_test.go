//go:build integration

package proc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestSinkSurvivesKill9 runs the real sink binary on a stream of change events (inserts, updates,
// deletes over 60 items, a new attribute appearing half-way) into two mirrors (deletion vectors
// and copy-on-write) and a changelog table,
// kills it with SIGKILL at random moments (six times; with commits every ~200 ms the kills land
// before, during and after Parquet writes and Delta commits, and between a commit and the offset
// commit) and restarts it; then makes it kill itself exactly after writing Parquet files but
// before committing them, and exactly after a Delta commit but before the Kafka offset commit.
// Afterwards delta-rs and Spark, reading the tables independently, must find every
// event exactly once in the changelog and each mirror equal to the fold of the events.
func TestSinkSurvivesKill9(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry)
	ctx := stacktest.Context(t, 5*time.Minute)
	h := newCrashHarness(t, ctx, s, fmt.Sprintf("sinkcrash%d", time.Now().UnixNano()))
	h.config(t, fmt.Sprintf(`tables_root: %s
batch: {max_rows: 40, max_age: 200ms}
checkpoint_interval: 5
tables:
  - {name: mirror, topics: [%[2]s], mode: mirror, location: mirror, schema_hints: {v: long}}
  - {name: mirror_cow, topics: [%[2]s], mode: mirror, mirror_strategy: copy_on_write, location: mirror_cow, buckets: 4, schema_hints: {v: long}}
  - {name: changelog, topics: [%[2]s], mode: changelog, location: changelog, partition_by: date}
`, h.dir, h.topic))
	h.run(t, ctx, 2*time.Millisecond, 6, 400*time.Millisecond, 1600*time.Millisecond, []string{"after-parquet:3", "after-commit:2"}, 2*time.Minute)
	h.check(t, 2*time.Minute, filepath.Join(h.dir, "changelog"), filepath.Join(h.dir, "mirror"), filepath.Join(h.dir, "mirror_cow"))
	t.Logf("6 random kills and 2 at fault points during %d events: delta-rs and Spark read each once in the changelog and both mirrors equal the fold (%d items)", h.produced, len(h.want))
}

// crashHarness runs the sink binary on a stream of order events, kills it and checks its tables.
type crashHarness struct {
	s        *stacktest.Stack
	bin      string
	prefix   string
	topic    string
	dir      string
	conf     string
	cl       *kgo.Client
	enc      *serde.TableEncoder
	p        *Process
	want     map[string]string // the mirror fold
	produced int
}

// newCrashHarness builds the sink and creates the topic (three partitions) and its encoder.
func newCrashHarness(t *testing.T, ctx context.Context, s *stacktest.Stack, prefix string) *crashHarness {
	h := &crashHarness{s: s, bin: Build(t, s.Root, "sink")["sink"], prefix: prefix, topic: prefix + ".cdc.orders", dir: t.TempDir()}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, h.topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatal(err)
	}
	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	h.enc, err = serde.NewTableEncoder(ctx, serde.NewRegistry(srcl, slog.New(slog.DiscardHandler)), h.topic, "orders", ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}
	h.cl = cl
	return h
}

// config writes the sink's configuration: the consumer group and dead letters of the run, then
// the rest.
func (h *crashHarness) config(t *testing.T, rest string) {
	h.conf = filepath.Join(h.dir, "sink.yaml")
	body := fmt.Sprintf("consumer_group: %[1]s\ndead_letters: %[1]s.dlq.sink\n", h.prefix) + rest
	if err := os.WriteFile(h.conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (h *crashHarness) start(t *testing.T, extra ...string) *Process {
	env := []string{"DDB2DELTA_SINK_KAFKA_BROKERS=" + h.s.KafkaAddr, "DDB2DELTA_SINK_SCHEMA_REGISTRY_URL=" + h.s.RegistryURL, "DDB2DELTA_SINK_HTTP_LISTEN=" + FreeAddr(t)}
	return Start(t, "sink", h.bin, []string{"-config", h.conf}, append(env, extra...))
}

// run produces events one per tick while the sink is killed with SIGKILL kills times, after a
// pause of minPause plus up to jitter each, restarted each time; then made to kill itself at each
// fault point (the instants random kills may miss), each reached within reach; then started for
// good, while the producing stops.
func (h *crashHarness) run(t *testing.T, ctx context.Context, tick time.Duration, kills int, minPause, jitter time.Duration, faults []string, reach time.Duration) {
	writeCtx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	stream := produceOrders(writeCtx, h.cl, h.enc, h.topic, tick)
	p := h.start(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for kill := range kills {
		pause(t, ctx, minPause+time.Duration(rng.Int64N(int64(jitter))))
		if p.Exited() {
			t.Fatalf("sink exited on its own before kill %d:\n%s", kill, p.Output())
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		p = h.start(t)
	}
	if _, err := p.Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, f := range faults {
		p = h.start(t, "DDB2DELTA_TEST_FAULT="+f)
		if _, err := p.Wait(reach); err != nil {
			t.Fatalf("the sink did not reach fault point %s: %v\n%s", f, err, p.Output())
		}
		if !strings.Contains(p.Output(), "fault injected: SIGKILL at "+strings.Split(f, ":")[0]) {
			t.Fatalf("the sink exited, but not at fault point %s:\n%s", f, p.Output())
		}
	}
	h.p = h.start(t)
	stopWrites()
	var err error
	if h.want, h.produced, err = stream.wait(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	t.Cleanup(func() {
		if _, err := h.p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Error(err)
		}
	})
}

// check waits until delta-rs finds every event once in the changelog and each mirror equal to
// the fold, then checks that Spark reads the same.
func (h *crashHarness) check(t *testing.T, within time.Duration, changelog string, mirrors ...string) {
	read := func(python, script string) error {
		rows, err := readRows(python, h.s, script, changelog)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, r := range rows {
			id := fmt.Sprint(r["_kafka_partition"], "@", r["_kafka_offset"])
			if seen[id] {
				t.Fatalf("%s: changelog holds partition@offset %s twice", script, id)
			}
			seen[id] = true
		}
		if len(seen) != h.produced {
			return fmt.Errorf("changelog has %d of %d events", len(seen), h.produced)
		}
		for _, m := range mirrors {
			rows, err := readRows(python, h.s, script, m)
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, r := range rows {
				got[fmt.Sprint(r["_key"])] = fmt.Sprint(r["v"])
			}
			if fmt.Sprint(got) != fmt.Sprint(h.want) {
				return fmt.Errorf("%s has %d items, the fold %d (or values differ)", filepath.Base(m), len(got), len(h.want))
			}
		}
		return nil
	}
	stacktest.Eventually(t, within, "delta-rs reads every event once", func() error {
		return read(h.s.DeltaPython, "read_table.py")
	})
	if err := read(h.s.SparkPython, "spark_read_table.py"); err != nil { // Apache Spark with Delta Lake reads the same
		t.Fatalf("Spark: %v", err)
	}
}

// readRows reads a table's rows with an independent reader: read_table.py (delta-rs) or
// spark_read_table.py (Spark), each with its venv's python.
func readRows(python string, s *stacktest.Stack, script, location string) ([]map[string]any, error) {
	cmd := exec.Command(python, filepath.Join(s.Root, "scripts", "python", script), location)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s reading %s: %v: %s", script, location, err, stderr.String())
	}
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		return nil, err
	}
	return got.Rows, nil
}

// orders is a stream of change events of 60 items being produced.
type orders struct {
	done     chan error
	want     map[string]string // the mirror fold: _key → v
	produced int
}

// produceOrders produces change events to topic, one per tick, until ctx is done: inserts,
// updates and deletes of 60 items with increasing sequence numbers (v is the sequence number),
// and from the 300th event a new attribute, late.
func produceOrders(ctx context.Context, cl *kgo.Client, enc *serde.TableEncoder, topic string, tick time.Duration) *orders {
	o := &orders{done: make(chan error, 1), want: map[string]string{}}
	go func() {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
		pace := time.NewTicker(tick)
		defer pace.Stop()
		for seq := 1; ctx.Err() == nil; seq++ {
			select {
			case <-ctx.Done():
				continue
			case <-pace.C:
			}
			id := fmt.Sprintf("item-%d", rng.IntN(60))
			op := []string{"c", "u", "u", "u", "d"}[rng.IntN(5)]
			item := map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}, "v": &types.AttributeValueMemberN{Value: fmt.Sprint(seq)}}
			if seq > 300 {
				item["late"] = &types.AttributeValueMemberS{Value: "appeared"}
			}
			ev := &ddbavro.Event{Op: op, TsMs: time.Now().UTC().Truncate(time.Millisecond), Source: avrov1.Source{
				Table: "orders", TableArn: "arn:aws:dynamodb:us-east-1:1:table/orders", SequenceNumber: aws.String(fmt.Sprint(seq)),
				EventID: aws.String(fmt.Sprint("e", seq)), ApproximateCreationMs: time.Now().UTC().Truncate(time.Millisecond), StreamViewType: "NEW_AND_OLD_IMAGES"}}
			if op == "d" {
				ev.Before = item
			} else {
				ev.After = item
			}
			key, _ := ddbavro.KeyOf(item, "id", "")
			k, v, err := enc.Encode(context.WithoutCancel(ctx), key, ev)
			if err == nil {
				err = cl.ProduceSync(context.WithoutCancel(ctx), &kgo.Record{Topic: topic, Key: k, Value: v}).FirstErr()
			}
			if err != nil {
				o.done <- err
				return
			}
			if op == "d" {
				delete(o.want, `[["S","`+id+`"]]`)
			} else {
				o.want[`[["S","`+id+`"]]`] = fmt.Sprint(seq)
			}
			o.produced++
		}
		o.done <- nil
	}()
	return o
}

// wait waits for the producing to stop (its context done) and returns the fold and the count.
func (o *orders) wait() (map[string]string, int, error) {
	err := <-o.done
	return o.want, o.produced, err
}
