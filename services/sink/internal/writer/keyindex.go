package writer

import (
	"context"
	"fmt"
	"hash/maphash"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/parquet-go/parquet-go"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// keyIndex knows, for every key of a mirror, which live file and row hold it and that row's
// sequence number: a batch finds the rows it replaces without reading files. It is built from the
// _key, _sequence_number and _snapshot columns of the table's files by the first batch, and
// kept current with every snapshot the writer moves to (its own commits register what they wrote;
// other writers' files are read when they appear).
//
// Keys are held as 128-bit hashes (two independent 64-bit hashes with random seeds): at 10^8 keys
// the chance of any collision is about 10^-23. A slot is 48 bytes, about twice that with the
// map's growth and load factor (BenchmarkMirrorScale: 1,540 MiB peak RSS at 10 million rows,
// the whole writer). Entries of files that are no longer live, and rows their deletion vector
// deletes, are recognised as absent when looked up; the index is rebuilt when most of its entries
// are such.
type keyIndex struct {
	seeds  [2]maphash.Seed
	slots  map[keyHash]slot
	files  []*indexedFile   // by id
	byPath map[string]int32 // live files by path
	dead   int              // entries of files no longer live (upper bound)
}

type keyHash [2]uint64

// slot is where a key's row is.
type slot struct {
	file int32
	row  uint32
	seq  packedSeq
	snap bool // the row came from a snapshot (a stream change of the same sequence number wins)
}

// packedSeq is a sequence number (SeqWidth = 40 decimal digits) packed two digits per byte: it
// compares as the text does.
type packedSeq [layout.SeqWidth / 2]byte

// indexedFile is a data file the index holds rows of.
type indexedFile struct {
	add  *delta.Add
	dv   *roaring.Bitmap // deleted rows (nil: none)
	rows int
	live bool
}

func newKeyIndex() *keyIndex {
	return &keyIndex{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, slots: map[keyHash]slot{}, byPath: map[string]int32{}}
}

func (x *keyIndex) hash(key []byte) keyHash {
	return keyHash{maphash.Bytes(x.seeds[0], key), maphash.Bytes(x.seeds[1], key)}
}

func packSeq(s []byte) (packedSeq, error) {
	var p packedSeq
	if len(s) != layout.SeqWidth {
		return p, fmt.Errorf("sequence number %q is not %d digits", s, layout.SeqWidth)
	}
	for i := 0; i < len(s); i += 2 {
		a, b := s[i]-'0', s[i+1]-'0'
		if a > 9 || b > 9 {
			return p, fmt.Errorf("sequence number %q is not decimal", s)
		}
		p[i/2] = a<<4 | b
	}
	return p, nil
}

// lookup returns where key's live row is.
func (x *keyIndex) lookup(key string) (slot, bool) {
	s, ok := x.slots[x.hash([]byte(key))]
	if !ok {
		return s, false
	}
	f := x.files[s.file]
	if !f.live || f.dv != nil && f.dv.Contains(s.row) {
		return s, false
	}
	return s, true
}

// newer reports whether row r's change is newer than the row at s (layout.Newer).
func newer(r layout.Row, s slot) (bool, error) {
	p, err := packSeq([]byte(r[layout.ColSequence].(string)))
	if err != nil {
		return false, err
	}
	if c := compareSeq(p, s.seq); c != 0 {
		return c > 0, nil
	}
	return !r[layout.ColSnapshot].(bool) && s.snap, nil
}

func compareSeq(a, b packedSeq) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// fileRow is the index entry of one row of a file being registered.
type fileRow struct {
	key  string
	seq  string
	snap bool
}

// register adds a file this writer wrote, with its rows in file order, and returns its id.
func (x *keyIndex) register(a *delta.Add, rows []fileRow) error {
	id := x.addFile(a, len(rows))
	for i, r := range rows {
		p, err := packSeq([]byte(r.seq))
		if err != nil {
			return fmt.Errorf("%s row %d: %w", a.Path, i, err)
		}
		x.put(x.hash([]byte(r.key)), slot{file: id, row: uint32(i), seq: p, snap: r.snap})
	}
	return nil
}

func (x *keyIndex) addFile(a *delta.Add, rows int) int32 {
	if old, ok := x.byPath[a.Path]; ok { // the same path again: its old entries are dead
		x.files[old].live = false
		x.dead += x.files[old].rows
	}
	id := int32(len(x.files))
	x.files = append(x.files, &indexedFile{add: a, rows: rows, live: true})
	x.byPath[a.Path] = id
	return id
}

func (x *keyIndex) put(h keyHash, s slot) {
	if old, ok := x.slots[h]; ok && x.files[old.file].live {
		x.dead++ // the key moved (compaction by another writer); its old row is not live
	}
	x.slots[h] = s
}

// setDV records a live file's new deletion vector.
func (x *keyIndex) setDV(a *delta.Add, dv *roaring.Bitmap) {
	if id, ok := x.byPath[a.Path]; ok {
		f := x.files[id]
		f.add, f.dv = a, dv
	}
}

// sync brings the index to snap: files no longer live are dropped, files new to it are read,
// files whose deletion vector changed get the new one. It returns the number of files read.
func (x *keyIndex) sync(ctx context.Context, store storage.Store, snap *delta.Snapshot) (int, error) {
	for p, id := range x.byPath {
		if _, ok := snap.Files[p]; !ok {
			x.files[id].live = false
			x.dead += x.files[id].rows
			delete(x.byPath, p)
		}
	}
	if x.dead > len(x.slots)/2 && x.dead > 100_000 {
		*x = *newKeyIndex() // mostly dead: rebuild
	}
	read := 0
	for p, a := range snap.Files {
		id, ok := x.byPath[p]
		if ok && x.files[id].add.DeletionVector.UniqueID() == a.DeletionVector.UniqueID() {
			continue
		}
		var dv *roaring.Bitmap
		if a.DeletionVector != nil {
			var err error
			if dv, err = delta.LoadDV(ctx, store, a.DeletionVector); err != nil {
				return read, fmt.Errorf("%s: %w", p, err)
			}
		}
		if ok {
			x.setDV(a, dv)
			continue
		}
		if err := x.index(ctx, store, a, dv); err != nil {
			return read, err
		}
		read++
	}
	return read, nil
}

// index reads a file's key columns into the index.
func (x *keyIndex) index(ctx context.Context, store storage.Store, a *delta.Add, dv *roaring.Bitmap) error {
	data, err := store.Read(ctx, a.Path)
	if err != nil {
		return fmt.Errorf("reading %s to index its keys: %w", a.Path, err)
	}
	f, err := parquetio.Open(data)
	if err != nil {
		return fmt.Errorf("%s: %w", a.Path, err)
	}
	n := int(f.NumRows())
	hashes := make([]keyHash, n)
	seqs := make([]packedSeq, n)
	snaps := make([]bool, n)
	err = f.Scan(layout.ColKey, func(row int, v parquet.Value) error {
		if v.IsNull() {
			return fmt.Errorf("row %d has no %s", row, layout.ColKey)
		}
		hashes[row] = x.hash(v.ByteArray())
		return nil
	})
	if err == nil {
		err = f.Scan(layout.ColSequence, func(row int, v parquet.Value) error {
			if v.IsNull() {
				return fmt.Errorf("row %d has no %s", row, layout.ColSequence)
			}
			var err error
			seqs[row], err = packSeq(v.ByteArray())
			return err
		})
	}
	if err == nil {
		err = f.Scan(layout.ColSnapshot, func(row int, v parquet.Value) error {
			snaps[row] = !v.IsNull() && v.Boolean()
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("indexing the keys of %s: %w", a.Path, err)
	}
	id := x.addFile(a, n)
	x.files[id].dv = dv
	for i := range n {
		if dv != nil && dv.Contains(uint32(i)) {
			continue
		}
		x.put(hashes[i], slot{file: id, row: uint32(i), seq: seqs[i], snap: snaps[i]})
	}
	return nil
}
