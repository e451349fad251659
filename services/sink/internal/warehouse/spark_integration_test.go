//go:build integration

package warehouse

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

// sparkWarehouse starts (once per machine: scripts/stack thrift-up) Apache Spark's Thrift server
// and returns a connection through the sink's spark dialect, with a fresh schema.
func sparkWarehouse(t *testing.T, ctx context.Context) (*stacktest.Stack, *sql.DB, string) {
	t.Helper()
	s, err := stacktest.Load()
	if err != nil {
		t.Fatal(err)
	}
	up := exec.CommandContext(ctx, filepath.Join(s.Root, "scripts", "stack"), "thrift-up")
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("scripts/stack thrift-up: %v\n%s", err, out)
	}
	var port int
	fmt.Sscan(s.Env["STACK_SPARK_THRIFT_PORT"], &port)
	db, err := Open(Conn{Host: "http://127.0.0.1", Port: port, HTTPPath: "/sql/1.0/warehouses/ddb2delta-test", Spark: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// The server accepts connections before its first session can open.
	stacktest.Eventually(t, 3*time.Minute, "the Spark Thrift server answers", func() error {
		_, err := db.ExecContext(ctx, "SELECT 1")
		return err
	})
	schema := fmt.Sprintf("ddb2delta_test_%d", time.Now().UnixNano())
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA spark_catalog."+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			_, _ = db.ExecContext(context.Background(), "DROP SCHEMA spark_catalog."+schema+" CASCADE")
		}
	})
	return s, db, schema
}

// location returns where a table's files are (DESCRIBE DETAIL), as a local path.
func location(t *testing.T, ctx context.Context, db *sql.DB, id Ident) string {
	t.Helper()
	rows, err := db.QueryContext(ctx, "DESCRIBE DETAIL "+id.SQL())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		t.Fatalf("DESCRIBE DETAIL %s: no row (%v)", id, rows.Err())
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	for i, c := range cols {
		if c == "location" {
			return strings.TrimPrefix(fmt.Sprint(vals[i]), "file:")
		}
	}
	t.Fatalf("DESCRIBE DETAIL %s has no location", id)
	return ""
}

// readDelta reads a table's files with delta-rs or Spark (not the server that wrote them).
func readDelta(t *testing.T, s *stacktest.Stack, who, loc string) []map[string]any {
	t.Helper()
	python, script := s.DeltaPython, "read_table.py"
	if who == "spark" {
		python, script = s.SparkPython, "spark_read_table.py"
	}
	cmd := exec.Command(python, filepath.Join(s.Root, "scripts", "python", script), loc)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s reading %s: %v\n%s", who, loc, err, stderr.String())
	}
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("parsing %s output: %v", who, err)
	}
	return got.Rows
}

// crashAt makes a writer stop at a point of its next batch, as a kill -9 there would: the
// error leaves the batch where the point is.
func crashAt(w *Writer, point string) {
	w.crash = func(p string) error {
		if p == point {
			w.crash = nil
			return errors.New("crash at " + p)
		}
		return nil
	}
}

// TestSparkWarehouseMirrorAndChangelog writes a mirror and a changelog through a real SQL
// warehouse (Spark's Thrift server with Delta Lake, through databricks-sql-go and the spark
// dialect) from a random workload over four partitions: inserts, updates, deletes, a new top-level
// attribute and a new nested one half-way (ALTER TABLE ADD COLUMNS, nested too), replays of whole
// batches (Kafka re-delivering after a crash), and crashes between the intent and the load and
// after the load, each followed by a restarted writer that settles the batch in doubt. Then
// delta-rs and Spark, reading the tables' files, must find the mirror equal to the fold of the
// changes and every change exactly once in the changelog.
func TestSparkWarehouseMirrorAndChangelog(t *testing.T) {
	ctx := stacktest.Context(t, 15*time.Minute)
	s, db, schema := sparkWarehouse(t, ctx)
	log := slog.New(slog.DiscardHandler)
	stage := t.TempDir()
	open := func(name, mode string) *Writer {
		st, err := storage.Open(filepath.Join(stage, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		id := Ident{"spark_catalog", schema, name}
		return New(Config{Name: name, Mode: mode, Table: id, Offsets: id.In("ddb2delta_offsets"), Dialect: Spark, Topics: []string{"cdc"},
			PartitionByDate: mode == layout.Changelog}, db, StoreStager{Store: st, URL: "file://" + filepath.Join(stage, name)}, log)
	}
	assigned := map[string][]int32{"cdc": {0, 1, 2, 3}}
	writers := map[string]*Writer{"mirror": open("mirror", layout.Mirror), "changelog": open("changelog", layout.Changelog)}
	for _, w := range writers {
		if err := w.Load(ctx, assigned); err != nil {
			t.Fatal(err)
		}
	}

	rng := rand.New(rand.NewPCG(7, 11))
	want := map[string]string{} // mirror fold: id → v
	offsets := map[int32]int64{}
	var all []writer.Change
	seq := 0
	next := func() writer.Change {
		seq++
		id := fmt.Sprintf("item-%02d", rng.IntN(30))
		p := int32(len(id)+int(id[len(id)-1])) % 4 // a key's changes stay in one partition
		op := []string{"c", "u", "u", "d"}[rng.IntN(4)]
		ch := change(op, id, seq, p, offsets[p])
		offsets[p]++
		item := ch.Event.After
		if op == "d" {
			item = ch.Event.Before
		}
		if seq > 60 {
			item["late"] = &types.AttributeValueMemberS{Value: fmt.Sprint("late-", seq)}
			item["address"] = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"zip": &types.AttributeValueMemberS{Value: "0" + fmt.Sprint(seq)}}}
		}
		if op == "d" {
			delete(want, id)
		} else {
			want[id] = fmt.Sprint(seq)
		}
		return ch
	}
	write := func(batch []writer.Change, who ...string) {
		t.Helper()
		if len(who) == 0 {
			who = []string{"mirror", "changelog"}
		}
		for _, name := range who {
			if _, err := writers[name].Write(ctx, batch, nil); err != nil && !strings.HasPrefix(err.Error(), "crash at") {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	restart := func(name string) {
		t.Helper()
		writers[name] = open(name, writers[name].cfg.Mode)
		if err := writers[name].Load(ctx, assigned); err != nil {
			t.Fatalf("%s after a restart: %v", name, err)
		}
	}
	for round := range 8 {
		var batch []writer.Change
		for range 15 + rng.IntN(15) {
			batch = append(batch, next())
		}
		all = append(all, batch...)
		switch round {
		case 2: // killed after recording the batch, before loading it
			for _, w := range writers {
				crashAt(w, "intent")
			}
			write(batch)
			restart("mirror")
			restart("changelog")
			write(batch) // Kafka delivers the batch again: already settled, skipped
		case 4: // killed after loading, before the Kafka offsets: the restart settles it again
			for _, w := range writers {
				crashAt(w, "loaded")
			}
			write(batch)
			restart("mirror")
			restart("changelog")
			write(batch)
		case 5: // older changes read again (a rebalance) ahead of this batch: skipped
			prev := all[:len(all)-len(batch)]
			write(slicesConcat(prev[max(0, len(prev)-10):], batch))
		default:
			write(batch)
		}
	}

	for _, who := range []string{"delta-rs", "spark"} {
		got := map[string]string{}
		for _, r := range readDelta(t, s, who, location(t, ctx, db, writers["mirror"].cfg.Table)) {
			got[fmt.Sprint(r["id"])] = strings.TrimSuffix(fmt.Sprint(r["v"]), ".000000000000000000") // decimal(38,18)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: the mirror has %d items, the fold %d:\n got %v\nwant %v", who, len(got), len(want), got, want)
		}
		rows := readDelta(t, s, who, location(t, ctx, db, writers["changelog"].cfg.Table))
		seen := map[string]int{}
		late := 0
		for _, r := range rows {
			seen[fmt.Sprint(r["_kafka_partition"], "@", r["_kafka_offset"])]++
			img, _ := r["after"].(map[string]any)
			if r["_op"] == "d" {
				img, _ = r["before"].(map[string]any)
			}
			if img != nil && img["late"] != nil {
				if a, _ := img["address"].(map[string]any); a == nil || a["zip"] == nil {
					t.Errorf("%s: changelog row with late but no address.zip: %v", who, r)
				}
				late++
			}
		}
		for _, c := range all {
			k := fmt.Sprint(c.Origin.Partition, "@", c.Origin.Offset)
			if seen[k] != 1 {
				t.Errorf("%s: change %s is in the changelog %d times", who, k, seen[k])
			}
		}
		if len(rows) != len(all) || late == 0 {
			t.Errorf("%s: changelog has %d rows (%d with the late attribute), want %d", who, len(rows), late, len(all))
		}
	}
}

func slicesConcat(a, b []writer.Change) []writer.Change {
	return append(append([]writer.Change{}, a...), b...)
}

// direct adapts the direct writer to TableWriter (as pipeline.Direct does).
type direct struct{ *writer.Writer }

func (d direct) Load(ctx context.Context, _ map[string][]int32) error { return d.Writer.Load(ctx) }
func (d direct) Revoke(map[string][]int32)                            {}

// TestRegisterDirectTableInCatalog writes a mirror directly to S3 (the sink's own Delta writer)
// and registers it through the warehouse: the table is then queried by name, its properties
// record the lineage, registering again changes nothing, and a new stream ARN updates them.
func TestRegisterDirectTableInCatalog(t *testing.T) {
	ctx := stacktest.Context(t, 10*time.Minute)
	s, db, schema := sparkWarehouse(t, ctx)
	stacktest.Require(t, stacktest.S3)
	api := s3.NewFromConfig(s.AWSConfig(), func(o *s3.Options) { o.BaseEndpoint = aws.String(s.S3URL); o.UsePathStyle = true })
	prefix := fmt.Sprintf("register-%d/orders", time.Now().UnixNano())
	log := slog.New(slog.DiscardHandler)
	w := writer.New(writer.Config{Name: "orders", Mode: layout.Mirror}, storage.NewS3(api, s.Bucket, prefix), log)
	id := Ident{"spark_catalog", schema, "orders"}
	loc := "s3://" + s.Bucket + "/" + prefix
	r := Register(direct{w}, "orders", id, loc, []string{"cdc"}, layout.Mirror, db, log)
	if err := r.Load(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write(ctx, []writer.Change{change("c", "a", 1, 0, 0), change("c", "b", 2, 0, 1), change("u", "a", 3, 0, 2)}, nil); err != nil {
		t.Fatal(err)
	}
	registered := func() { // registration runs beside the writes
		t.Helper()
		stacktest.Eventually(t, 3*time.Minute, "the registration ends", func() error {
			if r.busy() {
				return errors.New("registering")
			}
			return nil
		})
	}
	registered()
	query := func(q string) map[string]string {
		t.Helper()
		out := map[string]string{}
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out[vals[0].String] = vals[1].String // key, value (DESCRIBE: col_name, data_type)
		}
		return out
	}
	if got := query("SELECT id, CAST(CAST(v AS BIGINT) AS STRING) FROM " + id.SQL()); fmt.Sprint(got) != "map[a:3 b:2]" {
		t.Fatalf("the registered table by name: %v", got)
	}
	props := query("SHOW TBLPROPERTIES " + id.SQL())
	for k, v := range map[string]string{PropSourceTable: "orders", PropSourceTableARN: "arn:aws:dynamodb:us-east-1:1:table/orders",
		PropStreamARN: "arn:aws:dynamodb:us-east-1:1:table/orders/stream/1", PropTopics: "cdc", "ddb2delta.mode": "mirror"} {
		if props[k] != v {
			t.Errorf("property %s = %q, want %q", k, props[k], v)
		}
	}
	if c := query("DESCRIBE TABLE EXTENDED " + id.SQL())["Comment"]; !strings.Contains(c, "a mirror of DynamoDB table orders") {
		t.Errorf("table comment %q", c)
	}
	version := func() string {
		for v := range query("DESCRIBE HISTORY " + id.SQL() + " LIMIT 1") { // version, timestamp, …
			return v
		}
		return ""
	}
	before := version()
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if after := version(); after != before {
		t.Errorf("registering again committed to the table: version %s → %s", before, after)
	}
	// The stream was disabled and enabled again: a new ARN.
	ch := change("u", "b", 4, 0, 3)
	ch.Event.Source.StreamArn = aws.String("arn:aws:dynamodb:us-east-1:1:table/orders/stream/2")
	if _, err := r.Write(ctx, []writer.Change{ch}, nil); err != nil {
		t.Fatal(err)
	}
	registered()
	if got := query("SHOW TBLPROPERTIES " + id.SQL())[PropStreamARN]; !strings.HasSuffix(got, "/stream/2") {
		t.Errorf("stream ARN after a new stream: %q", got)
	}
	if got := query("SELECT id, CAST(CAST(v AS BIGINT) AS STRING) FROM " + id.SQL()); fmt.Sprint(got) != "map[a:3 b:4]" {
		t.Fatalf("the registered table after the sink's next commit: %v", got)
	}
	// A name taken by a table elsewhere is not labelled as this one.
	other := Register(direct{w}, "orders", id, "s3://"+s.Bucket+"/elsewhere", []string{"cdc"}, layout.Mirror, db, log)
	if err := other.Sync(ctx); err == nil || !strings.Contains(err.Error(), "is already a table at") {
		t.Errorf("registering a name taken elsewhere: %v", err)
	}
}

// conflicts counts the statements run again after a concurrent-write conflict (from the log).
type conflicts struct {
	slog.Handler
	n *atomic.Int64
}

func (c conflicts) Enabled(context.Context, slog.Level) bool { return true }

func (c conflicts) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "concurrent write to the table") {
		c.n.Add(1)
	}
	return nil
}

// TestWarehouseTwoReplicasWriteOneTable runs two writers of one mirror (two sink replicas sharing a
// topic's partitions) at once: their MERGEs into the table and into the offsets table conflict
// (open-source Delta checks a MERGE against every file it read), and the one that loses runs
// again. The table must end equal to the fold of both replicas' changes.
func TestWarehouseTwoReplicasWriteOneTable(t *testing.T) {
	ctx := stacktest.Context(t, 15*time.Minute)
	_, db, schema := sparkWarehouse(t, ctx)
	var retried atomic.Int64
	log := slog.New(conflicts{Handler: slog.DiscardHandler, n: &retried})
	stage := t.TempDir()
	id := Ident{"spark_catalog", schema, "shared"}
	st, err := storage.Open(stage, nil)
	if err != nil {
		t.Fatal(err)
	}
	replica := func(parts ...int32) *Writer {
		w := New(Config{Name: "shared", Mode: layout.Mirror, Table: id, Offsets: id.In("ddb2delta_offsets"), Dialect: Spark, Topics: []string{"cdc"}},
			db, StoreStager{Store: st, URL: "file://" + stage}, log)
		if err := w.Load(ctx, map[string][]int32{"cdc": parts}); err != nil {
			t.Fatal(err)
		}
		return w
	}
	// The table exists before the two race (creating it is not what this test is about).
	first := replica(0, 1, 2, 3)
	if _, err := first.Write(ctx, []writer.Change{change("c", "seed", 1, 0, 0)}, nil); err != nil {
		t.Fatal(err)
	}
	a, b := replica(0, 1), replica(2, 3)
	want := map[string]string{"seed": "1"}
	seq := 1
	offsets := map[int32]int64{0: 1}
	batch := func(parts ...int32) []writer.Change {
		var out []writer.Change
		for i := range 6 {
			p := parts[i%len(parts)]
			seq++
			id := fmt.Sprintf("p%d-item-%d", p, seq%5)
			out = append(out, change("u", id, seq, p, offsets[p]))
			offsets[p]++
			want[id] = fmt.Sprint(seq)
		}
		return out
	}
	for round := 0; round < 10 && (round < 3 || retried.Load() == 0); round++ {
		ba, bb := batch(0, 1), batch(2, 3)
		errs := make(chan error, 2)
		go func() { _, err := a.Write(ctx, ba, nil); errs <- err }()
		go func() { _, err := b.Write(ctx, bb, nil); errs <- err }()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	if retried.Load() == 0 {
		t.Fatal("ten rounds of concurrent MERGEs into one table never conflicted: the retry path was not exercised")
	}
	got := map[string]string{}
	rows, err := db.QueryContext(ctx, "SELECT id, CAST(CAST(v AS BIGINT) AS STRING) FROM "+id.SQL())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		got[k] = v
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after %d conflicts retried, the table:\n got %v\nwant %v", retried.Load(), got, want)
	}
	t.Logf("%d statements run again after a conflict", retried.Load())
}

// TestWarehouseZombieLoadsNothing plays a replica that lost its partitions without knowing it
// (its session expired while a statement ran): A records a batch and stalls before loading it;
// B, the new owner, settles it and deletes an item; then A's stalled load runs, and A writes
// again. A's load must take nothing (the deleted item stays deleted, no changelog row twice),
// and A's next intent must be fenced.
func TestWarehouseZombieLoadsNothing(t *testing.T) {
	ctx := stacktest.Context(t, 10*time.Minute)
	s, db, schema := sparkWarehouse(t, ctx)
	log := slog.New(slog.DiscardHandler)
	stage := t.TempDir()
	assigned := map[string][]int32{"cdc": {0}}
	for _, mode := range []string{layout.Mirror, layout.Changelog} {
		st, err := storage.Open(filepath.Join(stage, mode), nil)
		if err != nil {
			t.Fatal(err)
		}
		id := Ident{"spark_catalog", schema, mode}
		open := func() *Writer {
			w := New(Config{Name: mode, Mode: mode, Table: id, Offsets: id.In("ddb2delta_offsets"), Dialect: Spark, Topics: []string{"cdc"}},
				db, StoreStager{Store: st, URL: "file://" + filepath.Join(stage, mode)}, log)
			if err := w.Load(ctx, assigned); err != nil {
				t.Fatal(err)
			}
			return w
		}
		a := open()
		crashAt(a, "intent")
		if _, err := a.Write(ctx, []writer.Change{change("c", "k", 1, 0, 0), change("c", "j", 2, 0, 1)}, nil); err == nil {
			t.Fatal("the crash point was not reached")
		}
		stalled := a.batch[tp{"cdc", 0}]
		b := open() // settles A's batch
		if _, err := b.Write(ctx, []writer.Change{change("d", "k", 3, 0, 2)}, nil); err != nil {
			t.Fatal(err)
		}
		if err := a.apply(ctx, stalled, a.lay.Schema(), 0); err != nil { // A's stalled load runs at last
			t.Fatal(err)
		}
		_, err = a.Write(ctx, []writer.Change{change("u", "j", 4, 0, 3)}, nil)
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("%s: A's next intent: %v, want fenced", mode, err)
		}
		rows := readDelta(t, s, "delta-rs", location(t, ctx, db, id))
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprint(r["_op"], ":", r["_key"], "@", r["_kafka_offset"]))
		}
		slices.Sort(got)
		want := map[string]string{
			layout.Mirror:    `[c:[["S","j"]]@1]`,
			layout.Changelog: `[c:[["S","j"]]@1 c:[["S","k"]]@0 d:[["S","k"]]@2]`,
		}[mode]
		if fmt.Sprint(got) != want {
			t.Errorf("%s after the zombie's load: %v, want %s", mode, got, want)
		}
		// The sink table renamed: no offsets for the new name, and a table with rows.
		renamed := New(Config{Name: mode + "_renamed", Mode: mode, Table: id, Offsets: id.In("ddb2delta_offsets"), Dialect: Spark, Topics: []string{"cdc"}},
			db, StoreStager{Store: st, URL: "file://" + filepath.Join(stage, mode)}, log)
		if err := renamed.Load(ctx, assigned); err == nil || !strings.Contains(err.Error(), "has rows, but") {
			t.Errorf("%s: a renamed sink table over a table with rows: %v", mode, err)
		}
	}
}
