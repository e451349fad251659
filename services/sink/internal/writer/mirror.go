package writer

import (
	"context"
	"maps"
	"slices"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
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
	// wrote. newest holds the batch's newest change per key, keys its keys in order.
	merge(ctx context.Context, newest map[string]layout.Row, keys []string, res *Result) ([]delta.Action, []string, error)
	// check is the conflict check of the commit holding the merge's actions.
	check(mine []delta.Action, keys []string) delta.Check
	// committed tells the strategy that the last merge's commit landed, as snap.
	committed(snap *delta.Snapshot)
}

// mergeRows writes a mirror batch: the newest change per key (sequence number, stream over
// snapshot), applied by the table's strategy.
func (w *Writer) mergeRows(ctx context.Context, rows []pending, res *Result) ([]delta.Action, []string, error) {
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
	return w.mirror.merge(ctx, newest, slices.Sorted(maps.Keys(newest)), res)
}
