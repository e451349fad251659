// Package warehouse writes a table through a SQL warehouse (Databricks SQL, or a Spark Thrift
// server) instead of writing Delta files itself: for teams whose tables are Unity Catalog
// managed tables, or who may not write to the lake's storage. It also registers the tables the
// sink writes directly in Unity Catalog (register.go).
//
// A batch is mapped to rows exactly as the direct writer maps it (package layout: the same
// columns, types, lineage and sequence guard), written as one Parquet file to a staging location
// the warehouse reads (an S3 prefix or a Unity Catalog volume), and loaded with one statement:
// COPY INTO (Databricks) or an insert-only MERGE (Spark) for a changelog, MERGE for a mirror.
//
// Exactly once. A SQL warehouse has no multi-table transaction, and the session settings that
// would make Delta record Kafka offsets in the data table's own commit (txnAppId, txnVersion)
// are not among those a warehouse accepts. So the offsets live in an offsets table, and the
// order of the statements makes every batch settle:
//
//  1. stage the batch's file (a name derived from the offsets it covers);
//  2. record in the offsets table, for each of its topic-partitions, the next offset and the
//     file (the intent);
//  3. load the file into the table.
//
// A crash before 2 leaves an unreferenced file (swept later); the batch is read from Kafka
// again. After 2 the batch is in doubt: whoever is next assigned the partition (this replica
// after a restart or a failed batch, another after a rebalance) loads the recorded file again,
// restricted to the partition's rows, with a statement that is idempotent: COPY INTO skips a file
// it has loaded; the changelog's MERGE inserts only rows whose Kafka position (topic, partition,
// offset) the table does not hold; the mirror's MERGE applies a change only when it is newer than
// the row (the sequence guard), so applying the same batch twice changes nothing, and a delete
// applied twice deletes nothing more. Consumption then resumes at the recorded offsets. A
// replayed change is thus always replayed within its own batch, from the same file: an older
// change is never applied after a newer batch, and a deleted item cannot come back (the
// equivalent of tombstones, without leaving deleted rows in the table).
package warehouse

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/fault"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

// Dialects: what the warehouse runs.
const (
	Databricks = "databricks" // a Databricks SQL warehouse: COPY INTO for changelogs
	Spark      = "spark"      // open-source Spark SQL (a Thrift server): INSERT, and MERGE to settle
)

// Table properties the warehouse target keeps on its tables.
const (
	// PropSchema holds the table's schema as Delta writes it, with the column metadata the
	// layout needs (attribute names, types as hinted, key columns), which SQL cannot set.
	PropSchema = "ddb2delta.schema"
	PropMode   = "ddb2delta.mode"
)

// Config configures one table's writer.
type Config struct {
	Name            string // the sink's table name (logs, metrics, the offsets table)
	Mode            string // layout.Changelog or layout.Mirror
	PartitionByDate bool   // changelog only
	Table           Ident  // the table in the warehouse
	Offsets         Ident  // the offsets table
	Dialect         string // Databricks or Spark
	Hints           *layout.Hints
	Properties      map[string]string // set when the table is created
	Topics          []string
	// StagingRetention: staged files no offsets row refers to are deleted when older than this
	// (younger ones may belong to a batch whose intent is being recorded). Default: 1h.
	StagingRetention time.Duration
	// ConflictRetries bounds the runs of one statement after concurrent-write conflicts.
	// Default: 20.
	ConflictRetries int
}

// Writer writes one table through a warehouse. Like writer.Writer it is used by one goroutine;
// replicas writing the same table are ordered by the warehouse (conflicts are retried).
type Writer struct {
	cfg   Config
	c     *conn
	stage Stager
	log   *slog.Logger

	lay     *layout.Layout
	schema  *deltatype.StructType // the table's schema (PropSchema); nil: the table does not exist
	lineage Lineage
	next    map[tp]int64  // next offset per topic-partition, as recorded
	batch   map[tp]string // the staged file of each topic-partition's last recorded batch
	first   map[tp]int64  // the first offset of each topic-partition's last recorded batch
	// unsettled are the partitions of this writer whose last recorded batch is not known to be
	// loaded (a load failed, or they were just assigned).
	unsettled map[tp]string
	mine      map[string]bool
	offsets   bool // the offsets table is known to exist
	// crash, when set (tests), is called at the points of a batch a kill could hit ("intent":
	// recorded, not loaded; "loaded": loaded, not returned); an error stops the batch there.
	crash func(point string) error
}

type tp struct {
	topic     string
	partition int32
}

// New returns the writer of one table.
func New(cfg Config, db *sql.DB, stage Stager, log *slog.Logger) *Writer {
	if cfg.StagingRetention <= 0 {
		cfg.StagingRetention = time.Hour
	}
	if cfg.ConflictRetries <= 0 {
		cfg.ConflictRetries = 20
	}
	return &Writer{cfg: cfg, c: &conn{db: db, table: cfg.Name, log: log, conflictRetries: cfg.ConflictRetries}, stage: stage, log: log,
		lineage: Lineage{Mode: cfg.Mode, Topics: cfg.Topics}, mine: map[string]bool{},
		next: map[tp]int64{}, batch: map[tp]string{}, first: map[tp]int64{}, unsettled: map[tp]string{}}
}

// Close implements pipeline.TableWriter.
func (w *Writer) Close() {}

// NextOffset implements pipeline.TableWriter.
func (w *Writer) NextOffset(topic string, partition int32) int64 {
	if n, ok := w.next[tp{topic, partition}]; ok {
		return n
	}
	return -1
}

// Load reads the table's schema and offsets, then settles the last batch of each assigned
// partition (see the package comment).
func (w *Writer) Load(ctx context.Context, assigned map[string][]int32) error {
	if !w.offsets {
		if err := w.c.exec(ctx, "creating the offsets table "+w.cfg.Offsets.String(), createOffsets(w.cfg.Offsets)); err != nil {
			return err
		}
		w.offsets = true
	}
	if err := w.readSchema(ctx); err != nil {
		return err
	}
	next, batch, first := map[tp]int64{}, map[tp]string{}, map[tp]int64{}
	q, args := readOffsets(w.cfg.Offsets, w.cfg.Name, w.cfg.Dialect)
	err := w.c.query(ctx, "reading "+w.cfg.Offsets.String(), q, func(r *sql.Rows) error {
		var k tp
		var n int64
		var f sql.NullString
		var lo sql.NullInt64
		if err := r.Scan(&k.topic, &k.partition, &n, &f, &lo); err != nil {
			return err
		}
		next[k], first[k] = n, lo.Int64
		if f.Valid && f.String != "" {
			batch[k] = f.String
		}
		return nil
	}, args...)
	if err != nil {
		return err
	}
	if len(next) > 0 && w.schema == nil {
		return fmt.Errorf("table %s: the offsets table records offsets of it, but %s does not exist (dropped?): "+
			"delete its rows from %s (table_name = %s) to write it again from the topics' start", w.cfg.Name, w.cfg.Table, w.cfg.Offsets, quoteString(w.cfg.Name))
	}
	if len(next) == 0 && w.schema != nil {
		// The table has rows, but no offsets say which: the sink table was renamed, or
		// offsets_table changed. Starting from the topics' start would write every change again.
		var rows int64
		err := w.c.query(ctx, "reading "+w.cfg.Table.String(), "SELECT count(*) FROM (SELECT 1 FROM "+w.cfg.Table.SQL()+" LIMIT 1)", func(r *sql.Rows) error {
			return r.Scan(&rows)
		})
		if err != nil {
			return err
		}
		if rows > 0 {
			return fmt.Errorf("table %s: %s has rows, but %s has no offsets for table_name %s (the sink table renamed, or offsets_table changed?): "+
				"give it its old name back, or write to a new table", w.cfg.Name, w.cfg.Table, w.cfg.Offsets, quoteString(w.cfg.Name))
		}
	}
	w.next, w.batch, w.first = next, batch, first
	// The batches in doubt: the last batch of each assigned partition. They are settled before
	// any new batch is recorded (Write settles what a failure here leaves).
	for topic, ps := range assigned {
		for _, p := range ps {
			if f, ok := batch[tp{topic, p}]; ok {
				w.unsettled[tp{topic, p}] = f
			} else {
				delete(w.unsettled, tp{topic, p})
			}
		}
	}
	if err := w.settleAll(ctx); err != nil {
		return err
	}
	w.sweep(ctx)
	return nil
}

// settleAll loads again, idempotently, each batch in doubt: recorded for a partition of this
// writer, not known to be loaded. Until they are, no batch is recorded: a later intent would
// replace the record of one that was never loaded.
func (w *Writer) settleAll(ctx context.Context) error {
	doubt := map[string]map[string][]int32{} // file → its partitions in doubt
	for k, f := range w.unsettled {
		if doubt[f] == nil {
			doubt[f] = map[string][]int32{}
		}
		doubt[f][k.topic] = append(doubt[f][k.topic], k.partition)
	}
	for _, f := range slices.Sorted(maps.Keys(doubt)) {
		if err := w.settle(ctx, f, doubt[f]); err != nil {
			return err
		}
		for topic, ps := range doubt[f] {
			for _, p := range ps {
				delete(w.unsettled, tp{topic, p})
			}
		}
		w.log.Info("settled a batch in doubt", "table", w.cfg.Name, "file", f, "partitions", doubt[f])
	}
	return nil
}

// Revoke implements pipeline.TableWriter: the partitions' batches in doubt are their new
// owner's to settle (settling them here, after the new owner moved on, could apply an older
// change over a newer one).
func (w *Writer) Revoke(parts map[string][]int32) {
	for topic, ps := range parts {
		for _, p := range ps {
			delete(w.unsettled, tp{topic, p})
		}
	}
}

// Write implements pipeline.TableWriter: settle what is in doubt, stage, record the intent, load.
func (w *Writer) Write(ctx context.Context, changes []writer.Change, reject func([]writer.Rejected) error) (writer.Result, error) {
	if w.lay == nil {
		if err := w.Load(ctx, nil); err != nil {
			return writer.Result{Version: -1, LiveFiles: -1}, err
		}
	}
	if err := w.settleAll(ctx); err != nil {
		return writer.Result{Version: -1, LiveFiles: -1}, err
	}
	for relayouts := 0; ; relayouts++ {
		res, err := w.attempt(ctx, changes, reject)
		if !errors.Is(err, errRelayout) || relayouts >= 5 {
			return res, err
		}
	}
}

// errRelayout: the table had columns this writer did not know (another replica added them); the
// layout now has them and the batch is mapped again.
var errRelayout = errors.New("the table has columns the layout lacked")

// ErrFenced is returned (wrapped) when another writer recorded a batch of one of this batch's
// partitions since this writer read them: a replica that lost the partition in a rebalance
// (its session expired while a statement ran) and did not know it. The batch is not loaded.
var ErrFenced = errors.New("another writer recorded these partitions since this one read them")

func (w *Writer) attempt(ctx context.Context, changes []writer.Change, reject func([]writer.Rejected) error) (writer.Result, error) {
	res := writer.Result{Version: -1, LiveFiles: -1}
	first, last := map[tp]int64{}, map[tp]int64{}
	var rows []layout.Row
	w.lay.Rescued()
	for _, ch := range changes {
		k := tp{ch.Origin.Topic, ch.Origin.Partition}
		if n, ok := w.next[k]; ok && ch.Origin.Offset < n {
			res.Skipped++
			continue
		}
		if _, ok := first[k]; !ok {
			first[k] = ch.Origin.Offset
		}
		last[k] = max(last[k], ch.Origin.Offset)
		w.lineage.observe(ch.Event)
		r, err := w.lay.Row(ch.Event, ch.Key, ch.Origin)
		if err != nil {
			res.Rejected = append(res.Rejected, writer.Rejected{Change: ch, Err: err})
			continue
		}
		rows = append(rows, r)
	}
	res.Rescued = w.lay.Rescued()
	if len(last) == 0 {
		return res, nil
	}
	if w.cfg.Mode == layout.Mirror {
		rows = newest(rows, &res)
	}
	if err := w.evolve(ctx); err != nil {
		return res, err
	}
	// Dead letters before the intent: once recorded, the offsets count as written.
	if len(res.Rejected) > 0 && reject != nil {
		if err := reject(res.Rejected); err != nil {
			return res, fmt.Errorf("table %s: dead-lettering %d changes: %w", w.cfg.Name, len(res.Rejected), err)
		}
	}
	schema := w.lay.Schema()
	name := ""
	if len(rows) > 0 {
		name = batchName(w.cfg.Name, first, last)
		prow := make([]parquetio.Row, len(rows))
		for i, r := range rows {
			prow[i] = parquetio.Row(r)
		}
		b, _ := json.Marshal(schema)
		data, _, err := parquetio.Write(schema, nil, prow, parquetio.Options{Metadata: map[string]string{PropSchema: string(b)}})
		if err != nil {
			return res, fmt.Errorf("table %s: encoding the batch: %w", w.cfg.Name, err)
		}
		if err := w.stage.Put(ctx, name, data); err != nil {
			return res, fmt.Errorf("table %s: staging %s at %s: %w", w.cfg.Name, name, w.stage.Dir(), err)
		}
		w.mine[name] = true
		res.Files, res.Bytes = 1, int64(len(data))
	}
	intent := make([]offsetRow, 0, len(last))
	for _, k := range slices.SortedFunc(maps.Keys(last), cmpTP) {
		prev, ok := w.next[k]
		if !ok {
			prev = -1
		}
		intent = append(intent, offsetRow{tp: k, next: last[k] + 1, file: name, first: first[k], prev: prev})
	}
	if err := w.record(ctx, intent); err != nil {
		return res, err
	}
	if name != "" {
		fault.Point(fault.AfterParquet) // recorded, not loaded: the batch is in doubt
		if err := w.crashAt("intent"); err != nil {
			return res, err
		}
		if err := w.apply(ctx, name, schema, minOffset(first)); err != nil {
			return res, err
		}
		for _, o := range intent {
			delete(w.unsettled, o.tp)
		}
		if err := w.crashAt("loaded"); err != nil {
			return res, err
		}
	}
	res.Version, res.Rows = 0, len(rows)
	w.forget(ctx)
	return res, nil
}

// record records a batch's intent, as a compare-and-set: a partition's row changes only if it
// still holds the next offset this writer read or recorded. The batch's partitions are in doubt
// from here until the load succeeds.
func (w *Writer) record(ctx context.Context, intent []offsetRow) error {
	what := "recording the batch's offsets in " + w.cfg.Offsets.String()
	q := recordOffsets(w.cfg.Offsets, w.cfg.Name, intent)
	var affected int64 = -1
	if err := w.c.exec(ctx, what, q, affectedRows(&affected)); err != nil {
		return err
	}
	for _, o := range intent {
		w.next[o.tp], w.first[o.tp] = o.next, o.first
		if o.file == "" {
			delete(w.batch, o.tp)
			delete(w.unsettled, o.tp)
		} else {
			w.batch[o.tp], w.unsettled[o.tp] = o.file, o.file
		}
	}
	if affected != int64(len(intent)) {
		// Some or none of the rows changed: whatever this writer believes of these partitions is
		// stale. Load reads them again (and settles what the other writer recorded).
		w.lay = nil
		return &StatementError{Table: w.cfg.Name, What: what, Err: fmt.Errorf("%w: %d of %d partitions recorded (%s)", ErrFenced, max(affected, 0), len(intent), describe(intent))}
	}
	return nil
}

func describe(intent []offsetRow) string {
	parts := make([]string, len(intent))
	for i, o := range intent {
		parts[i] = fmt.Sprintf("%s[%d] from %d", o.tp.topic, o.tp.partition, o.prev)
	}
	return strings.Join(parts, ", ")
}

func minOffset(first map[tp]int64) int64 {
	m := int64(-1)
	for _, o := range first {
		if m < 0 || o < m {
			m = o
		}
	}
	return m
}

func (w *Writer) crashAt(point string) error {
	if w.crash == nil {
		return nil
	}
	return w.crash(point)
}

// newest keeps the newest change per key (layout.Newer), in key order.
func newest(rows []layout.Row, res *writer.Result) []layout.Row {
	byKey := map[string]layout.Row{}
	for _, r := range rows {
		k := r[layout.ColKey].(string)
		if old, ok := byKey[k]; ok {
			res.Stale++
			if !layout.Newer(r, old) {
				continue
			}
		}
		byKey[k] = r
	}
	out := make([]layout.Row, 0, len(byKey))
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, byKey[k])
	}
	return out
}

func cmpTP(a, b tp) int {
	return cmp.Or(strings.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
}

// batchName derives a staged file's name from the offsets its batch covers: the same batch
// staged again gets the same name, which COPY INTO recognises.
func batchName(table string, first, last map[tp]int64) string {
	h := sha256.New()
	h.Write([]byte(table))
	for _, k := range slices.SortedFunc(maps.Keys(last), cmpTP) {
		fmt.Fprintf(h, "\x00%s\x00%d\x00%d\x00%d", k.topic, k.partition, first[k], last[k])
	}
	return "batch-" + hex.EncodeToString(h.Sum(nil)[:16]) + ".parquet"
}

// apply loads a batch just recorded, with the statement that settles it later (see load).
func (w *Writer) apply(ctx context.Context, name string, schema *deltatype.StructType, low int64) error {
	return w.load(ctx, "loading batch "+name, name, schema, "", low)
}

// settle loads a batch in doubt again, restricted to the rows of the given partitions.
func (w *Writer) settle(ctx context.Context, name string, parts map[string][]int32) error {
	data, err := w.stage.Get(ctx, name)
	if err != nil {
		return fmt.Errorf("table %s: the last batch of partitions %v is in doubt and its staged file %s cannot be read "+
			"(staging emptied by hand?): %w", w.cfg.Name, parts, w.stage.Path(name), err)
	}
	schema, err := stagedSchema(data)
	if err != nil {
		return fmt.Errorf("table %s: staged file %s: %w", w.cfg.Name, w.stage.Path(name), err)
	}
	low := int64(-1)
	for topic, ps := range parts {
		for _, p := range ps {
			if f := w.first[tp{topic, p}]; low < 0 || f < low {
				low = f
			}
		}
	}
	return w.load(ctx, "settling batch "+name, name, schema, partitionFilter(parts), low)
}

// load runs the statement loading a staged file (of that schema) into the table, restricted by
// where: idempotent, so that a batch in doubt can be loaded again. A mirror's MERGE applies a
// change only over an older row; the spark dialect's changelog MERGE inserts only rows whose
// Kafka position the table lacks (low, the batch's first offset, lets the engine skip older
// files); both take only rows whose partition's offsets row still names the file. Databricks'
// COPY INTO skips a file the table has loaded.
func (w *Writer) load(ctx context.Context, what, name string, schema *deltatype.StructType, where string, low int64) error {
	b := staged{table: w.schema, file: schema, path: w.stage.Path(name)}
	guard := recorded(w.cfg.Offsets, w.cfg.Name, name)
	if where != "" {
		guard = "(" + where + ") AND " + guard
	}
	switch {
	case w.cfg.Mode == layout.Mirror:
		return w.c.exec(ctx, what, mergeMirror(w.cfg.Table, b, guard))
	case w.cfg.Dialect == Databricks:
		return w.c.exec(ctx, what, copyInto(w.cfg.Table, b, w.stage.Dir(), name))
	default:
		return w.c.exec(ctx, what, mergeChangelog(w.cfg.Table, b, guard, low))
	}
}

// sweep deletes staged files of this table no offsets row refers to, older than the retention.
// Failures are logged: a leftover file costs storage, nothing else.
func (w *Writer) sweep(ctx context.Context) {
	objs, err := w.stage.List(ctx)
	if err != nil {
		w.log.Warn("listing staged files", "table", w.cfg.Name, "error", err)
		return
	}
	live := map[string]bool{}
	for _, f := range w.batch {
		live[f] = true
	}
	for _, o := range objs {
		if live[o.Name] || w.mine[o.Name] || time.Since(o.Modified) < w.cfg.StagingRetention {
			continue
		}
		if err := w.stage.Delete(ctx, o.Name); err != nil {
			w.log.Warn("deleting a staged file", "table", w.cfg.Name, "file", o.Name, "error", err)
		}
	}
}

// forget deletes the files this writer staged that are no partition's last batch any more.
func (w *Writer) forget(ctx context.Context) {
	live := map[string]bool{}
	for _, f := range w.batch {
		live[f] = true
	}
	for f := range w.mine {
		if !live[f] {
			delete(w.mine, f)
			if err := w.stage.Delete(ctx, f); err != nil {
				w.log.Warn("deleting a staged file", "table", w.cfg.Name, "file", f, "error", err)
			}
		}
	}
}
