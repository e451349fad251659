package parquetio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// encoder appends one row's values, column by column.
type encoder struct {
	cols [][]parquet.Value
}

// nulls writes a null at (rep, def) in every leaf under p.
func (e *encoder) nulls(p *plan, rep, def int) {
	for c := p.first; c < p.last; c++ {
		e.cols[c] = append(e.cols[c], parquet.Value{}.Level(rep, def, c))
	}
}

// write encodes v under node p; def is the definition level of p's parent, rep the repetition
// level of the first value written, depth the number of repeated ancestors.
func (e *encoder) write(p *plan, v any, rep, def, depth int) error {
	d := def
	if p.optional {
		if v == nil {
			e.nulls(p, rep, def)
			return nil
		}
		d++
	} else if v == nil {
		return fmt.Errorf("column %s is required", p.name)
	}
	switch p.kind {
	case kStruct:
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("column %s: %T is not a struct", p.name, v)
		}
		for _, c := range p.children {
			if err := e.write(c, m[c.name], rep, d, depth); err != nil {
				return err
			}
		}
		for k := range m {
			if !p.has(k) {
				return fmt.Errorf("column %s has no field %s", p.name, k)
			}
		}
	case kList:
		l, ok := v.([]any)
		if !ok {
			return fmt.Errorf("column %s: %T is not an array", p.name, v)
		}
		if len(l) == 0 {
			e.nulls(p, rep, d)
		}
		for i, x := range l {
			r := rep
			if i > 0 {
				r = depth + 1
			}
			if err := e.write(p.children[0], x, r, d+1, depth+1); err != nil {
				return err
			}
		}
	case kMap:
		m, ok := v.(map[string]string)
		if !ok {
			return fmt.Errorf("column %s: %T is not a map of strings", p.name, v)
		}
		if len(m) == 0 {
			e.nulls(p, rep, d)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			r := rep
			if i > 0 {
				r = depth + 1
			}
			if err := e.write(p.children[0], k, r, d+1, depth+1); err != nil {
				return err
			}
			if err := e.write(p.children[1], m[k], r, d+1, depth+1); err != nil {
				return err
			}
		}
	default:
		pv, err := leafValue(p, v)
		if err != nil {
			return err
		}
		e.cols[p.col] = append(e.cols[p.col], pv.Level(rep, d, p.col))
	}
	return nil
}

func (p *plan) has(name string) bool {
	for _, c := range p.children {
		if c.name == name {
			return true
		}
	}
	return false
}

func leafValue(p *plan, v any) (parquet.Value, error) {
	bad := func() (parquet.Value, error) {
		return parquet.Value{}, fmt.Errorf("column %s: %T does not fit the column's type", p.name, v)
	}
	switch p.conv {
	case cString:
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		return parquet.ByteArrayValue([]byte(s)), nil
	case cBytes:
		b, ok := v.([]byte)
		if !ok {
			return bad()
		}
		return parquet.ByteArrayValue(b), nil
	case cInt64:
		i, ok := v.(int64)
		if !ok {
			return bad()
		}
		return parquet.Int64Value(i), nil
	case cInt32:
		i, ok := v.(int32)
		if !ok {
			return bad()
		}
		return parquet.Int32Value(i), nil
	case cBool:
		b, ok := v.(bool)
		if !ok {
			return bad()
		}
		return parquet.BooleanValue(b), nil
	case cDate:
		t, ok := v.(time.Time)
		if !ok {
			return bad()
		}
		return parquet.Int32Value(int32(t.UTC().Unix() / 86400)), nil
	case cTimestamp:
		t, ok := v.(time.Time)
		if !ok {
			return bad()
		}
		return parquet.Int64Value(t.UnixMicro()), nil
	case cFloat64:
		f, ok := v.(float64)
		if !ok {
			return bad()
		}
		return parquet.DoubleValue(f), nil
	case cDecimal:
		d, ok := v.(*big.Int)
		if !ok {
			return bad()
		}
		b, err := decimalBytes(d)
		if err != nil {
			return parquet.Value{}, fmt.Errorf("column %s: %w", p.name, err)
		}
		return parquet.FixedLenByteArrayValue(b), nil
	}
	return bad()
}

// decimalBytes renders an unscaled decimal as 16 bytes, big-endian two's complement.
func decimalBytes(d *big.Int) ([]byte, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	if d.Cmp(limit) >= 0 || d.Cmp(new(big.Int).Neg(limit)) < 0 {
		return nil, fmt.Errorf("decimal %s does not fit 16 bytes", d)
	}
	out := make([]byte, 16)
	if d.Sign() >= 0 {
		d.FillBytes(out)
		return out, nil
	}
	// Two's complement of a negative number: 2^128 + d.
	t := new(big.Int).Lsh(big.NewInt(1), 128)
	t.Add(t, d)
	t.FillBytes(out)
	return out, nil
}

// Options configure a written file.
type Options struct {
	// RowGroupRows bounds a row group. Default: 128k rows.
	RowGroupRows int64
	// Metadata is written in the file's key-value metadata.
	Metadata map[string]string
}

// Write encodes rows (already in the order wanted in the file) into a zstd-compressed Parquet
// file of schema s without the excluded (partition) columns, and returns it with the statistics
// Delta keeps in the add action.
func Write(s *deltatype.StructType, exclude []string, rows []Row, o Options) ([]byte, *Stats, error) {
	w, err := NewFileWriter(s, exclude, o, len(rows))
	if err != nil {
		return nil, nil, err
	}
	for i, r := range rows {
		if err := w.Add(r); err != nil {
			return nil, nil, fmt.Errorf("row %d: %w", i, err)
		}
	}
	return w.Finish()
}

// FileWriter builds one data file from rows given as maps (Add) or copied from another file of
// the table (Copy).
type FileWriter struct {
	schema  *parquet.Schema
	plan    *plan
	exclude []string
	buf     bytes.Buffer
	w       interface {
		WriteRows([]parquet.Row) (int, error)
		Close() error
	}
	stats *Stats
	enc   *encoder
	batch []parquet.Row
	vals  []parquet.Value // the batch's rows are cut from it, reused once WriteRows copied them
}

// NewFileWriter starts a data file of schema s without the excluded (partition) columns; rows is
// a hint of how many rows it will hold (0: unknown).
func NewFileWriter(s *deltatype.StructType, exclude []string, o Options, rows int) (*FileWriter, error) {
	schema, err := Schema(s, exclude...)
	if err != nil {
		return nil, err
	}
	p, ncols, err := newPlan(schema)
	if err != nil {
		return nil, err
	}
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = 128 * 1024
	}
	fw := &FileWriter{schema: schema, plan: p, exclude: exclude, stats: newStats(s, exclude),
		enc: &encoder{cols: make([][]parquet.Value, ncols)}, batch: make([]parquet.Row, 0, 256)}
	opts := []parquet.WriterOption{schema, parquet.Compression(&parquet.Zstd), parquet.MaxRowsPerRowGroup(o.RowGroupRows),
		// Data pages v1, which Delta's protocol recommends and every reader reads; parquet-go's
		// default, v2, pairs byte arrays with DELTA_LENGTH_BYTE_ARRAY, which Spark 3.5's
		// vectorized reader returned as empty strings. Binary is PLAIN, strings dictionary-encoded
		// (see nodeOf).
		parquet.DataPageVersion(1),
		parquet.DefaultEncodingFor(parquet.ByteArray, &parquet.Plain),
		parquet.CreatedBy("ddb2delta", "sink", "")}
	for _, k := range slices.Sorted(maps.Keys(o.Metadata)) {
		opts = append(opts, parquet.KeyValueMetadata(k, o.Metadata[k]))
	}
	// parquet-go orders fixed-length decimals as unsigned bytes, so its bounds of a column holding
	// negative decimals would be wrong: leave them out rather than mislead a reader's pruning.
	for _, path := range decimalPaths(s, nil) {
		opts = append(opts, parquet.SkipPageBounds(path...))
	}
	if rows > 0 && rows < 4096 {
		// parquet-go buffers a page of 256 KiB per column: for the small files of frequent
		// batches (and checkpoints), most of that memory is allocated, cleared and never used.
		opts = append(opts, parquet.PageBufferSize(16*1024))
	}
	fw.w = parquet.NewWriter(&fw.buf, opts...)
	return fw, nil
}

// Rows is the number of rows added so far.
func (fw *FileWriter) Rows() int64 { return fw.stats.NumRecords }

// Add encodes a row.
func (fw *FileWriter) Add(r Row) error {
	for c := range fw.enc.cols {
		fw.enc.cols[c] = fw.enc.cols[c][:0]
	}
	if err := fw.enc.write(fw.plan, map[string]any(withoutExcluded(r, fw.exclude)), 0, 0, 0); err != nil {
		return err
	}
	start := len(fw.vals)
	for _, vs := range fw.enc.cols {
		fw.vals = append(fw.vals, vs...)
	}
	fw.stats.add(r)
	return fw.push(parquet.Row(fw.vals[start:len(fw.vals):len(fw.vals)]))
}

func (fw *FileWriter) push(r parquet.Row) error {
	fw.batch = append(fw.batch, r)
	if len(fw.batch) == cap(fw.batch) {
		return fw.flush()
	}
	return nil
}

func (fw *FileWriter) flush() error {
	if _, err := fw.w.WriteRows(fw.batch); err != nil {
		return fmt.Errorf("writing parquet rows: %w", err)
	}
	fw.batch, fw.vals = fw.batch[:0], fw.vals[:0]
	return nil
}

// Copy adds the rows of another data file of the table (data) for which keep returns true (keep
// gets the row's position in that file), in their order. When that file has the schema this one
// is written with (the sink wrote it since the table's columns last changed), its rows are copied
// as Parquet values, column by column, without decoding them into maps: only the statistics
// columns are decoded. Otherwise (an older schema, another writer's file) each kept row is
// decoded and encoded again, as ReadData and Add do. It returns the number of rows added.
func (fw *FileWriter) Copy(data []byte, keep func(pos int) bool) (int, error) {
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return 0, fmt.Errorf("opening parquet file: %w", err)
	}
	raw := parquet.EqualNodes(f.Schema(), fw.schema)
	p := fw.plan
	if !raw {
		if p, _, err = newPlan(f.Schema()); err != nil {
			return 0, err
		}
	}
	var statCols []*plan
	for _, c := range p.children {
		if _, ok := fw.stats.types[c.name]; ok {
			statCols = append(statCols, c)
		}
	}
	r := parquet.NewReader(f)
	defer r.Close()
	rows := make([]parquet.Row, 256)
	pos, added := 0, 0
	for {
		n, rerr := r.ReadRows(rows)
		for _, row := range rows[:n] {
			if keep(pos) {
				if err := fw.copyRow(p, statCols, row, raw); err != nil {
					return added, fmt.Errorf("row %d: %w", pos, err)
				}
				added++
			}
			pos++
		}
		// The copied values point into the reader's pages, which the next read may reuse.
		if err := fw.flush(); err != nil {
			return added, err
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return added, fmt.Errorf("reading parquet rows: %w", rerr)
		}
		if rerr != nil || n == 0 {
			return added, nil
		}
	}
}

func (fw *FileWriter) copyRow(p *plan, statCols []*plan, row parquet.Row, raw bool) error {
	if !raw {
		m, err := decodeRow(p, row, nil, true)
		if err != nil {
			return err
		}
		return fw.Add(m)
	}
	// The statistics columns are top-level primitives: decode just those.
	d := decoder{cols: splitColumns(row, p.last), strict: true}
	sr := make(Row, len(statCols))
	for _, c := range statCols {
		v, err := d.read(c, 0, 0)
		if err != nil {
			return err
		}
		if v != nil {
			sr[c.name] = v
		}
	}
	fw.stats.add(sr)
	start := len(fw.vals)
	fw.vals = append(fw.vals, row...)
	return fw.push(parquet.Row(fw.vals[start:len(fw.vals):len(fw.vals)]))
}

// Finish closes the file and returns its bytes and statistics.
func (fw *FileWriter) Finish() ([]byte, *Stats, error) {
	if err := fw.flush(); err != nil {
		return nil, nil, err
	}
	if err := fw.w.Close(); err != nil {
		return nil, nil, fmt.Errorf("closing parquet file: %w", err)
	}
	data, err := dropColumnIndexes(fw.buf.Bytes())
	if err != nil {
		return nil, nil, err
	}
	return data, fw.stats, nil
}

// decimalPaths lists the Parquet paths of the decimal columns under s.
func decimalPaths(s *deltatype.StructType, prefix []string) [][]string {
	var out [][]string
	var walk func(t deltatype.DataType, path []string)
	walk = func(t deltatype.DataType, path []string) {
		switch {
		case t.Struct != nil:
			out = append(out, decimalPaths(t.Struct, path)...)
		case t.Array != nil:
			walk(t.Array.Element, append(slices.Clone(path), "list", "element"))
		case strings.HasPrefix(t.Primitive, "decimal"):
			out = append(out, path)
		}
	}
	for _, f := range s.Fields {
		walk(f.Type, append(slices.Clone(prefix), f.Name))
	}
	return out
}

func withoutExcluded(r Row, exclude []string) Row {
	if len(exclude) == 0 {
		return r
	}
	out := make(Row, len(r))
	for k, v := range r {
		if !slices.Contains(exclude, k) {
			out[k] = v
		}
	}
	return out
}
