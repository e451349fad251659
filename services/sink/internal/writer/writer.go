// Package writer applies batches of change events to one Delta table, exactly once: each batch
// is one Delta commit holding its data files and, per Kafka topic-partition, a txn action whose
// version is the last offset written. Offsets at or below a partition's txn version are already in
// the table and are skipped, so a batch replayed after a crash (between the Delta commit and the
// Kafka offset commit) or after a rebalance adds nothing twice.
//
// Modes:
//   - changelog appends every change as a row (op, before, after, lineage), in Kafka order.
//   - mirror keeps one row per item. A batch is compacted to the newest change per key
//     (sequence number, stream over snapshot), then merged: rows live in key-hash buckets (a
//     bucket per file group, recorded in the add action's tags), and only the files of the
//     buckets the batch touches, and among those only the files whose _key range covers one of
//     the batch's keys, are read and rewritten. A change older than the table's row for its key
//     is ignored (the sequence guard).
package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/fault"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// Config configures one table's writer.
type Config struct {
	Name            string // for logs and commitInfo
	Mode            string // layout.Changelog or layout.Mirror
	PartitionByDate bool   // changelog only
	// TargetFileRows bounds the rows of one data file. Default: 1,000,000.
	TargetFileRows int
	// Buckets is the number of key-hash buckets of a copy-on-write mirror table, fixed when the
	// table is created (recorded in its configuration). Default: 16.
	Buckets int
	// MirrorStrategy is how a mirror replaces rows: StrategyDeletionVectors or
	// StrategyCopyOnWrite (the default here; the sink's settings choose deletion vectors).
	MirrorStrategy string
	// Properties are set in the table's configuration when the writer creates it.
	Properties map[string]string
	// Hints fix the column types of attributes (schema_hints).
	Hints *layout.Hints
}

// Change is one change event to write, with where it was read from.
type Change struct {
	Event  *ddbavro.Event
	Key    avrov1.Key
	Origin layout.Origin
}

// Rejected is a change that cannot be written (it does not map to the table); the caller
// dead-letters it.
type Rejected struct {
	Change Change
	Err    error
}

// Result is what a Write did.
type Result struct {
	Version   int64 // the commit's version; -1 when nothing was committed (0 for a warehouse's table: it does not say)
	Rows      int   // rows written (changelog) or upserted and deleted (mirror)
	Skipped   int   // changes already in the table (offsets at or below its txn versions)
	Stale     int   // mirror: changes superseded in the batch or older than the table's row for their key
	Files     int   // data files added
	Rewritten int   // mirror: data files rewritten (copy-on-write) or given a new deletion vector
	Bytes     int64 // bytes of data files added
	Rescued   int64 // values that did not fit their columns, kept in _rescued_data
	LiveFiles int   // data files of the table after the commit; -1 when unknown (a warehouse's table)
	Rejected  []Rejected
}

// Writer writes to one table. It is not safe for concurrent use; several writers (replicas) may
// write one table at once, Delta's optimistic concurrency orders them.
type Writer struct {
	cfg   Config
	table *delta.Table
	log   *slog.Logger
	snap  *delta.Snapshot
	lay   *layout.Layout
	// mirror is a mirror's strategy (nil for a changelog).
	mirror mirrorStrategy
}

// ConfBuckets is the table configuration key holding a mirror's bucket count.
const ConfBuckets = "ddb2delta.buckets"

// New returns a writer of the table in store.
func New(cfg Config, store storage.Store, log *slog.Logger) *Writer {
	if cfg.TargetFileRows <= 0 {
		cfg.TargetFileRows = 1_000_000
	}
	if cfg.Buckets <= 0 {
		cfg.Buckets = 16
	}
	t := delta.NewTable(store)
	t.Log = log
	w := &Writer{cfg: cfg, table: t, log: log}
	if cfg.Mode != layout.Mirror {
		w.cfg.MirrorStrategy = ""
	} else {
		if cfg.MirrorStrategy == StrategyDeletionVectors {
			w.mirror = newDVStrategy(w)
		} else {
			w.cfg.MirrorStrategy = StrategyCopyOnWrite
			w.mirror = cowStrategy{w}
		}
	}
	return w
}

// ConfEnableDV is the table property allowing writers to create deletion vectors.
const ConfEnableDV = "delta.enableDeletionVectors"

// protocolFor returns the protocol the writer needs of a table at protocol p (nil: a new table),
// or nil when p will do: deletion vectors for that strategy (a table moving to them keeps the
// features it had), the change data feed for a new table whose properties turn it on.
func (w *Writer) protocolFor(p *delta.Protocol) *delta.Protocol {
	up, changed := p, p == nil
	if up == nil {
		up = delta.LegacyProtocol()
	}
	if w.cfg.MirrorStrategy == StrategyDeletionVectors && !up.HasFeature(delta.FeatureDeletionVectors) {
		up = up.WithWriterFeature(delta.FeatureDeletionVectors)
		if up.MinReaderVersion < 3 {
			up.MinReaderVersion, up.ReaderFeatures = 3, nil
		}
		up.ReaderFeatures = append(slices.Clone(up.ReaderFeatures), delta.FeatureDeletionVectors)
		changed = true
	}
	if p == nil && strings.EqualFold(w.cfg.Properties[delta.ConfEnableCDF], "true") {
		up = up.WithWriterFeature(delta.FeatureChangeDataFeed)
	}
	if !changed {
		return nil
	}
	return up
}

// Table returns the Delta table.
func (w *Writer) Table() *delta.Table { return w.table }

// Load reads the table's latest snapshot and its layout. Write calls it when needed.
func (w *Writer) Load(ctx context.Context) error {
	snap, err := w.table.Snapshot(ctx)
	if err != nil {
		return err
	}
	return w.adopt(snap)
}

func (w *Writer) adopt(snap *delta.Snapshot) error {
	schema, err := snap.Schema()
	if err != nil {
		return err
	}
	var parts []string
	if snap.Metadata != nil {
		if err := delta.CheckWritable(snap, w.cfg.Mode == layout.Mirror); err != nil {
			return fmt.Errorf("table %s: %w", w.cfg.Name, err)
		}
		parts = snap.Metadata.PartitionColumns
		if w.cfg.Mode == layout.Mirror {
			if b, err := strconv.Atoi(snap.Metadata.Configuration[ConfBuckets]); err == nil && b > 0 {
				w.cfg.Buckets = b
			}
		}
	}
	lay, err := layout.New(layout.Options{Mode: w.cfg.Mode, PartitionByDate: w.cfg.PartitionByDate, Hints: w.cfg.Hints}, schema, parts)
	if err != nil {
		return fmt.Errorf("table %s at %s: %w", w.cfg.Name, w.table.Store.Location(), err)
	}
	w.snap, w.lay = snap, lay
	return nil
}

// AppID is the txn app id of a topic-partition.
func AppID(topic string, partition int32) string {
	return "ddb2delta-sink:" + topic + ":" + strconv.Itoa(int(partition))
}

// NextOffset returns the offset to consume next for a topic-partition: one past the last offset
// the table holds, or -1 when it holds none.
func (w *Writer) NextOffset(topic string, partition int32) int64 {
	if w.snap == nil {
		return -1
	}
	if v, ok := w.snap.TxnVersion(AppID(topic, partition)); ok {
		return v + 1
	}
	return -1
}

// Close waits for the checkpoint being written in the background, if any. The writer may be
// used again after it.
func (w *Writer) Close() { _, _ = w.table.WaitCheckpoint() }

// Snapshot returns the snapshot the writer last read or committed.
func (w *Writer) Snapshot() *delta.Snapshot { return w.snap }

// Write applies changes (in Kafka order per partition) as one commit, retrying on conflicts with
// concurrent writers from a fresh snapshot. Changes that cannot be mapped to rows are given to
// reject before the commit (once), so that they are dead-lettered before the commit records
// their offsets as done; if reject fails, nothing is committed.
func (w *Writer) Write(ctx context.Context, changes []Change, reject func([]Rejected) error) (Result, error) {
	rejected := false
	onReject := func(r []Rejected) error {
		if rejected || len(r) == 0 || reject == nil {
			return nil
		}
		if err := reject(r); err != nil {
			return fmt.Errorf("dead-lettering %d changes: %w", len(r), err)
		}
		rejected = true
		return nil
	}
	if w.snap == nil {
		if err := w.Load(ctx); err != nil {
			return Result{Version: -1}, err
		}
	}
	for attempt := 0; ; attempt++ {
		res, written, err := w.attempt(ctx, changes, onReject)
		if err == nil || !errors.Is(err, delta.ErrConflict) || attempt >= 20 {
			return res, err
		}
		// The batch's files stay: vacuum deletes them once no version references them and the
		// retention has passed. Deleting them here would be wrong whenever the outcome of a
		// commit was unknown and it landed after all.
		w.log.Info("concurrent commit conflicts with this batch; retrying from the new snapshot", "table", w.cfg.Name, "error", err, "unreferenced_files", len(written))
		if err := w.Load(ctx); err != nil {
			return Result{Version: -1}, err
		}
	}
}

// pending is a change mapped to its row.
type pending struct {
	row layout.Row
	ch  Change
}

func (w *Writer) attempt(ctx context.Context, changes []Change, onReject func([]Rejected) error) (Result, []string, error) {
	res := Result{Version: -1}
	lastTxn := map[string]int64{}
	var rows []pending
	w.lay.Rescued() // count this attempt's only
	for _, ch := range changes {
		app := AppID(ch.Origin.Topic, ch.Origin.Partition)
		if v, ok := w.snap.TxnVersion(app); ok && ch.Origin.Offset <= v {
			res.Skipped++
			continue
		}
		lastTxn[app] = max(lastTxn[app], ch.Origin.Offset)
		r, err := w.lay.Row(ch.Event, ch.Key, ch.Origin)
		if err != nil {
			res.Rejected = append(res.Rejected, Rejected{Change: ch, Err: err})
			continue
		}
		rows = append(rows, pending{row: r, ch: ch})
	}
	res.Rescued = w.lay.Rescued()
	for _, p := range w.lay.Mixed() {
		w.log.Warn("an attribute has values of another DynamoDB type than its column: they are kept in _rescued_data, "+
			"and which type got the column depended on arrival order; give it a schema hint (json takes most types)",
			"table", w.cfg.Name, "attribute", p)
	}
	if len(lastTxn) == 0 {
		return res, nil, nil // everything was written before
	}
	if err := onReject(res.Rejected); err != nil {
		return res, nil, err
	}
	read := w.snap
	var actions []delta.Action
	schema := w.lay.Schema()
	if read.Version < 0 {
		b, _ := json.Marshal(schema)
		conf := map[string]string{delta.ConfStatsColumns: StatsColumns(schema, w.lay.PartitionColumns())}
		maps.Copy(conf, w.cfg.Properties)
		conf["ddb2delta.mode"] = w.cfg.Mode
		if w.lay.Typed() {
			conf[layout.ConfLayout] = layout.ConfLayoutTyped
		}
		if w.cfg.Mode == layout.Mirror {
			conf["ddb2delta.mirror.strategy"] = w.cfg.MirrorStrategy
			if w.cfg.MirrorStrategy == StrategyDeletionVectors {
				conf[ConfEnableDV] = "true"
			} else {
				conf[ConfBuckets] = strconv.Itoa(w.cfg.Buckets)
			}
		}
		actions = append(actions,
			delta.Action{Protocol: w.protocolFor(nil)},
			delta.Action{MetaData: &delta.Metadata{ID: delta.NewID(), Name: w.cfg.Name, Format: delta.Format{Provider: "parquet", Options: map[string]string{}},
				SchemaString: string(b), PartitionColumns: orEmpty(w.lay.PartitionColumns()), Configuration: conf, CreatedTime: w.table.Now().UnixMilli()}})
		w.lay.Grew()
	} else if up, grew := w.protocolFor(read.Protocol), w.lay.Grew(); up != nil || grew || w.cfg.MirrorStrategy == StrategyDeletionVectors && read.Metadata.Configuration[ConfEnableDV] != "true" {
		// The schema grew, or a table moves to deletion vectors (as Spark's ALTER TABLE SET
		// TBLPROPERTIES ('delta.enableDeletionVectors' = true) does).
		md := *read.Metadata
		if w.cfg.MirrorStrategy == StrategyDeletionVectors && md.Configuration[ConfEnableDV] != "true" {
			md.Configuration = maps.Clone(md.Configuration)
			md.Configuration[ConfEnableDV] = "true"
			w.log.Info("table moves to deletion vectors", "table", w.cfg.Name, "protocol", up)
		}
		if up != nil {
			actions = append(actions, delta.Action{Protocol: up})
		}
		b, _ := json.Marshal(schema)
		md.SchemaString = string(b)
		if _, ok := md.Configuration[delta.ConfStatsColumns]; ok && w.cfg.Properties[delta.ConfStatsColumns] == "" { // kept current
			md.Configuration = maps.Clone(md.Configuration)
			md.Configuration[delta.ConfStatsColumns] = StatsColumns(schema, w.lay.PartitionColumns())
		}
		actions = append(actions, delta.Action{MetaData: &md})
		if grew {
			w.log.Info("table schema evolved", "table", w.cfg.Name, "columns", len(schema.Fields))
		}
	}
	var data []delta.Action
	var written []string
	var err error
	switch w.cfg.Mode {
	case layout.Changelog:
		data, written, err = w.appendRows(ctx, rows, &res)
	case layout.Mirror:
		meta := read.Metadata
		for _, a := range actions {
			if a.MetaData != nil {
				meta = a.MetaData
			}
		}
		var cdc *changeSet
		if delta.CDFEnabled(meta) {
			cdc = &changeSet{}
		}
		data, written, err = w.mergeRows(ctx, rows, cdc, &res)
		if err == nil && cdc != nil && len(cdc.rows) > 0 {
			var a delta.Action
			var name string
			a, name, err = w.writeChanges(ctx, cdc, &res)
			if name != "" {
				written = append(written, name)
			}
			data = append(data, a)
		}
	}
	if err != nil {
		return res, written, err
	}
	actions = append(actions, data...)
	fault.Point(fault.AfterParquet)
	now := w.table.Now().UnixMilli()
	for _, app := range sortedKeys(lastTxn) {
		actions = append(actions, delta.Action{Txn: &delta.Txn{AppID: app, Version: lastTxn[app], LastUpdated: now}})
	}
	info := map[string]any{"operation": "WRITE", "operationParameters": map[string]any{"mode": w.cfg.Mode},
		"ddb2delta": map[string]any{"table": w.cfg.Name, "offsets": lastTxn, "rows": res.Rows, "files": res.Files}}
	if w.cfg.Mode == layout.Mirror {
		info["operation"] = "MERGE"
	}
	keys := make([]string, 0, len(rows))
	for _, p := range rows {
		keys = append(keys, p.row[layout.ColKey].(string))
	}
	slices.Sort(keys)
	var check delta.Check
	if w.mirror != nil {
		check = w.mirror.check(data, slices.Compact(keys))
	}
	snap, err := w.table.Commit(ctx, read, actions, info, check)
	if err != nil {
		if snap == nil {
			return res, written, err
		}
		w.log.Warn("committed, but the checkpoint failed", "table", w.cfg.Name, "error", err)
	}
	w.snap = snap
	if w.mirror != nil {
		w.mirror.committed(snap)
	}
	res.Version, res.LiveFiles = snap.Version, len(snap.Files)
	return res, written, nil
}

// StatsColumns renders the columns the sink writes statistics for as the value of
// delta.dataSkippingStatsColumns: Spark then uses those statistics (by default it uses only the
// first 32 columns, most of them lineage here) and collects the same ones when it rewrites files
// (so other writers' files keep the _key bounds the mirror merge prunes with).
func StatsColumns(s *deltatype.StructType, partitions []string) string {
	var cols []string
	for _, f := range s.Fields {
		if parquetio.StatsColumn(f.Type) && !slices.Contains(partitions, f.Name) {
			cols = append(cols, delta.QuoteColumn(f.Name))
		}
	}
	return strings.Join(cols, ",")
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := slices.Collect(maps.Keys(m))
	sort.Strings(out)
	return out
}

// writeFile encodes rows as a data file, stores it and returns its add action.
func (w *Writer) writeFile(ctx context.Context, rows []layout.Row, partValues map[string]string, dir string, tags map[string]string, res *Result) (delta.Action, string, error) {
	prow := make([]parquetio.Row, len(rows))
	for i, r := range rows {
		prow[i] = parquetio.Row(r)
	}
	data, stats, err := parquetio.Write(w.lay.Schema(), w.lay.PartitionColumns(), prow, parquetio.Options{})
	if err != nil {
		return delta.Action{}, "", fmt.Errorf("table %s: %w", w.cfg.Name, err)
	}
	return w.storeFile(ctx, data, stats, partValues, dir, tags, res)
}

// storeFile stores an encoded data file and returns its add action.
func (w *Writer) storeFile(ctx context.Context, data []byte, stats *parquetio.Stats, partValues map[string]string, dir string, tags map[string]string, res *Result) (delta.Action, string, error) {
	name := delta.NewFileName(dir)
	if err := w.table.Store.Write(ctx, name, data); err != nil {
		return delta.Action{}, "", err
	}
	res.Files++
	res.Bytes += int64(len(data))
	return delta.Action{Add: &delta.Add{Path: name, PartitionValues: partValues, Size: int64(len(data)),
		ModificationTime: w.table.Now().UnixMilli(), DataChange: true, Stats: stats.JSON(), Tags: tags}}, name, nil
}

// appendRows writes a changelog batch: rows in Kafka order, split by date partition and file size.
func (w *Writer) appendRows(ctx context.Context, rows []pending, res *Result) ([]delta.Action, []string, error) {
	groups := map[string][]layout.Row{}
	for _, p := range rows {
		part := ""
		if d, ok := p.row[layout.ColDate].(time.Time); ok {
			part = d.Format("2006-01-02")
		}
		groups[part] = append(groups[part], p.row)
	}
	var actions []delta.Action
	var written []string
	for _, part := range sortedKeys(groups) {
		g := groups[part]
		values, dir := map[string]string{}, ""
		if part != "" {
			values[layout.ColDate] = part
			dir = layout.ColDate + "=" + part
		}
		for start := 0; start < len(g); start += w.cfg.TargetFileRows {
			chunk := g[start:min(start+w.cfg.TargetFileRows, len(g))]
			a, name, err := w.writeFile(ctx, chunk, values, dir, nil, res)
			if name != "" {
				written = append(written, name)
			}
			if err != nil {
				return nil, written, err
			}
			actions = append(actions, a)
			res.Rows += len(chunk)
		}
	}
	return actions, written, nil
}
