package delta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

func newTestTable(t *testing.T) *Table {
	t.Helper()
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tb := NewTable(st)
	tb.CheckpointInterval = 0
	t.Cleanup(func() { _, _ = tb.WaitCheckpoint() }) // before the directory goes
	return tb
}

func createActions(t *testing.T) []Action {
	schema := &deltatype.StructType{Fields: []deltatype.StructField{{Name: "id", Type: deltatype.Long, Nullable: true}}}
	b, err := schema.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return []Action{
		{Protocol: &Protocol{MinReaderVersion: 1, MinWriterVersion: 2}},
		{MetaData: &Metadata{ID: "table-id", Format: Format{Provider: "parquet", Options: map[string]string{}}, SchemaString: string(b),
			PartitionColumns: []string{}, Configuration: map[string]string{}}},
	}
}

func add(path string) Action {
	return Action{Add: &Add{Path: path, PartitionValues: map[string]string{}, Size: 1, DataChange: true}}
}

func TestCommitAndReplay(t *testing.T) {
	ctx := context.Background()
	tb := newTestTable(t)
	snap, err := tb.Snapshot(ctx)
	if err != nil || snap.Version != -1 {
		t.Fatalf("empty table: %+v %v", snap, err)
	}
	snap, err = tb.Commit(ctx, snap, append(createActions(t), add("a.parquet")), map[string]any{"operation": "CREATE"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err = tb.Commit(ctx, snap, []Action{add("b.parquet"), {Txn: &Txn{AppID: "app", Version: 41}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err = tb.Commit(ctx, snap, []Action{{Remove: &Remove{Path: "a.parquet", DataChange: true}}, add("c.parquet"), {Txn: &Txn{AppID: "app", Version: 42}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tb.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Snapshot{snap, loaded} {
		if s.Version != 2 || len(s.Files) != 2 || s.Files["b.parquet"] == nil || s.Files["c.parquet"] == nil || s.Removed["a.parquet"] == nil {
			t.Fatalf("snapshot %+v", s)
		}
		if v, ok := s.TxnVersion("app"); !ok || v != 42 {
			t.Fatalf("txn app = %d %v", v, ok)
		}
	}
	data, err := tb.Store.Read(ctx, CommitName(2))
	if err != nil {
		t.Fatal(err)
	}
	actions, err := DecodeCommit(data)
	if err != nil || len(actions) != 4 || actions[3].CommitInfo["readVersion"] != float64(1) {
		t.Fatalf("commit 2: %s %v", data, err)
	}
}

// Racing writers appending files: every commit lands at a distinct version and none is lost.
func TestConcurrentAppendsAllLand(t *testing.T) {
	ctx := context.Background()
	tb := newTestTable(t)
	snap, err := tb.Commit(ctx, Empty(), createActions(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		read := snap.Clone() // each writer owns its snapshot
		go func() {
			defer wg.Done()
			for i := range each {
				next, err := tb.Commit(ctx, read, []Action{add(fmt.Sprintf("w%d-%d.parquet", w, i)), {Txn: &Txn{AppID: fmt.Sprint("writer-", w), Version: int64(i)}}}, nil, nil)
				if err != nil {
					errs <- err
					return
				}
				read = next
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	final, err := tb.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if final.Version != writers*each || len(final.Files) != writers*each {
		t.Fatalf("version %d with %d files; want %d and %d", final.Version, len(final.Files), writers*each, writers*each)
	}
}

func TestConflicts(t *testing.T) {
	ctx := context.Background()
	tb := newTestTable(t)
	base, err := tb.Commit(ctx, Empty(), append(createActions(t), add("a.parquet"), add("b.parquet")), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The winner rewrites a.parquet; a loser rewriting a.parquet too must not commit.
	// (Commit advances the snapshot it is given: each writer commits from its own copy.)
	if _, err := tb.Commit(ctx, base.Clone(), []Action{{Remove: &Remove{Path: "a.parquet"}}, add("a2.parquet")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err = tb.Commit(ctx, base.Clone(), []Action{{Remove: &Remove{Path: "a.parquet"}}, add("a3.parquet")}, nil, nil)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "removed a.parquet") {
		t.Fatalf("double rewrite: %v", err)
	}
	// A loser touching other files moves on to the next version.
	snap, err := tb.Commit(ctx, base, []Action{{Remove: &Remove{Path: "b.parquet"}}, add("b2.parquet")}, nil, nil)
	if err != nil || snap.Version != 2 || snap.Files["a2.parquet"] == nil || snap.Files["b2.parquet"] == nil {
		t.Fatalf("disjoint rewrite: %+v %v", snap, err)
	}
	// The same txn app id from two writers: the second learns it was a duplicate.
	if _, err := tb.Commit(ctx, snap.Clone(), []Action{add("x.parquet"), {Txn: &Txn{AppID: "p0", Version: 10}}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Commit(ctx, snap, []Action{add("y.parquet"), {Txn: &Txn{AppID: "p0", Version: 10}}}, nil, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("same app id: %v", err)
	}
	// A schema change by the winner stops the loser; so does the caller's own check.
	latest, _ := tb.Snapshot(ctx)
	if _, err := tb.Commit(ctx, latest.Clone(), createActions(t)[1:], nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Commit(ctx, latest, []Action{add("z.parquet")}, nil, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("after a schema change: %v", err)
	}
	latest, _ = tb.Snapshot(ctx)
	if _, err := tb.Commit(ctx, latest.Clone(), []Action{add("q.parquet")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	mine := errors.New("mine")
	if _, err := tb.Commit(ctx, latest, []Action{add("r.parquet")}, nil, func(Commit) error { return mine }); !errors.Is(err, mine) {
		t.Fatalf("caller's check: %v", err)
	}
}

func TestReplayRefusesGapsAndNewerProtocols(t *testing.T) {
	ctx := context.Background()
	tb := newTestTable(t)
	if _, err := tb.Commit(ctx, Empty(), createActions(t), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := tb.Store.Write(ctx, CommitName(2), []byte(`{"add":{"path":"x","partitionValues":{},"size":1,"modificationTime":0,"dataChange":true}}`+"\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("gap: %v", err)
	}
	tb2 := newTestTable(t)
	if err := tb2.Store.Write(ctx, CommitName(0), []byte(`{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["v2Checkpoint"],"writerFeatures":["v2Checkpoint"]}}`+"\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := tb2.Snapshot(ctx); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("reader 3 table: %v", err)
	}
	bad := newTestTable(t)
	if err := bad.Store.Write(ctx, CommitName(0), []byte("{not json\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "00000000000000000000.json") {
		t.Fatalf("corrupt commit: %v", err)
	}
}

func TestCheckpointsReplaceTheLogPrefix(t *testing.T) {
	ctx := context.Background()
	tb := newTestTable(t)
	tb.CheckpointInterval = 5
	snap, err := tb.Commit(ctx, Empty(), createActions(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 12; i++ {
		acts := []Action{add(fmt.Sprintf("f%d.parquet", i)), {Txn: &Txn{AppID: "app", Version: int64(i)}}}
		if i%3 == 0 {
			ts := time.Now().UnixMilli()
			if i == 3 {
				ts = 1 // long expired: the checkpoint drops it
			}
			acts = append(acts, Action{Remove: &Remove{Path: fmt.Sprintf("f%d.parquet", i-1), DeletionTimestamp: ts, DataChange: true}})
		}
		acts[0].Add.Stats = `{"numRecords":1}`
		acts[0].Add.PartitionValues = map[string]string{"_date": "2026-11-25"}
		if snap, err = tb.Commit(ctx, snap, acts, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := tb.WaitCheckpoint(); v != 10 || err != nil {
		t.Fatalf("last checkpoint at %d (%v), want 10", v, err)
	}
	if snap.Removed["f2.parquet"] != nil {
		t.Fatal("the expired tombstone is still in memory after the checkpoint")
	}
	// Without the commits the checkpoint covers, the table still loads, from the checkpoint.
	for v := int64(0); v <= 10; v++ {
		if err := tb.Store.Delete(ctx, CommitName(v)); err != nil {
			t.Fatal(err)
		}
	}
	loaded, err := NewTable(tb.Store).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Version != 12 || loaded.CheckpointVersion != 10 || len(loaded.Files) != len(snap.Files) || len(loaded.Removed) != len(snap.Removed) ||
		loaded.Removed["f2.parquet"] != nil {
		t.Fatalf("loaded version %d (checkpoint %d) with %d files and %d tombstones; want 12 (10), %d and %d (the expired one dropped)",
			loaded.Version, loaded.CheckpointVersion, len(loaded.Files), len(loaded.Removed), len(snap.Files), len(snap.Removed))
	}
	for p, a := range snap.Files {
		l := loaded.Files[p]
		if l == nil || l.Stats != a.Stats || l.PartitionValues["_date"] != "2026-11-25" || l.Size != a.Size {
			t.Fatalf("file %s: %+v, want %+v", p, l, a)
		}
	}
	if v, _ := loaded.TxnVersion("app"); v != 12 {
		t.Fatalf("txn %d", v)
	}
	if loaded.Metadata.SchemaString != snap.Metadata.SchemaString || loaded.Protocol.MinWriterVersion != 2 {
		t.Fatalf("metadata %+v protocol %+v", loaded.Metadata, loaded.Protocol)
	}
}

// lossyStore applies the nth WriteIfAbsent and then answers as a client that lost the response
// would see it: with err (ErrExists when the SDK's retry met the object, or a network error).
type lossyStore struct {
	storage.Store
	n   int
	err error
}

func (s *lossyStore) WriteIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := s.Store.WriteIfAbsent(ctx, name, data); err != nil {
		return err
	}
	if s.n--; s.n == 0 {
		return s.err
	}
	return nil
}

// TestCommitFindsItsOwnLostCommit: a commit whose put-if-absent landed but answered "exists" or
// failed is recognised by its id, not mistaken for a competitor's (which would conflict on its
// own txn); a competitor's commit at that version is still one.
func TestCommitFindsItsOwnLostCommit(t *testing.T) {
	for _, lost := range []error{fmt.Errorf("retry: %w", storage.ErrExists), errors.New("connection reset by peer")} {
		tb := newTestTable(t)
		tb.Store = &lossyStore{Store: tb.Store, n: 2, err: lost}
		snap, err := tb.Commit(context.Background(), Empty(), createActions(t), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		txn := Action{Txn: &Txn{AppID: "app", Version: 7}}
		snap, err = tb.Commit(context.Background(), snap, []Action{add("a.parquet"), txn}, nil, nil)
		if err != nil || snap.Version != 1 {
			t.Fatalf("lost response (%v): version %v, %v; want the commit at version 1", lost, snap, err)
		}
		if v, _ := snap.TxnVersion("app"); v != 7 || snap.Files["a.parquet"] == nil {
			t.Fatalf("snapshot after the lost commit: %+v", snap)
		}
		// A competitor holding the same txn app id at the next version is a conflict.
		other := NewTable(tb.Store.(*lossyStore).Store)
		if _, err := other.Commit(context.Background(), snap.Clone(), []Action{add("b.parquet"), {Txn: &Txn{AppID: "app", Version: 9}}}, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.Commit(context.Background(), snap, []Action{add("c.parquet"), {Txn: &Txn{AppID: "app", Version: 8}}}, nil, nil); !errors.Is(err, ErrConflict) {
			t.Fatalf("a competitor's commit for the same app id: %v, want a conflict", err)
		}
	}
}

// TestTombstonesFollowTheTableRetention: a table whose delta.deletedFileRetentionDuration is an
// hour drops older tombstones at its checkpoints, in memory and on disk, whatever the Table's
// default; younger ones stay.
func TestTombstonesFollowTheTableRetention(t *testing.T) {
	ctx := context.Background()
	tb := newTestTable(t)
	tb.CheckpointInterval = 4
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tb.Now = func() time.Time { return now }
	create := createActions(t)
	create[1].MetaData.Configuration = map[string]string{ConfDeletedFileRetention: "interval 1 hour"}
	snap, err := tb.Commit(ctx, Empty(), append(create, add("a"), add("b"), add("c")), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rm := func(p string, age time.Duration) Action {
		return Action{Remove: &Remove{Path: p, DeletionTimestamp: now.Add(-age).UnixMilli(), DataChange: true}}
	}
	for _, a := range [][]Action{{rm("a", 2*time.Hour)}, {rm("b", 30*time.Minute)}, {add("d")}, {add("e")}} {
		if snap, err = tb.Commit(ctx, snap, a, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := tb.WaitCheckpoint(); v != 4 || err != nil {
		t.Fatalf("checkpoint %d %v", v, err)
	}
	if snap.Removed["a"] != nil || snap.Removed["b"] == nil {
		t.Fatalf("tombstones in memory after the checkpoint: %v; want b only", snap.Removed)
	}
	loaded, err := NewTable(tb.Store).Snapshot(ctx)
	if err != nil || loaded.Removed["a"] != nil || loaded.Removed["b"] == nil {
		t.Fatalf("tombstones in the checkpoint: %v (%v); want b only", loaded.Removed, err)
	}
}
