package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
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
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

var quiet = slog.New(slog.DiscardHandler)

func change(id string, seq int, off int64) writer.Change {
	item := map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}, "v": &types.AttributeValueMemberN{Value: fmt.Sprint(seq)}}
	return writer.Change{
		Event: &ddbavro.Event{Op: "u", After: item, TsMs: time.UnixMilli(1795500000000), Source: avrov1.Source{Table: "t",
			SequenceNumber: aws.String(fmt.Sprint(seq)), ApproximateCreationMs: time.UnixMilli(1795500000000)}},
		Key:    avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(id)}},
		Origin: layout.Origin{Topic: "cdc", Partition: 0, Offset: off},
	}
}

// table writes batches of changes, one commit (and file per group) each.
func table(t *testing.T, mode string, batches [][]writer.Change) *writer.Writer {
	t.Helper()
	return tableWith(t, writer.Config{Name: "t", Mode: mode, Buckets: 2, PartitionByDate: mode == layout.Changelog}, batches)
}

// tableWith is table with a writer configuration.
func tableWith(t *testing.T, cfg writer.Config, batches [][]writer.Change) *writer.Writer {
	t.Helper()
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hints, err := layout.ParseHints(map[string]string{"v": "long"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Hints = hints
	w := writer.New(cfg, st, quiet)
	t.Cleanup(w.Close) // a checkpoint being written finishes before the directory goes
	for _, b := range batches {
		if _, err := w.Write(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func allRows(t *testing.T, tb *delta.Table) []parquetio.Row {
	t.Helper()
	rows, err := delta.ReadRows(context.Background(), tb)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func sorted(rows []parquetio.Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = fmt.Sprint(r)
	}
	sort.Strings(out)
	return out
}

func TestCompactChangelogKeepsRowsAndOrder(t *testing.T) {
	var batches [][]writer.Change
	off := int64(0)
	for b := range 12 {
		var batch []writer.Change
		for i := range 5 {
			off++
			batch = append(batch, change(fmt.Sprint("k", i), b*10+i, off))
		}
		batches = append(batches, batch)
	}
	w := table(t, layout.Changelog, batches)
	tb := w.Table()
	before := allRows(t, tb)
	res, err := Compact(context.Background(), tb, Config{Name: "t", MinFiles: 4}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if res.Compacted != 12 || res.Written != 1 || res.Version != 12 {
		t.Fatalf("compaction %+v", res)
	}
	after := allRows(t, tb)
	if !reflect.DeepEqual(sorted(before), sorted(after)) {
		t.Fatal("compaction changed the rows")
	}
	for i := 1; i < len(after); i++ {
		if after[i-1]["_kafka_offset"].(int64) >= after[i]["_kafka_offset"].(int64) {
			t.Fatalf("compacted rows out of Kafka order at %d", i)
		}
	}
	data, _ := tb.Store.Read(context.Background(), delta.CommitName(12))
	actions, _ := delta.DecodeCommit(data)
	for _, a := range actions {
		if (a.Add != nil && a.Add.DataChange) || (a.Remove != nil && a.Remove.DataChange) {
			t.Fatalf("compaction action with dataChange=true: %+v %+v", a.Add, a.Remove)
		}
	}
	// Nothing left to do; the writer's next commit still works on top.
	if res, err := Compact(context.Background(), tb, Config{Name: "t", MinFiles: 4}, quiet); err != nil || res.Version != -1 {
		t.Fatalf("second round %+v %v", res, err)
	}
	if _, err := w.Write(context.Background(), []writer.Change{change("z", 999, off+1)}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCompactMirrorPerBucket(t *testing.T) {
	var batches [][]writer.Change
	for b := range 10 { // increasing keys: every batch adds new files without rewriting
		batches = append(batches, []writer.Change{change(fmt.Sprintf("k%03d", b*2), b, int64(b*2+1)), change(fmt.Sprintf("k%03d", b*2+1), b, int64(b*2+2))})
	}
	w := table(t, layout.Mirror, batches)
	tb := w.Table()
	snap, _ := tb.Snapshot(context.Background())
	filesBefore := len(snap.Files)
	before := allRows(t, tb)
	res, err := Compact(context.Background(), tb, Config{Name: "t", MinFiles: 2}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ = tb.Snapshot(context.Background())
	if len(snap.Files) != 2 || res.Compacted != filesBefore {
		t.Fatalf("%d files before, %d after (%+v); want one per bucket", filesBefore, len(snap.Files), res)
	}
	for _, a := range snap.Files {
		if a.Tags["ddb2delta.bucket"] == "" {
			t.Fatalf("compacted file lost its bucket: %+v", a)
		}
	}
	if !reflect.DeepEqual(sorted(before), sorted(allRows(t, tb))) {
		t.Fatal("compaction changed the mirror")
	}
	// The writer merges into the compacted files.
	if _, err := w.Write(context.Background(), []writer.Change{change("k005", 100, 99)}, nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range allRows(t, tb) {
		if r["_key"] == `[["S","k005"]]` {
			n++
			if r["v"] != int64(100) {
				t.Fatalf("k005 = %v", r["v"])
			}
		}
	}
	if n != 1 {
		t.Fatalf("k005 has %d rows", n)
	}
}

func TestVacuumKeepsWhatReadersMayNeed(t *testing.T) {
	ctx := context.Background()
	var batches [][]writer.Change
	for b := range 4 {
		batches = append(batches, []writer.Change{change("a", b, int64(b+1))})
	}
	w := table(t, layout.Mirror, batches) // each batch rewrites the one file: three tombstones
	tb := w.Table()
	root := tb.Store.(*storage.Local).Root()
	orphan := "part-orphan.zstd.parquet" // a write whose commit never happened
	if err := tb.Store.Write(ctx, orphan, []byte("x")); err != nil {
		t.Fatal(err)
	}
	snap, _ := tb.Snapshot(ctx)
	live := len(snap.Files)
	// A retention below the table's delta.deletedFileRetentionDuration (7 days by default) is
	// refused unless forced.
	if _, err := Vacuum(ctx, tb, Config{Name: "t", Retention: time.Hour}, time.Now().Add(2*time.Hour), quiet); !errors.Is(err, ErrRetentionTooShort) ||
		!strings.Contains(err.Error(), "delta.deletedFileRetentionDuration") {
		t.Fatalf("a 1h retention on a 7-day table: %v, want ErrRetentionTooShort naming the property", err)
	}
	// Within the retention period nothing goes.
	res, err := Vacuum(ctx, tb, Config{Name: "t", Retention: time.Hour, ForceRetention: true}, time.Now(), quiet)
	if err != nil || res.Vacuumed != 0 {
		t.Fatalf("fresh vacuum %+v %v", res, err)
	}
	// Past it, the tombstoned files and the orphan go; live files and the log stay.
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(root, orphan), old, old); err != nil {
		t.Fatal(err)
	}
	res, err = Vacuum(ctx, tb, Config{Name: "t", Retention: time.Hour, ForceRetention: true}, time.Now().Add(2*time.Hour), quiet)
	if err != nil || res.Vacuumed != 4 {
		t.Fatalf("vacuum %+v %v; want 3 tombstoned files and the orphan", res, err)
	}
	snap, err = tb.Snapshot(ctx)
	if err != nil || len(snap.Files) != live {
		t.Fatalf("after vacuum: %v", err)
	}
	for p := range snap.Files {
		if _, err := tb.Store.Read(ctx, p); err != nil {
			t.Fatalf("live file %s gone: %v", p, err)
		}
	}
	if rows := allRows(t, tb); len(rows) != 1 || rows[0]["v"] != int64(3) {
		t.Fatalf("rows after vacuum %v", rows)
	}
}

// TestCleanLog: commits and checkpoints past delta.logRetentionDuration go, up to the newest
// checkpoint older than it; the table still loads, at the same version, from what is left.
func TestCleanLog(t *testing.T) {
	ctx := context.Background()
	var batches [][]writer.Change
	for b := range 25 {
		batches = append(batches, []writer.Change{change(fmt.Sprint("k", b%3), b, int64(b+1))})
	}
	w := table(t, layout.Mirror, batches) // versions 0..24, checkpoints at 10 and 20
	tb := w.Table()
	if cp, err := tb.WaitCheckpoint(); cp != 20 || err != nil {
		t.Fatalf("checkpoint %d %v", cp, err)
	}
	before, err := tb.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := CleanLog(ctx, tb, "t", time.Now(), quiet); n != 0 || err != nil {
		t.Fatalf("within the retention: %d deleted, %v", n, err)
	}
	// 31 days later everything is old: versions below the newest checkpoint (20) go.
	later := time.Now().Add(31 * 24 * time.Hour)
	n, err := CleanLog(ctx, tb, "t", later, quiet)
	if err != nil || n != 21 { // commits 0..19 and checkpoint 10
		t.Fatalf("%d log files deleted (%v), want 21", n, err)
	}
	objs, _ := tb.Store.List(ctx, delta.LogDir, "")
	for _, o := range objs {
		if v, _, ok := delta.LogFileVersion(o.Name); ok && v < 20 {
			t.Fatalf("%s survived", o.Name)
		}
	}
	after, err := delta.NewTable(tb.Store).Snapshot(ctx)
	if err != nil || after.Version != before.Version || len(after.Files) != len(before.Files) {
		t.Fatalf("after cleanup: version %d, %d files (%v); want %d, %d", after.Version, len(after.Files), err, before.Version, len(before.Files))
	}
}

// A deletion-vector mirror whose file loses most of its rows to updates gets it purged: rewritten
// without the deleted rows (dataChange=false), the rows the same, the writer going on on top.
// Vacuum then deletes the purged file and the vector files no kept version references, and keeps
// those that the live files and younger tombstones reference.
func TestPurgeAndVacuumWithDeletionVectors(t *testing.T) {
	ctx := context.Background()
	var batches [][]writer.Change
	off := int64(0)
	var first []writer.Change
	for i := range 20 {
		off++
		first = append(first, change(fmt.Sprintf("k%02d", i), 1, off))
	}
	batches = append(batches, first)
	for b := range 4 { // 4 batches of 4 updates: 16 of the first file's 20 rows deleted
		var batch []writer.Change
		for i := range 4 {
			off++
			batch = append(batch, change(fmt.Sprintf("k%02d", b*4+i), 10+b, off))
		}
		batches = append(batches, batch)
	}
	w := tableWith(t, writer.Config{Name: "t", Mode: layout.Mirror, MirrorStrategy: writer.StrategyDeletionVectors}, batches)
	tb := w.Table()
	before := sorted(allRows(t, tb))
	snap, _ := tb.Snapshot(ctx)
	dvFiles := map[string]bool{}
	for _, a := range snap.Files {
		if a.DeletionVector != nil {
			p, _ := delta.DVPath(a.DeletionVector)
			dvFiles[p] = true
			if a.DeletionVector.Cardinality != 16 {
				t.Fatalf("the first file's vector deletes %d rows, want 16", a.DeletionVector.Cardinality)
			}
		}
	}
	if len(dvFiles) != 1 || len(before) != 20 {
		t.Fatalf("%d files with vectors, %d rows", len(dvFiles), len(before))
	}
	res, err := Compact(ctx, tb, Config{Name: "t", MinFiles: 100}, quiet)
	if err != nil || res.Purged != 1 || res.Version < 0 {
		t.Fatalf("purge %+v %v", res, err)
	}
	after, _ := tb.Snapshot(ctx)
	for _, a := range after.Files {
		if a.DeletionVector != nil {
			t.Fatalf("a file still has a vector after the purge: %+v", a)
		}
	}
	if got := sorted(allRows(t, tb)); !reflect.DeepEqual(got, before) {
		t.Fatal("the purge changed the rows")
	}
	if _, err := w.Write(ctx, []writer.Change{change("k19", 99, off+1)}, nil); err != nil {
		t.Fatal(err)
	}
	rows := allRows(t, tb)
	n := 0
	for _, r := range rows {
		if r["_key"] == `[["S","k19"]]` {
			n++
			if r["v"] != int64(99) {
				t.Fatalf("k19 = %v", r["v"])
			}
		}
	}
	if n != 1 || len(rows) != 20 {
		t.Fatalf("k19 has %d rows, the table %d", n, len(rows))
	}
	// Within the retention the old vector files stay (older versions read them); past it they go,
	// and the live files' vector (the writer's last update) stays.
	if res, err := Vacuum(ctx, tb, Config{Name: "t", Retention: time.Hour, ForceRetention: true}, time.Now(), quiet); err != nil || res.Vacuumed != 0 {
		t.Fatalf("vacuum within the retention %+v %v", res, err)
	}
	res, err = Vacuum(ctx, tb, Config{Name: "t", Retention: time.Hour, ForceRetention: true}, time.Now().Add(2*time.Hour), quiet)
	if err != nil || res.Vacuumed == 0 {
		t.Fatalf("vacuum past the retention %+v %v", res, err)
	}
	for p := range dvFiles {
		if _, err := tb.Store.Read(ctx, p); err == nil {
			t.Fatalf("vector file %s referenced only by old versions survived vacuum", p)
		}
	}
	if got := allRows(t, tb); len(got) != 20 {
		t.Fatalf("after vacuum the table reads %d rows (%v)", len(got), err)
	}
}
