package writer

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
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

// tagBucket is the add-action tag holding a mirror file's bucket.
const tagBucket = "ddb2delta.bucket"

// Bucket returns the bucket of a key.
func Bucket(key string, buckets int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(buckets))
}

// fileBucket returns the bucket of a data file, or -1 for a file another writer made (Spark's
// OPTIMIZE, DELETE, UPDATE or MERGE, delta-rs's optimize, …): such files carry no bucket tag, or
// one this table does not have, and may hold keys of every bucket.
func (w *Writer) fileBucket(a *delta.Add) int {
	b, err := strconv.Atoi(a.Tags[tagBucket])
	if err != nil || b < 0 || b >= w.cfg.Buckets {
		return -1
	}
	return b
}

// keyRange is the _key range of a data file from its statistics. Other writers truncate long
// strings in statistics, keeping the maximum an upper bound (Delta's rule), so the range may be
// wider than the file's keys, never narrower.
func keyRange(a *delta.Add) (lo, hi string, ok bool) {
	var st struct {
		MinValues map[string]any `json:"minValues"`
		MaxValues map[string]any `json:"maxValues"`
	}
	if json.Unmarshal([]byte(a.Stats), &st) != nil {
		return "", "", false
	}
	lo, ok1 := st.MinValues[layout.ColKey].(string)
	hi, ok2 := st.MaxValues[layout.ColKey].(string)
	return lo, hi, ok1 && ok2
}

// mayHold reports whether a file may hold one of keys (sorted): a file without _key statistics
// may hold any.
func mayHold(a *delta.Add, keys []string) bool {
	lo, hi, ok := keyRange(a)
	if !ok {
		return true
	}
	i := sort.SearchStrings(keys, lo)
	return i < len(keys) && keys[i] <= hi
}

// cowStrategy is the copy-on-write mirror strategy.
//
// The table's invariant is one row per key. The sink's own files each hold one bucket; files
// of other writers may hold keys of every bucket. A batch reads and removes (1) the other
// writers' files whose key range covers one of its keys, spreading their rows over the buckets,
// and (2) in each bucket it touches, its own files whose range covers one of the bucket's batch
// keys; then it applies its changes and writes each touched bucket anew. Rows of other writers'
// files thus move back into bucket files, and no key is ever in two live files.
type cowStrategy struct{ w *Writer }

func (c cowStrategy) committed(*delta.Snapshot) {}

func (c cowStrategy) merge(ctx context.Context, newest map[string]layout.Row, allKeys []string, cdc *changeSet, res *Result) ([]delta.Action, []string, error) {
	w := c.w
	byBucket := map[int][]string{}
	for _, k := range allKeys {
		b := Bucket(k, w.cfg.Buckets)
		byBucket[b] = append(byBucket[b], k)
	}
	var actions []delta.Action
	var written []string
	now := w.table.Now().UnixMilli()
	current := map[int]map[string]layout.Row{} // bucket → key → the table's row
	rowsOf := func(b int) map[string]layout.Row {
		if current[b] == nil {
			current[b] = map[string]layout.Row{}
		}
		return current[b]
	}
	take := func(a *delta.Add) error {
		old, err := delta.ReadFile(ctx, w.table.Store, a)
		if err != nil {
			return fmt.Errorf("table %s: reading %s to rewrite it: %w", w.cfg.Name, a.Path, err)
		}
		for _, r := range old {
			k, ok := r[layout.ColKey].(string)
			if !ok {
				return fmt.Errorf("table %s: %s holds a row without %s", w.cfg.Name, a.Path, layout.ColKey)
			}
			rowsOf(Bucket(k, w.cfg.Buckets))[k] = layout.Row(r)
		}
		actions = append(actions, delta.RemoveOf(a, now, true))
		res.Rewritten++
		return nil
	}
	// An own file of a touched bucket is not decoded: only its _key column is read; a file holding
	// none of the batch's keys stays as it is; of the others the rows of the batch's keys are
	// decoded (for the sequence guard and the change data feed), and the rest copied into the
	// file's new version as Parquet values (parquetio.FileWriter.Copy).
	own := map[int][]*ownFile{}
	takeOwn := func(a *delta.Add, b int) error {
		of, rows, err := c.readOwn(ctx, a, byBucket[b])
		if err != nil {
			return fmt.Errorf("table %s: reading %s to rewrite it: %w", w.cfg.Name, a.Path, err)
		}
		if len(rows) == 0 {
			return nil // its key range covers the batch's keys, but it holds none: it stays
		}
		for _, r := range rows {
			rowsOf(b)[r[layout.ColKey].(string)] = layout.Row(r)
		}
		own[b] = append(own[b], of)
		actions = append(actions, delta.RemoveOf(a, now, true))
		res.Rewritten++
		return nil
	}
	paths := slices.Sorted(maps.Keys(w.snap.Files))
	for _, p := range paths { // (1) other writers' files
		if a := w.snap.Files[p]; w.fileBucket(a) < 0 && mayHold(a, allKeys) {
			if err := take(a); err != nil {
				return nil, written, err
			}
		}
	}
	for _, p := range paths { // (2) the touched buckets' own files
		a := w.snap.Files[p]
		if b := w.fileBucket(a); b >= 0 && len(byBucket[b]) > 0 && mayHold(a, byBucket[b]) {
			if err := takeOwn(a, b); err != nil {
				return nil, written, err
			}
		}
	}
	for _, b := range slices.Sorted(maps.Keys(byBucket)) {
		cur := rowsOf(b)
		for _, k := range byBucket[b] {
			r := newest[k]
			old, ok := cur[k]
			if ok && !layout.Newer(r, old) {
				res.Stale++
				continue
			}
			if r[layout.ColOp] == "d" {
				if ok {
					cdc.add(ChangeDelete, old)
				}
				delete(cur, k)
			} else {
				cdc.upsert(old, r)
				cur[k] = r
			}
			res.Rows++
		}
	}
	buckets := slices.Collect(maps.Keys(current))
	for b := range own {
		if current[b] == nil {
			buckets = append(buckets, b)
		}
	}
	slices.Sort(buckets)
	for _, b := range buckets {
		cur := current[b]
		all := slices.Sorted(maps.Keys(cur))
		tags := map[string]string{tagBucket: strconv.Itoa(b)}
		if len(own[b]) > 0 {
			// Each own file becomes its rows minus the batch's keys; the first also takes the
			// bucket's rows held as maps (the batch's and other writers').
			for i, of := range own[b] {
				var add []layout.Row
				if i == 0 {
					for _, k := range all {
						add = append(add, cur[k])
					}
				}
				a, name, err := w.rewriteFile(ctx, of, add, tags, res)
				if name != "" {
					written = append(written, name)
				}
				if err != nil {
					return nil, written, err
				}
				if a.Add != nil {
					actions = append(actions, a)
				}
			}
			continue
		}
		for start := 0; start < len(all); start += w.cfg.TargetFileRows {
			chunk := make([]layout.Row, 0, min(w.cfg.TargetFileRows, len(all)-start))
			for _, k := range all[start:min(start+w.cfg.TargetFileRows, len(all))] {
				chunk = append(chunk, cur[k])
			}
			a, name, err := w.writeFile(ctx, chunk, map[string]string{}, "", map[string]string{tagBucket: strconv.Itoa(b)}, res)
			if name != "" {
				written = append(written, name)
			}
			if err != nil {
				return nil, written, err
			}
			actions = append(actions, a)
		}
	}
	return actions, written, nil
}

// ownFile is a bucket file of the sink being rewritten: its bytes, and the rows to leave out.
type ownFile struct {
	add  *delta.Add
	data []byte
	drop *roaring.Bitmap // rows its deletion vector deletes and rows of the batch's keys
}

// readOwn reads a bucket file to rewrite: its _key column, and whole only the rows of keys
// (sorted) that it holds and its deletion vector does not delete.
func (c cowStrategy) readOwn(ctx context.Context, a *delta.Add, keys []string) (*ownFile, []parquetio.Row, error) {
	data, err := c.w.table.Store.Read(ctx, a.Path)
	if err != nil {
		return nil, nil, err
	}
	drop, err := delta.LoadDV(ctx, c.w.table.Store, a.DeletionVector)
	if err != nil {
		return nil, nil, err
	}
	f, err := parquetio.Open(data)
	if err != nil {
		return nil, nil, err
	}
	var pos []int
	err = f.Scan(layout.ColKey, func(row int, v parquet.Value) error {
		if drop.Contains(uint32(row)) {
			return nil
		}
		if i := sort.SearchStrings(keys, string(v.ByteArray())); i < len(keys) && keys[i] == string(v.ByteArray()) {
			pos = append(pos, row)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	rows, err := parquetio.ReadDataAt(data, pos)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range pos {
		drop.Add(uint32(p))
	}
	return &ownFile{add: a, data: data, drop: drop}, rows, nil
}

// rewriteFile writes a new version of an own file: its rows but the dropped ones, copied as
// Parquet values, then add. It returns no action when nothing is left.
func (w *Writer) rewriteFile(ctx context.Context, of *ownFile, add []layout.Row, tags map[string]string, res *Result) (delta.Action, string, error) {
	fw, err := parquetio.NewFileWriter(w.lay.Schema(), w.lay.PartitionColumns(), parquetio.Options{}, 0)
	if err != nil {
		return delta.Action{}, "", fmt.Errorf("table %s: %w", w.cfg.Name, err)
	}
	if _, err := fw.Copy(of.data, func(pos int) bool { return !of.drop.Contains(uint32(pos)) }); err != nil {
		return delta.Action{}, "", fmt.Errorf("table %s: copying %s: %w", w.cfg.Name, of.add.Path, err)
	}
	for _, r := range add {
		if err := fw.Add(parquetio.Row(r)); err != nil {
			return delta.Action{}, "", fmt.Errorf("table %s: %w", w.cfg.Name, err)
		}
	}
	if fw.Rows() == 0 {
		return delta.Action{}, "", nil
	}
	data, stats, err := fw.Finish()
	if err != nil {
		return delta.Action{}, "", fmt.Errorf("table %s: %w", w.cfg.Name, err)
	}
	return w.storeFile(ctx, data, stats, map[string]string{}, "", tags, res)
}

// check refuses to move a copy-on-write commit past a concurrent commit that may have added one of its
// keys: Delta's rule for a transaction that read data (here the files its keys may be in) against
// a concurrent commit adding data its read would have matched. A file of this sink in a bucket
// the batch rewrites, or a file of another writer whose key range covers one of the batch's
// keys, may hold such a key; the commit is then rebuilt from the new snapshot. A concurrent
// removal of a file this commit also removes is refused by delta.Table.Commit itself.
func (c cowStrategy) check(mine []delta.Action, keys []string) delta.Check {
	w := c.w
	buckets := map[int]bool{}
	for _, k := range keys {
		buckets[Bucket(k, w.cfg.Buckets)] = true
	}
	for _, a := range mine {
		if a.Add != nil {
			buckets[w.fileBucket(a.Add)] = true
		}
	}
	return func(c delta.Commit) error {
		for _, a := range c.Actions {
			if a.Add == nil || !a.Add.DataChange {
				continue // compaction (dataChange=false) moves rows it removed from files: a removal conflicts
			}
			switch b := w.fileBucket(a.Add); {
			case b >= 0 && buckets[b]:
				return fmt.Errorf("version %d wrote bucket %d too: %w", c.Version, b, delta.ErrConflict)
			case b < 0 && mayHold(a.Add, keys):
				return fmt.Errorf("version %d (another writer) added %s, which may hold keys of this batch: %w", c.Version, a.Add.Path, delta.ErrConflict)
			}
		}
		return nil
	}
}
