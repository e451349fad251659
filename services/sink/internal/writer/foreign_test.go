package writer

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
)

// foreignRewrite commits what another engine's OPTIMIZE (dataChange=false) or DELETE
// (dataChange=true, dropping the rows of drop) does to a mirror: every live file replaced by one
// file without a bucket tag.
func foreignRewrite(t *testing.T, w *Writer, dataChange bool, drop ...string) {
	t.Helper()
	ctx := context.Background()
	tb, snap := otherWriter(t, w)
	schema, _ := snap.Schema()
	var rows []parquetio.Row
	var actions []delta.Action
	for _, p := range slices.Sorted(maps.Keys(snap.Files)) {
		r, err := delta.ReadFile(ctx, tb.Store, snap.Files[p])
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range r {
			if !slices.Contains(drop, row[layout.ColKey].(string)) {
				rows = append(rows, row)
			}
		}
		actions = append(actions, delta.RemoveOf(snap.Files[p], 0, dataChange))
	}
	data, stats, err := parquetio.Write(schema, nil, rows, parquetio.Options{})
	if err != nil {
		t.Fatal(err)
	}
	name := "part-00000-foreign-" + fmt.Sprint(snap.Version) + ".c000.snappy.parquet"
	if err := tb.Store.Write(ctx, name, data); err != nil {
		t.Fatal(err)
	}
	actions = append(actions, delta.Action{Add: &delta.Add{Path: name, PartitionValues: map[string]string{}, Size: int64(len(data)), DataChange: dataChange, Stats: stats.JSON()}})
	if _, err := tb.Commit(ctx, snap, actions, map[string]any{"operation": "OPTIMIZE"}, nil); err != nil {
		t.Fatal(err)
	}
}

// otherWriter is another writer of w's table, and the snapshot it reads.
func otherWriter(t *testing.T, w *Writer) (*delta.Table, *delta.Snapshot) {
	t.Helper()
	tb := delta.NewTable(w.Table().Store)
	snap, err := tb.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tb, snap
}

// foreignDVDelete commits what Spark's DELETE does on a table with deletion vectors: the rows of
// drop marked in the vectors of the files holding them (a remove of each such file with its old
// vector, an add with the new one), in a vector file of its own.
func foreignDVDelete(t *testing.T, w *Writer, drop ...string) {
	t.Helper()
	ctx := context.Background()
	tb, snap := otherWriter(t, w)
	dvw := delta.NewDVWriter()
	var actions []delta.Action
	for _, p := range slices.Sorted(maps.Keys(snap.Files)) {
		a := snap.Files[p]
		data, err := tb.Store.Read(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := parquetio.ReadData(data)
		if err != nil {
			t.Fatal(err)
		}
		dv, err := delta.LoadDV(ctx, tb.Store, a.DeletionVector)
		if err != nil {
			t.Fatal(err)
		}
		before := dv.GetCardinality()
		for i, r := range rows {
			if slices.Contains(drop, r[layout.ColKey].(string)) {
				dv.Add(uint32(i))
			}
		}
		if dv.GetCardinality() == before {
			continue
		}
		desc, err := dvw.Add(dv)
		if err != nil {
			t.Fatal(err)
		}
		na := *a
		na.DeletionVector, na.DataChange, na.Tags = desc, true, a.Tags
		actions = append(actions, delta.RemoveOf(a, 0, true), delta.Action{Add: &na})
	}
	if len(actions) == 0 {
		t.Fatalf("no file holds %v", drop)
	}
	if err := tb.Store.Write(ctx, dvw.Name(), dvw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Commit(ctx, snap, actions, map[string]any{"operation": "DELETE"}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestOtherWritersFiles: after another engine compacts a mirror (or deletes from it) into files
// without bucket tags, upserts and deletes still find the rows they replace: no key twice, no
// delete lost, and the foreign rows move back into bucket files.
func TestOtherWritersFiles(t *testing.T) { strategies(t, testOtherWritersFiles) }

func testOtherWritersFiles(t *testing.T, strategy string) {
	ctx := context.Background()
	w := newWriter(t, t.TempDir(), Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy})
	v := func(n int) map[string]types.AttributeValue { return map[string]types.AttributeValue{"v": num(n)} }
	key := func(id string) string { return `[["S","` + id + `"]]` }
	want := map[string]string{}
	var off int64
	write := func(changes ...Change) {
		t.Helper()
		if _, err := w.Write(ctx, changes, nil); err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			if c.Event.Op == "d" {
				delete(want, key(c.Key.PartitionKey.Name))
			}
		}
	}
	mk := func(op, id string, seq, val int) Change {
		off++
		c := change(op, id, seq, false, v(val), 0, off)
		c.Key.PartitionKey.Name = id // lets write() know the id
		if op != "d" {
			want[key(id)] = fmt.Sprint(val)
		}
		return c
	}
	var first []Change
	for i := range 20 {
		first = append(first, mk("c", fmt.Sprintf("k%02d", i), 10, i))
	}
	write(first...)
	foreignRewrite(t, w, false) // OPTIMIZE
	write(mk("u", "k03", 20, 303), mk("d", "k04", 21, 0), mk("c", "k50", 22, 50))
	if got := mirrorState(t, w); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after another writer's OPTIMIZE\n got %v\nwant %v", got, want)
	}
	for _, a := range w.Snapshot().Files {
		if strategy == StrategyCopyOnWrite && w.fileBucket(a) < 0 {
			t.Fatalf("%s: another writer's file still live after a batch covering its key range", a.Path)
		}
	}
	// Another writer deletes k05 and k06 (DELETE rewrites files); the source re-creates k05.
	foreignRewrite(t, w, true, key("k05"), key("k06"))
	delete(want, key("k05"))
	delete(want, key("k06"))
	write(mk("c", "k05", 30, 505), mk("u", "k07", 31, 707))
	if got := mirrorState(t, w); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after another writer's DELETE\n got %v\nwant %v", got, want)
	}
	// Another writer deletes k08 and k09 with deletion vectors (Spark's DELETE on a table with
	// them); the source updates k08 and k10.
	foreignDVDelete(t, w, key("k08"), key("k09"))
	delete(want, key("k08"))
	delete(want, key("k09"))
	if got := mirrorState(t, w); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after another writer's DELETE with deletion vectors\n got %v\nwant %v", got, want)
	}
	write(mk("u", "k08", 40, 808), mk("u", "k10", 41, 1010), mk("d", "k11", 42, 0))
	if got := mirrorState(t, w); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after a batch on top of another writer's deletion vectors\n got %v\nwant %v", got, want)
	}
}

// TestConflictWithAnotherWritersAdd: a concurrent commit of another writer adding a file whose
// key range covers a key of the batch (a MERGE inserting it, say) conflicts, and the batch is
// rebuilt on top of it: the key is not in two files.
func TestConflictWithAnotherWritersAdd(t *testing.T) {
	strategies(t, testConflictWithAnotherWritersAdd)
}

func testConflictWithAnotherWritersAdd(t *testing.T, strategy string) {
	ctx := context.Background()
	w := newWriter(t, t.TempDir(), Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy})
	v := func(n int) map[string]types.AttributeValue { return map[string]types.AttributeValue{"v": num(n)} }
	if _, err := w.Write(ctx, []Change{change("c", "a", 1, false, v(1), 0, 1)}, nil); err != nil {
		t.Fatal(err)
	}
	// Another writer (holding an old snapshot of ours) adds key b at a newer sequence number.
	other := newWriter(t, t.TempDir(), Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy})
	if _, err := other.Write(ctx, []Change{change("c", "b", 50, false, v(50), 1, 1)}, nil); err != nil {
		t.Fatal(err)
	}
	src := other.Snapshot()
	for _, a := range src.Files {
		data, _ := other.Table().Store.Read(ctx, a.Path)
		if err := w.Table().Store.Write(ctx, a.Path, data); err != nil {
			t.Fatal(err)
		}
		foreign := *a
		foreign.Tags = nil
		if _, err := w.Table().Commit(ctx, w.Snapshot().Clone(), []delta.Action{{Add: &foreign}}, map[string]any{"operation": "MERGE"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The writer's snapshot is one version behind: its batch for b must see the other's row.
	res, err := w.Write(ctx, []Change{change("u", "b", 40, false, v(40), 0, 2)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := mirrorState(t, w); got[`[["S","b"]]`] != "50" || len(got) != 2 || res.Stale != 1 {
		t.Fatalf("mirror %v (stale %d): want b at its newer value 50, once, and the older change stale", got, res.Stale)
	}
}
