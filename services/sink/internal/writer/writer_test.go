package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// change builds a change of item id at sequence seq, read at topic t partition p offset off.
func change(op, id string, seq int, snapshot bool, attrs map[string]types.AttributeValue, p int32, off int64) Change {
	item := map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}}
	for k, v := range attrs {
		item[k] = v
	}
	ev := &ddbavro.Event{Op: op, TsMs: time.UnixMilli(1795500000000 + int64(seq)),
		Source: avrov1.Source{Table: "orders", SequenceNumber: aws.String(fmt.Sprint(seq)), Snapshot: snapshot,
			ApproximateCreationMs: time.UnixMilli(1795500000000 + int64(seq))}}
	if op == "d" {
		ev.Before = item
	} else {
		ev.After = item
	}
	return Change{Event: ev, Key: avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(id)}},
		Origin: layout.Origin{Topic: "cdc", Partition: p, Offset: off}}
}

func num(n int) types.AttributeValue { return &types.AttributeValueMemberN{Value: fmt.Sprint(n)} }
func str(s string) types.AttributeValue {
	return &types.AttributeValueMemberS{Value: s}
}

func newWriter(t *testing.T, dir string, cfg Config) *Writer {
	t.Helper()
	st, err := storage.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = "orders"
	}
	if cfg.Hints == nil {
		cfg.Hints = intHints(t)
	}
	w := New(cfg, st, slog.New(slog.DiscardHandler))
	t.Cleanup(w.Close) // a checkpoint being written finishes before the directory goes
	return w
}

// intHints makes the tests' numeric attributes long columns (the default is decimal(38,18)).
func intHints(t testing.TB) *layout.Hints {
	h, err := layout.ParseHints(map[string]string{"v": "long", "n": "long"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// readTable returns every row of the table's latest version, with this package's own reader.
func readTable(t *testing.T, w *Writer) []parquetio.Row {
	t.Helper()
	rows, err := delta.ReadRows(context.Background(), w.Table())
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestChangelogAppendsEveryChangeOnce(t *testing.T) {
	ctx := context.Background()
	w := newWriter(t, t.TempDir(), Config{Mode: layout.Changelog, PartitionByDate: true})
	batch1 := []Change{
		change("c", "a", 1, false, map[string]types.AttributeValue{"n": num(1)}, 0, 10),
		change("u", "a", 2, false, map[string]types.AttributeValue{"n": num(2)}, 0, 11),
		change("c", "b", 3, false, nil, 1, 5),
	}
	res, err := w.Write(ctx, batch1, nil)
	if err != nil || res.Version != 0 || res.Rows != 3 {
		t.Fatalf("first batch: %+v %v", res, err)
	}
	// A replay of the same offsets (a crash before the Kafka commit) adds nothing.
	res, err = w.Write(ctx, batch1, nil)
	if err != nil || res.Version != -1 || res.Skipped != 3 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	// A new attribute evolves the schema; a partly replayed batch adds only the new offsets.
	batch2 := append(batch1[2:], change("d", "a", 4, false, map[string]types.AttributeValue{"n": num(2), "note": str("x")}, 0, 12))
	res, err = w.Write(ctx, batch2, nil)
	if err != nil || res.Version != 1 || res.Rows != 1 || res.Skipped != 1 {
		t.Fatalf("second batch: %+v %v", res, err)
	}
	if got := w.NextOffset("cdc", 0); got != 13 {
		t.Fatalf("next offset of partition 0 = %d, want 13", got)
	}
	// A fresh writer recovers the offsets from the log.
	w2 := newWriter(t, w.Table().Store.(*storage.Local).Root(), Config{Mode: layout.Changelog, PartitionByDate: true})
	if err := w2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if w2.NextOffset("cdc", 1) != 6 || w2.NextOffset("cdc", 7) != -1 {
		t.Fatalf("recovered offsets %d %d", w2.NextOffset("cdc", 1), w2.NextOffset("cdc", 7))
	}
	rows := readTable(t, w2)
	sort.Slice(rows, func(i, j int) bool {
		return rows[i]["_kafka_offset"].(int64)+int64(rows[i]["_kafka_partition"].(int32))*100 < rows[j]["_kafka_offset"].(int64)+int64(rows[j]["_kafka_partition"].(int32))*100
	})
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4: %v", len(rows), rows)
	}
	if rows[2]["_op"] != "d" || rows[2]["before"].(map[string]any)["note"] != "x" || rows[0]["after"].(map[string]any)["n"] != int64(1) {
		t.Fatalf("rows %v", rows)
	}
	snap := w2.Snapshot()
	for p := range snap.Files {
		if !strings.HasPrefix(p, "_date=2026-11-24/") || snap.Files[p].PartitionValues["_date"] != "2026-11-24" {
			t.Fatalf("file %s partition %v", p, snap.Files[p].PartitionValues)
		}
	}
}

func mirrorState(t *testing.T, w *Writer) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range readTable(t, w) {
		k := r["_key"].(string)
		if _, dup := out[k]; dup {
			t.Fatalf("key %s has two rows", k)
		}
		out[k] = fmt.Sprint(r["v"])
	}
	return out
}

// strategies runs a test under each mirror strategy.
func strategies(t *testing.T, f func(t *testing.T, strategy string)) {
	for _, s := range []string{StrategyCopyOnWrite, StrategyDeletionVectors} {
		t.Run(s, func(t *testing.T) { f(t, s) })
	}
}

func TestMirrorUpsertsDeletesAndGuards(t *testing.T) {
	strategies(t, testMirrorUpsertsDeletesAndGuards)
}

func testMirrorUpsertsDeletesAndGuards(t *testing.T, strategy string) {
	ctx := context.Background()
	w := newWriter(t, t.TempDir(), Config{Mode: layout.Mirror, Buckets: 8, MirrorStrategy: strategy})
	v := func(n int) map[string]types.AttributeValue { return map[string]types.AttributeValue{"v": num(n)} }
	var off int64
	next := func() int64 { off++; return off }
	// Snapshot rows at position 100, then stream changes.
	var batch []Change
	for i := range 40 {
		batch = append(batch, change("r", fmt.Sprintf("k%02d", i), 100, true, v(i), 0, next()))
	}
	if _, err := w.Write(ctx, batch, nil); err != nil {
		t.Fatal(err)
	}
	filesAfterLoad := len(w.Snapshot().Files)
	res, err := w.Write(ctx, []Change{
		change("u", "k01", 101, false, v(1001), 0, next()),
		change("u", "k01", 102, false, v(1002), 0, next()), // the newest in the batch wins
		change("d", "k02", 103, false, v(2), 0, next()),
		change("u", "k03", 99, false, v(999), 0, next()),   // older than the snapshot row: ignored
		change("u", "k04", 100, false, v(1004), 0, next()), // same position as the snapshot row: the stream wins
		change("c", "k99", 104, false, v(99), 0, next()),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch strategy {
	case StrategyCopyOnWrite:
		if res.Rewritten >= filesAfterLoad || res.Stale != 2 {
			t.Fatalf("second batch rewrote %d of %d files, %d stale; want fewer than all, 2 stale", res.Rewritten, filesAfterLoad, res.Stale)
		}
	case StrategyDeletionVectors:
		// The three rows replaced or deleted (k01, k02, k04) are marked in the loaded file's
		// vector; the three new rows (k01, k04, k99) are one new file.
		var dvs []int64
		for _, a := range w.Snapshot().Files {
			if a.DeletionVector != nil {
				dvs = append(dvs, a.DeletionVector.Cardinality)
			}
		}
		if filesAfterLoad != 1 || res.Stale != 2 || res.Files != 1 || res.Rewritten != 1 || len(w.Snapshot().Files) != 2 || fmt.Sprint(dvs) != "[3]" {
			t.Fatalf("after %d files, the second batch wrote %d files, marked rows in %d, %d stale; the table has %d files, vectors %v",
				filesAfterLoad, res.Files, res.Rewritten, res.Stale, len(w.Snapshot().Files), dvs)
		}
		if p := w.Snapshot().Protocol; !p.HasFeature(delta.FeatureDeletionVectors) || p.MinReaderVersion != 3 || p.MinWriterVersion != 7 {
			t.Fatalf("protocol %+v", p)
		}
	}
	got := mirrorState(t, w)
	want := map[string]string{}
	key := func(id string) string { return `[["S","` + id + `"]]` }
	for i := range 40 {
		want[key(fmt.Sprintf("k%02d", i))] = fmt.Sprint(i)
	}
	want[key("k01")], want[key("k04")], want[key("k99")] = "1002", "1004", "99"
	delete(want, key("k02"))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("mirror\n got %v\nwant %v", got, want)
	}
}

// Two writers of one mirror table (two sink replicas, each with its own partitions) racing:
// conflicts on a bucket make the loser retry from the new snapshot; the result is exact.
func TestConcurrentMirrorWriters(t *testing.T) { strategies(t, testConcurrentMirrorWriters) }

func testConcurrentMirrorWriters(t *testing.T, strategy string) {
	ctx := context.Background()
	dir := t.TempDir()
	want := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for p := range int32(2) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newWriter(t, dir, Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy})
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			var off int64
			for b := range 15 {
				var batch []Change
				for range 10 {
					id := fmt.Sprintf("p%d-k%d", p, rng.IntN(30))
					off++
					seq := b*1000 + int(off)
					op := "u"
					if rng.IntN(5) == 0 {
						op = "d"
					}
					batch = append(batch, change(op, id, seq, false, map[string]types.AttributeValue{"v": num(seq)}, p, off))
					mu.Lock()
					if op == "d" {
						delete(want, `[["S","`+id+`"]]`)
					} else {
						want[`[["S","`+id+`"]]`] = fmt.Sprint(seq)
					}
					mu.Unlock()
				}
				if _, err := w.Write(ctx, batch, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := mirrorState(t, newWriter(t, dir, Config{Mode: layout.Mirror}))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("mirror after concurrent writers\n got %v\nwant %v", got, want)
	}
}

func TestRejectedChangesAreHandedOverBeforeTheCommit(t *testing.T) {
	ctx := context.Background()
	w := newWriter(t, t.TempDir(), Config{Mode: layout.Mirror})
	bad := change("u", "x", 5, false, nil, 0, 2)
	bad.Event.After = nil // an update without its new image cannot update a mirror
	batch := []Change{change("c", "a", 1, false, nil, 0, 1), bad}
	failing := errors.New("dead-letter topic unreachable")
	if _, err := w.Write(ctx, batch, func([]Rejected) error { return failing }); !errors.Is(err, failing) {
		t.Fatalf("err = %v", err)
	}
	if w.NextOffset("cdc", 0) != -1 {
		t.Fatal("committed although the rejected change was not dead-lettered")
	}
	var got []Rejected
	res, err := w.Write(ctx, batch, func(r []Rejected) error { got = r; return nil })
	if err != nil || len(got) != 1 || got[0].Change.Origin.Offset != 2 || !strings.Contains(got[0].Err.Error(), "new images") || res.Rows != 1 {
		t.Fatalf("res %+v err %v rejected %v", res, err, got)
	}
	if w.NextOffset("cdc", 0) != 3 {
		t.Fatalf("next offset %d", w.NextOffset("cdc", 0))
	}
}

// TestTableOfAnEarlierLayoutContinues: a table created by an earlier version (one column per
// attribute and kind, no _rescued_data) is written on as it is: a value of a second kind gets its
// own column, as it did then, and schema hints are refused naming the way out.
func TestTableOfAnEarlierLayoutContinues(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := newWriter(t, dir, Config{Mode: layout.Mirror, Hints: &layout.Hints{}})
	// Version 0 as the earlier version wrote it: lineage columns first, then "v" as kind n.
	schema := `{"type":"struct","fields":[` +
		`{"name":"_key","type":"string","nullable":true,"metadata":{}},{"name":"_op","type":"string","nullable":true,"metadata":{}},` +
		`{"name":"_sequence_number","type":"string","nullable":true,"metadata":{}},{"name":"_snapshot","type":"boolean","nullable":true,"metadata":{}},` +
		`{"name":"_ttl_delete","type":"boolean","nullable":true,"metadata":{}},{"name":"_source_time","type":"timestamp","nullable":true,"metadata":{}},` +
		`{"name":"_producer_time","type":"timestamp","nullable":true,"metadata":{}},{"name":"_source_table","type":"string","nullable":true,"metadata":{}},` +
		`{"name":"_shard_id","type":"string","nullable":true,"metadata":{}},{"name":"_event_id","type":"string","nullable":true,"metadata":{}},` +
		`{"name":"_kafka_topic","type":"string","nullable":true,"metadata":{}},{"name":"_kafka_partition","type":"integer","nullable":true,"metadata":{}},` +
		`{"name":"_kafka_offset","type":"long","nullable":true,"metadata":{}},` +
		`{"name":"v","type":"long","nullable":true,"metadata":{"ddb.attr":"v","ddb.kind":"n"}}]}`
	snap, err := w.Table().Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Table().Commit(ctx, snap, []delta.Action{
		{Protocol: delta.LegacyProtocol()},
		{MetaData: &delta.Metadata{ID: delta.NewID(), Format: delta.Format{Provider: "parquet", Options: map[string]string{}}, SchemaString: schema,
			PartitionColumns: []string{}, Configuration: map[string]string{"ddb2delta.mode": "mirror", ConfBuckets: "4"}}},
	}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(ctx, []Change{change("c", "a", 1, false, map[string]types.AttributeValue{"v": num(7)}, 0, 1),
		change("c", "b", 2, false, map[string]types.AttributeValue{"v": str("seven")}, 0, 2)}, nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range readTable(t, w) {
		got[r["_key"].(string)] = fmt.Sprint(r["v"], "|", r["v__s"], "|", r[layout.ColRescued])
	}
	if got[`[["S","a"]]`] != "7|<nil>|<nil>" || got[`[["S","b"]]`] != "<nil>|seven|<nil>" {
		t.Fatalf("rows of the earlier layout's table: %v", got)
	}
	hinted := newWriter(t, dir, Config{Mode: layout.Mirror})
	if err := hinted.Load(ctx); err == nil || !strings.Contains(err.Error(), "created by an earlier version of the sink") {
		t.Fatalf("hints on an earlier version's table: %v", err)
	}
}

// A copy-on-write batch rewrites only the files that hold one of its keys, not every file whose
// key range covers them.
func TestCopyOnWriteRewritesOnlyFilesHoldingItsKeys(t *testing.T) {
	ctx := context.Background()
	w := newWriter(t, t.TempDir(), Config{Mode: layout.Mirror, Buckets: 1, MirrorStrategy: StrategyCopyOnWrite})
	v := func(n int) map[string]types.AttributeValue { return map[string]types.AttributeValue{"v": num(n)} }
	var off int64
	batch := func(ids ...int) Result {
		t.Helper()
		var changes []Change
		for _, id := range ids {
			off++
			changes = append(changes, change("u", fmt.Sprintf("k%02d", id), int(off), false, v(int(off)), 0, off))
		}
		res, err := w.Write(ctx, changes, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	batch(0, 2, 4, 6, 8) // one file, k00…k08
	if res := batch(1, 3, 5, 7); res.Rewritten != 0 || res.Files != 1 {
		t.Fatalf("odd keys inside the first file's range: rewrote %d files, wrote %d; want 0 and 1", res.Rewritten, res.Files)
	}
	if res := batch(4); res.Rewritten != 1 || len(w.Snapshot().Files) != 2 {
		t.Fatalf("an update of k04: rewrote %d files, the table has %d; want 1 and 2", res.Rewritten, len(w.Snapshot().Files))
	}
	got := mirrorState(t, w)
	if len(got) != 9 || got[`[["S","k04"]]`] != "10" {
		t.Fatalf("mirror %v", got)
	}
}
