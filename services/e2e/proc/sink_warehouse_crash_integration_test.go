//go:build integration

package proc

import (
	"context"
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

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestSinkThroughAWarehouseSurvivesKill9 runs the real sink binary with a mirror and a
// changelog written through a SQL warehouse (Apache Spark's Thrift server with Delta Lake, the
// spark dialect; scripts/stack thrift-up starts it) from a stream of changes, kills it with
// SIGKILL at random moments, then exactly after a batch's intent is recorded but before it is
// loaded, and exactly after a load but before the Kafka offsets are committed, restarting it
// each time. Afterwards delta-rs and Spark, reading the tables' files, must find every change
// once in the changelog and the mirror equal to the fold of the changes.
func TestSinkThroughAWarehouseSurvivesKill9(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry)
	ctx := stacktest.Context(t, 12*time.Minute)
	if out, err := exec.CommandContext(ctx, filepath.Join(s.Root, "scripts", "stack"), "thrift-up").CombinedOutput(); err != nil {
		t.Fatalf("scripts/stack thrift-up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- last lines of the Spark Thrift server's log ---\n%s", s.LogTail("thrift", 30))
		}
	})
	bins := Build(t, s.Root, "sink")
	prefix := fmt.Sprintf("whcrash%d", time.Now().UnixNano())
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
	body := fmt.Sprintf(`consumer_group: %[1]s
dead_letters: %[1]s.dlq.sink
batch: {max_rows: 2000, max_age: 1s}
databricks:
  host: http://127.0.0.1
  port: %[2]s
  http_path: /sql/1.0/warehouses/crash-test
  dialect: spark
  catalog: spark_catalog
  schema: default
  offsets_table: %[1]s_offsets
  staging: %[3]s/staging
tables:
  - {name: mirror, target: databricks, databricks_table: %[1]s_mirror, topics: [%[4]s], mode: mirror, schema_hints: {v: long}}
  - {name: changelog, target: databricks, databricks_table: %[1]s_changelog, topics: [%[4]s], mode: changelog, partition_by: date}
`, prefix, s.Env["STACK_SPARK_THRIFT_PORT"], dir, topic)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"DDB2DELTA_SINK_KAFKA_BROKERS=" + s.KafkaAddr, "DDB2DELTA_SINK_SCHEMA_REGISTRY_URL=" + s.RegistryURL}
	start := func(extra ...string) *Process {
		return Start(t, "sink", bins["sink"], []string{"-config", conf}, append(append(env, "DDB2DELTA_SINK_HTTP_LISTEN="+FreeAddr(t)), extra...))
	}

	writeCtx, stopWrites := context.WithCancel(ctx)
	stream := produceOrders(writeCtx, cl, enc, topic, 20*time.Millisecond) // at most 50 events/s: a warehouse statement takes seconds
	p := start()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for kill := range 3 {
		pause(t, ctx, time.Duration(4000+rng.IntN(6000))*time.Millisecond)
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
	if _, err := p.Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// after-parquet: the batch staged and its intent recorded, not loaded; after-commit: loaded,
	// the Kafka offsets not committed.
	for _, f := range []string{"after-parquet:2", "after-commit:2"} {
		p = start("DDB2DELTA_TEST_FAULT=" + f)
		if _, err := p.Wait(4 * time.Minute); err != nil {
			t.Fatalf("the sink did not reach fault point %s: %v\n%s", f, err, p.Output())
		}
		if !strings.Contains(p.Output(), "fault injected: SIGKILL at "+strings.Split(f, ":")[0]) {
			t.Fatalf("the sink exited, but not at fault point %s:\n%s", f, p.Output())
		}
	}
	p = start()
	pause(t, ctx, 3*time.Second)
	stopWrites()
	want, produced, err := stream.wait()
	if err != nil {
		t.Fatalf("producing: %v", err)
	}

	tables := filepath.Join(s.RunDir, "spark-thrift", "warehouse") // managed tables of the default schema
	check := func(python, script string) error {
		changelog, err := readRows(python, s, script, filepath.Join(tables, prefix+"_changelog"))
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
		mirror, err := readRows(python, s, script, filepath.Join(tables, prefix+"_mirror"))
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, r := range mirror {
			got[fmt.Sprint(r["_key"])] = fmt.Sprint(r["v"])
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("mirror has %d items, the fold %d (or values differ)", len(got), len(want))
		}
		return nil
	}
	stacktest.Eventually(t, 4*time.Minute, "delta-rs reads every event once", func() error {
		return check(s.DeltaPython, "read_table.py")
	})
	if err := check(s.SparkPython, "spark_read_table.py"); err != nil {
		t.Fatalf("Spark: %v", err)
	}
	if _, err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Error(err)
	}
	t.Logf("3 random kills and 2 at fault points during %d events through the warehouse: delta-rs and Spark read each once in the changelog and the mirror equal to the fold (%d items)", produced, len(want))
}
