//go:build integration

package proc

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

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
	h := newCrashHarness(t, ctx, s, fmt.Sprintf("whcrash%d", time.Now().UnixNano()))
	h.config(t, fmt.Sprintf(`batch: {max_rows: 2000, max_age: 1s}
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
`, h.prefix, s.Env["STACK_SPARK_THRIFT_PORT"], h.dir, h.topic))
	// At most 50 events/s: a warehouse statement takes seconds. after-parquet: the batch staged
	// and its intent recorded, not loaded; after-commit: loaded, the Kafka offsets not committed.
	h.run(t, ctx, 20*time.Millisecond, 3, 4*time.Second, 6*time.Second, []string{"after-parquet:2", "after-commit:2"}, 4*time.Minute)
	tables := filepath.Join(s.RunDir, "spark-thrift", "warehouse") // managed tables of the default schema
	h.check(t, 4*time.Minute, filepath.Join(tables, h.prefix+"_changelog"), filepath.Join(tables, h.prefix+"_mirror"))
	t.Logf("3 random kills and 2 at fault points during %d events through the warehouse: delta-rs and Spark read each once in the changelog and the mirror equal to the fold (%d items)", h.produced, len(h.want))
}
