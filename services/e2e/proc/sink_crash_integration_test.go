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
	bins := Build(t, s.Root, "sink")
	prefix := fmt.Sprintf("sinkcrash%d", time.Now().UnixNano())
	topic := prefix + ".cdc.orders"
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, topic)
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
	enc, err := serde.NewTableEncoder(ctx, serde.NewRegistry(srcl, slog.New(slog.DiscardHandler)), topic, "orders", ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "sink.yaml")
	body := fmt.Sprintf(`consumer_group: %s
dead_letters: %s.dlq.sink
tables_root: %s
batch: {max_rows: 40, max_age: 200ms}
checkpoint_interval: 5
tables:
  - {name: mirror, topics: [%s], mode: mirror, location: mirror, schema_hints: {v: long}}
  - {name: mirror_cow, topics: [%[4]s], mode: mirror, mirror_strategy: copy_on_write, location: mirror_cow, buckets: 4, schema_hints: {v: long}}
  - {name: changelog, topics: [%[4]s], mode: changelog, location: changelog, partition_by: date}
`, prefix, prefix, dir, topic)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"DDB2DELTA_SINK_KAFKA_BROKERS=" + s.KafkaAddr, "DDB2DELTA_SINK_SCHEMA_REGISTRY_URL=" + s.RegistryURL}
	start := func() *Process {
		return Start(t, "sink", bins["sink"], []string{"-config", conf}, append(env, "DDB2DELTA_SINK_HTTP_LISTEN="+FreeAddr(t)))
	}

	// The producer side: events with increasing sequence numbers, as long as the kills go on.
	writeCtx, stopWrites := context.WithCancel(ctx)
	stream := produceOrders(writeCtx, cl, enc, topic, 2*time.Millisecond) // at most 500 events/s

	p := start()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for kill := range 6 {
		pause(t, ctx, time.Duration(400+rng.IntN(1600))*time.Millisecond)
		if p.Exited() {
			t.Fatalf("sink exited on its own before kill %d:\n%s", kill, p.Output())
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		p = start()
	}
	// Then the two instants random kills may miss, exactly: files written but not committed, and
	// committed but Kafka offsets not.
	if _, err := p.Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"after-parquet:3", "after-commit:2"} {
		p = Start(t, "sink", bins["sink"], []string{"-config", conf}, append(env, "DDB2DELTA_SINK_HTTP_LISTEN="+FreeAddr(t), "DDB2DELTA_TEST_FAULT="+f))
		if _, err := p.Wait(2 * time.Minute); err != nil {
			t.Fatalf("the sink did not reach fault point %s: %v", f, err)
		}
		if !strings.Contains(p.Output(), "fault injected: SIGKILL at "+strings.Split(f, ":")[0]) {
			t.Fatalf("the sink exited, but not at fault point %s:\n%s", f, p.Output())
		}
	}
	p = start()
	stopWrites()
	want, produced, err := stream.wait()
	if err != nil {
		t.Fatalf("producing: %v", err)
	}

	check := func(python, script string) error {
		changelog, err := readRows(python, s, script, filepath.Join(dir, "changelog"))
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, r := range changelog {
			id := fmt.Sprint(r["_kafka_partition"], "@", r["_kafka_offset"])
			if seen[id] {
				t.Fatalf("%s: changelog holds partition@offset %s twice", script, id)
			}
			seen[id] = true
		}
		if len(seen) != produced {
			return fmt.Errorf("changelog has %d of %d events", len(seen), produced)
		}
		for _, table := range []string{"mirror", "mirror_cow"} { // deletion vectors, copy-on-write
			mirror, err := readRows(python, s, script, filepath.Join(dir, table))
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, r := range mirror {
				got[fmt.Sprint(r["_key"])] = fmt.Sprint(r["v"])
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("%s has %d items, the fold %d (or values differ)", table, len(got), len(want))
			}
		}
		return nil
	}
	stacktest.Eventually(t, 2*time.Minute, "delta-rs reads every event once", func() error {
		return check(s.DeltaPython, "read_table.py")
	})
	// Apache Spark with Delta Lake reads the same.
	if err := check(s.SparkPython, "spark_read_table.py"); err != nil {
		t.Fatalf("Spark: %v", err)
	}
	if _, err := p.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Error(err)
	}
	t.Logf("6 random kills and 2 at fault points during %d events: delta-rs and Spark read each once in the changelog and both mirrors equal the fold (%d items)", produced, len(want))
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
