package writer

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
)

// Mirror strategies: how a mirror replaces the rows a batch changes.
const (
	// StrategyDeletionVectors writes a batch's new rows to new files and marks the rows they
	// replace deleted in the deletion vectors of the files holding them (dvmirror.go): a batch
	// costs what it changes.
	StrategyDeletionVectors = "deletion_vectors"
	// StrategyCopyOnWrite rewrites the files holding rows a batch replaces (cow.go): a batch
	// costs what the files it touches hold, and every Delta reader reads the table.
	StrategyCopyOnWrite = "copy_on_write"
)

// mirrorStrategy applies a mirror batch, compacted to the newest change per key, to the table.
type mirrorStrategy interface {
	// merge returns the data actions of the batch against the writer's snapshot, and the files it
	// wrote. newest holds the batch's newest change per key, keys its keys in order; cdc, when
	// not nil (the table's change data feed is on), receives each row-level change.
	merge(ctx context.Context, newest map[string]layout.Row, keys []string, cdc *changeSet, res *Result) ([]delta.Action, []string, error)
	// check is the conflict check of the commit holding the merge's actions.
	check(mine []delta.Action, keys []string) delta.Check
	// committed tells the strategy that the last merge's commit landed, as snap.
	committed(snap *delta.Snapshot)
}

// mergeRows writes a mirror batch: the newest change per key (sequence number, stream over
// snapshot), applied by the table's strategy.
func (w *Writer) mergeRows(ctx context.Context, rows []pending, cdc *changeSet, res *Result) ([]delta.Action, []string, error) {
	newest := map[string]layout.Row{}
	for _, p := range rows {
		k := p.row[layout.ColKey].(string)
		old, ok := newest[k]
		if ok {
			res.Stale++ // one of the two is superseded within the batch
		}
		if !ok || layout.Newer(p.row, old) {
			newest[k] = p.row
		}
	}
	return w.mirror.merge(ctx, newest, slices.Sorted(maps.Keys(newest)), cdc, res)
}

// The change data feed (delta.enableChangeDataFeed): each mirror commit also writes the net
// change of each key it changed to a file in _change_data/, with a cdc action: an insert, an
// update as its pre-image (the table's row before) and post-image, a delete as the row deleted.
// Readers of the feed (Spark's readChangeFeed, Databricks' table_changes) read those files for
// the commit instead of computing changes from its data files.

// ColChangeType is the change data feed's column naming the kind of change.
const ColChangeType = "_change_type"

// Kinds of change in the change data feed.
const (
	ChangeInsert     = "insert"
	ChangePreimage   = "update_preimage"
	ChangePostimage  = "update_postimage"
	ChangeDelete     = "delete"
	changeDataPrefix = "_change_data"
)

// changeSet collects a commit's row-level changes.
type changeSet struct {
	rows []layout.Row
}

// add records a change of kind typ to row r (not changed; nil set: the feed is off).
func (c *changeSet) add(typ string, r layout.Row) {
	if c == nil {
		return
	}
	m := maps.Clone(r)
	m[ColChangeType] = typ
	c.rows = append(c.rows, m)
}

// upsert records the change of a key whose row old (nil: none) is replaced by r.
func (c *changeSet) upsert(old, r layout.Row) {
	if old == nil {
		c.add(ChangeInsert, r)
		return
	}
	c.add(ChangePreimage, old)
	c.add(ChangePostimage, r)
}

// writeChanges writes a commit's changes as one change data file and returns its cdc action.
func (w *Writer) writeChanges(ctx context.Context, c *changeSet, res *Result) (delta.Action, string, error) {
	schema := *w.lay.Schema()
	schema.Fields = append(slices.Clone(schema.Fields), deltatype.StructField{Name: ColChangeType, Type: deltatype.String, Nullable: true})
	prow := make([]parquetio.Row, len(c.rows))
	for i, r := range c.rows {
		prow[i] = parquetio.Row(r)
	}
	data, _, err := parquetio.Write(&schema, nil, prow, parquetio.Options{})
	if err != nil {
		return delta.Action{}, "", fmt.Errorf("table %s: change data: %w", w.cfg.Name, err)
	}
	name := delta.NewFileName(changeDataPrefix)
	if err := w.table.Store.Write(ctx, name, data); err != nil {
		return delta.Action{}, name, err
	}
	res.Bytes += int64(len(data))
	return delta.Action{CDC: &delta.CDC{Path: name, PartitionValues: map[string]string{}, Size: int64(len(data))}}, name, nil
}
