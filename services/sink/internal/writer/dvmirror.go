package writer

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/parquet-go/parquet-go"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
)

// tagPartition is the add-action tag holding the Kafka partition whose changes a deletion-vector
// mirror's file holds. A key's changes all come from one partition (the producer keys records by
// the item's key), so a file of partition p only ever has rows deleted by the sink replica that
// owns p: replicas do not touch each other's files, and their commits do not conflict.
const tagPartition = "ddb2delta.partition"

// dvStrategy is the deletion-vector mirror strategy. A batch:
//   - looks up each key in the key index: where its live row is, and that row's sequence number
//     (a change not newer than it is stale and skipped);
//   - writes the new rows (inserts and updates) to new files, one group per Kafka partition;
//   - marks the replaced and deleted rows in the deletion vectors of their files: for each such
//     file, a remove of it with its old vector and an add of it with the new one (the old rows
//     plus these), all vectors of the commit in one deletion_vector_<uuid>.bin file. A file all of
//     whose rows are deleted is removed instead.
//
// Its cost follows the batch: the new rows' Parquet, one small vector per touched file, and a
// commit whose size grows with the files touched (at most all files, each once).
type dvStrategy struct {
	w       *Writer
	idx     *keyIndex
	pending *dvPending // the last merge's files, registered in the index once its commit lands
}

type dvPending struct {
	files []dvNewFile
	dvs   []dvUpdate
}

type dvNewFile struct {
	add  *delta.Add
	rows []fileRow
}

type dvUpdate struct {
	add *delta.Add
	dv  *roaring.Bitmap
}

func newDVStrategy(w *Writer) *dvStrategy { return &dvStrategy{w: w, idx: newKeyIndex()} }

func (d *dvStrategy) merge(ctx context.Context, newest map[string]layout.Row, keys []string, cdc *changeSet, res *Result) ([]delta.Action, []string, error) {
	w := d.w
	d.pending = nil
	if n, err := d.idx.sync(ctx, w.table.Store, w.snap); err != nil {
		return nil, nil, fmt.Errorf("table %s: %w", w.cfg.Name, err)
	} else if n > 0 {
		w.log.Debug("indexed the keys of new files", "table", w.cfg.Name, "files", n, "keys", len(d.idx.slots))
	}
	deleted := map[int32]*roaring.Bitmap{} // index file id → rows this batch deletes
	byPart := map[int32][]layout.Row{}
	var replaced []layout.Row // the changes replacing a row, for the change data feed
	for _, k := range keys {
		r := newest[k]
		s, found := d.idx.lookup(k)
		if !found {
			if r[layout.ColOp] != "d" {
				cdc.add(ChangeInsert, r)
			}
		} else {
			nw, err := newer(r, s)
			if err != nil {
				return nil, nil, fmt.Errorf("table %s: key %s: %w", w.cfg.Name, k, err)
			}
			if !nw {
				res.Stale++
				continue
			}
			if deleted[s.file] == nil {
				deleted[s.file] = roaring.New()
			}
			deleted[s.file].Add(s.row)
			if cdc != nil {
				replaced = append(replaced, r)
			}
		}
		res.Rows++
		if r[layout.ColOp] == "d" {
			continue
		}
		p, _ := r[layout.ColKafkaPartition].(int32)
		byPart[p] = append(byPart[p], r)
	}
	if cdc != nil && len(replaced) > 0 {
		if err := d.preimages(ctx, deleted, replaced, cdc); err != nil {
			return nil, nil, fmt.Errorf("table %s: change data: %w", w.cfg.Name, err)
		}
	}
	pend := &dvPending{}
	var actions []delta.Action
	var written []string
	for _, p := range slices.Sorted(maps.Keys(byPart)) {
		rows := byPart[p] // in key order
		for start := 0; start < len(rows); start += w.cfg.TargetFileRows {
			chunk := rows[start:min(start+w.cfg.TargetFileRows, len(rows))]
			a, name, err := w.writeFile(ctx, chunk, map[string]string{}, "", map[string]string{tagPartition: strconv.Itoa(int(p))}, res)
			if name != "" {
				written = append(written, name)
			}
			if err != nil {
				return nil, written, err
			}
			actions = append(actions, a)
			f := dvNewFile{add: a.Add, rows: make([]fileRow, len(chunk))}
			for i, r := range chunk {
				f.rows[i] = fileRow{key: r[layout.ColKey].(string), seq: r[layout.ColSequence].(string), snap: r[layout.ColSnapshot].(bool)}
			}
			pend.files = append(pend.files, f)
		}
	}
	if len(deleted) > 0 {
		now := w.table.Now().UnixMilli()
		dvw := delta.NewDVWriter()
		vectors := 0
		for _, id := range slices.Sorted(maps.Keys(deleted)) {
			f := d.idx.files[id]
			all := deleted[id]
			if f.dv != nil {
				all.Or(f.dv)
			}
			actions = append(actions, delta.RemoveOf(f.add, now, true))
			if int(all.GetCardinality()) >= f.rows {
				continue // every row deleted: the file goes
			}
			desc, err := dvw.Add(all)
			if err != nil {
				return nil, written, fmt.Errorf("table %s: %s: %w", w.cfg.Name, f.add.Path, err)
			}
			vectors++
			na := *f.add
			na.DeletionVector, na.DataChange, na.Stats = desc, true, wideStats(f.add.Stats)
			actions = append(actions, delta.Action{Add: &na})
			pend.dvs = append(pend.dvs, dvUpdate{add: &na, dv: all})
		}
		if vectors > 0 {
			written = append(written, dvw.Name())
			if err := w.table.Store.Write(ctx, dvw.Name(), dvw.Bytes()); err != nil {
				return nil, written, fmt.Errorf("table %s: writing deletion vectors: %w", w.cfg.Name, err)
			}
			res.Bytes += int64(len(dvw.Bytes()))
		}
		res.Rewritten += len(deleted)
	}
	d.pending = pend
	return actions, written, nil
}

// preimages records the changes of the rows a batch replaces (those deleted lists, by index file
// id), reading each replaced row from its file: an update's pre- and post-image, or a delete.
// replaced holds the batch's changes of those rows.
func (d *dvStrategy) preimages(ctx context.Context, deleted map[int32]*roaring.Bitmap, replaced []layout.Row, cdc *changeSet) error {
	byKey := make(map[string]layout.Row, len(replaced))
	for _, r := range replaced {
		byKey[r[layout.ColKey].(string)] = r
	}
	for _, id := range slices.Sorted(maps.Keys(deleted)) {
		f := d.idx.files[id]
		data, err := d.w.table.Store.Read(ctx, f.add.Path)
		if err != nil {
			return err
		}
		var pos []int
		for it := deleted[id].Iterator(); it.HasNext(); {
			pos = append(pos, int(it.Next()))
		}
		old, err := parquetio.ReadDataAt(data, pos)
		if err != nil {
			return fmt.Errorf("%s: %w", f.add.Path, err)
		}
		for _, o := range old {
			r := byKey[o[layout.ColKey].(string)]
			if r[layout.ColOp] == "d" {
				cdc.add(ChangeDelete, o)
			} else {
				cdc.upsert(o, r)
			}
		}
	}
	return nil
}

// wideStats marks a file's statistics as bounds (tightBounds false): once rows of the file are
// deleted, its minimum and maximum may belong to deleted rows, and numRecords counts them.
func wideStats(stats string) string {
	var m map[string]json.RawMessage
	if stats == "" || json.Unmarshal([]byte(stats), &m) != nil {
		return stats
	}
	m["tightBounds"] = json.RawMessage("false")
	b, err := json.Marshal(m)
	if err != nil {
		return stats
	}
	return string(b)
}

func (d *dvStrategy) committed(snap *delta.Snapshot) {
	p := d.pending
	d.pending = nil
	if p == nil {
		return
	}
	for _, f := range p.files {
		if live, ok := snap.Files[f.add.Path]; ok && live == f.add {
			if err := d.idx.register(f.add, f.rows); err != nil {
				// Only a malformed sequence number fails, and the layout checked them: the next
				// merge's sync reads the file instead.
				d.w.log.Warn("could not index a file's keys; reading them back", "table", d.w.cfg.Name, "file", f.add.Path, "error", err)
			}
		}
	}
	for _, u := range p.dvs {
		if live, ok := snap.Files[u.add.Path]; ok && live == u.add {
			d.idx.setDV(u.add, u.dv)
		}
	}
}

// check refuses to move a commit past a concurrent one that added a row for one of its keys:
// this batch looked its keys up before that row existed. A file the concurrent commit added with
// dataChange (not a file whose deletion vector it changed, nor a compaction's) whose _key range
// covers a key of the batch has its keys read and compared. A concurrent change of the deletion
// vector of a file this commit also changes is refused by delta.Table.Commit (both remove it).
func (d *dvStrategy) check(_ []delta.Action, keys []string) delta.Check {
	w := d.w
	return func(c delta.Commit) error {
		removed := map[string]bool{}
		for _, a := range c.Actions {
			if a.Remove != nil {
				removed[a.Remove.Path] = true
			}
		}
		for _, a := range c.Actions {
			if a.Add == nil || !a.Add.DataChange || removed[a.Add.Path] || !mayHold(a.Add, keys) {
				continue
			}
			hit, err := holdsKey(context.Background(), w, a.Add, keys)
			if err != nil {
				return fmt.Errorf("version %d added %s, whose keys could not be read (%v): %w", c.Version, a.Add.Path, err, delta.ErrConflict)
			}
			if hit != "" {
				return fmt.Errorf("version %d added %s, which holds key %s of this batch: %w", c.Version, a.Add.Path, hit, delta.ErrConflict)
			}
		}
		return nil
	}
}

// holdsKey returns the first of keys (sorted) that a file holds, or "".
func holdsKey(ctx context.Context, w *Writer, a *delta.Add, keys []string) (string, error) {
	data, err := w.table.Store.Read(ctx, a.Path)
	if err != nil {
		return "", err
	}
	f, err := parquetio.Open(data)
	if err != nil {
		return "", err
	}
	hit := ""
	err = f.Scan(layout.ColKey, func(_ int, v parquet.Value) error {
		if k := string(v.ByteArray()); hit == "" {
			if i := sort.SearchStrings(keys, k); i < len(keys) && keys[i] == k {
				hit = k
			}
		}
		return nil
	})
	return hit, err
}
