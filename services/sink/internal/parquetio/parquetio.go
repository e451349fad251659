// Package parquetio writes and reads the sink's Parquet data files with parquet-go, for a schema
// known only at run time (a Delta table schema that grows as new attributes appear).
//
// Rows are encoded to Parquet's repetition/definition levels directly (the Dremel encoding),
// following a plan built from the Parquet schema: the same plan reads files back, including
// files written under an older, narrower schema. Every column is optional. Lists use the standard
// three-level layout (LIST → repeated group list → optional element) that Spark, Arrow and
// delta-rs read; timestamps are INT64 microseconds adjusted to UTC; decimal(38,18) is a 16-byte
// fixed-length two's-complement big-endian integer; dates are INT32 days.
package parquetio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// Row is one row: column name → value, nil or absent for null. Values are string, int64, int32,
// bool, []byte, time.Time (timestamp and date), *big.Int (decimal(38,18), unscaled), []any
// (array) and map[string]any (struct).
type Row = map[string]any

// Schema returns the Parquet schema of a Delta struct, leaving out the excluded columns
// (partition columns, which Delta keeps in the log, not in data files).
func Schema(s *deltatype.StructType, exclude ...string) (*parquet.Schema, error) {
	g := parquet.Group{}
	for _, f := range s.Fields {
		if contains(exclude, f.Name) {
			continue
		}
		n, err := nodeOf(f.Type)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
		g[f.Name] = parquet.Optional(n)
	}
	return parquet.NewSchema("ddb2delta", g), nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func nodeOf(t deltatype.DataType) (parquet.Node, error) {
	switch {
	case t.Struct != nil:
		g := parquet.Group{}
		for _, f := range t.Struct.Fields {
			n, err := nodeOf(f.Type)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", f.Name, err)
			}
			g[f.Name] = parquet.Optional(n)
		}
		return g, nil
	case t.Array != nil:
		e, err := nodeOf(t.Array.Element)
		if err != nil {
			return nil, err
		}
		return parquet.List(parquet.Optional(e)), nil
	case t.Map != nil:
		k, err := nodeOf(t.Map.Key)
		if err != nil {
			return nil, err
		}
		v, err := nodeOf(t.Map.Value)
		if err != nil {
			return nil, err
		}
		return parquet.Map(k, parquet.Optional(v)), nil
	}
	switch t.Primitive {
	case "string":
		return parquet.String(), nil
	case "long":
		return parquet.Int(64), nil
	case "integer":
		return parquet.Int(32), nil
	case "boolean":
		return parquet.Leaf(parquet.BooleanType), nil
	case "binary":
		return parquet.Leaf(parquet.ByteArrayType), nil
	case "date":
		return parquet.Date(), nil
	case "timestamp":
		return parquet.Timestamp(parquet.Microsecond), nil
	case "decimal(38,18)":
		return parquet.Decimal(18, 38, parquet.FixedLenByteArrayType(16)), nil
	}
	return nil, fmt.Errorf("type %s is not written by the sink", t)
}

// kind of a plan node.
type kind int

const (
	kLeaf kind = iota
	kStruct
	kList
	kMap
)

// leaf conversions.
type conv int

const (
	cString conv = iota
	cBytes
	cInt64
	cInt32
	cBool
	cDate
	cTimestamp
	cDecimal
	cSkip // a type the sink does not use (in a file another writer made): read as null
)

// plan is a node of the schema with its column index (leaves) and children in column order.
type plan struct {
	name     string
	optional bool
	kind     kind
	conv     conv
	col      int     // leaf column index
	children []*plan // struct fields, or the list's element
	first    int     // first leaf column under this node
	last     int     // one past the last leaf column under this node
}

// newPlan builds the plan of a schema's root; n is the number of leaf columns.
func newPlan(root parquet.Node) (*plan, int, error) {
	p := &plan{kind: kStruct}
	col := 0
	for _, f := range root.Fields() {
		c, err := planOf(f, &col)
		if err != nil {
			return nil, 0, err
		}
		p.children = append(p.children, c)
	}
	p.last = col
	return p, col, nil
}

func planOf(f parquet.Field, col *int) (*plan, error) {
	p := &plan{name: f.Name(), first: *col, optional: f.Optional()}
	if f.Repeated() {
		return nil, fmt.Errorf("column %s is repeated outside a list or map", f.Name())
	}
	lv := logical(f.Type())
	_, isList := lv.(*format.ListType)
	_, isMap := lv.(*format.MapType)
	switch {
	case isList || isMap:
		// LIST → repeated group "list" → "element"; MAP → repeated group "key_value" → "key", "value".
		rep := f.Fields()
		if len(rep) != 1 || !rep[0].Repeated() {
			return nil, fmt.Errorf("column %s is not a three-level list or map", f.Name())
		}
		p.kind = kList
		if isMap {
			p.kind = kMap
		}
		for _, c := range rep[0].Fields() {
			cp, err := planOf(c, col)
			if err != nil {
				return nil, err
			}
			p.children = append(p.children, cp)
		}
		if (p.kind == kList && len(p.children) != 1) || (p.kind == kMap && (len(p.children) != 2 || p.children[0].name != "key")) {
			return nil, fmt.Errorf("column %s is not a standard list or map", f.Name())
		}
	case !f.Leaf():
		p.kind = kStruct
		for _, c := range f.Fields() {
			cp, err := planOf(c, col)
			if err != nil {
				return nil, err
			}
			p.children = append(p.children, cp)
		}
	default:
		p.kind, p.col = kLeaf, *col
		*col++
		var err error
		if p.conv, err = convOf(f.Type()); err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name(), err)
		}
	}
	p.last = *col
	return p, nil
}

// logical returns a type's logical type annotation (nil for none).
func logical(t parquet.Type) format.LogicalTypeValue {
	if lt := t.LogicalType(); lt != nil {
		return lt.Value
	}
	return nil
}

func convOf(t parquet.Type) (conv, error) {
	lv := logical(t)
	switch t.Kind() {
	case parquet.Boolean:
		return cBool, nil
	case parquet.Int32:
		if _, ok := lv.(*format.DateType); ok {
			return cDate, nil
		}
		return cInt32, nil
	case parquet.Int64:
		if ts, ok := lv.(*format.TimestampType); ok {
			if _, ok := ts.Unit.Value.(*format.MicroSeconds); !ok {
				return cSkip, nil
			}
			return cTimestamp, nil
		}
		return cInt64, nil
	case parquet.ByteArray:
		if _, ok := lv.(*format.StringType); ok {
			return cString, nil
		}
		return cBytes, nil
	case parquet.FixedLenByteArray:
		if d, ok := lv.(*format.DecimalType); ok && d.Scale == 18 && t.Length() == 16 {
			return cDecimal, nil
		}
	}
	return cSkip, nil
}

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

func decimalFromBytes(b []byte) *big.Int {
	d := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		d.Sub(d, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return d
}

// Options configure a written file.
type Options struct {
	// RowGroupRows bounds a row group. Default: 128k rows.
	RowGroupRows int64
}

// Write encodes rows (already in the order wanted in the file) into a zstd-compressed Parquet
// file of schema s without the excluded (partition) columns, and returns it with the statistics
// Delta keeps in the add action.
func Write(s *deltatype.StructType, exclude []string, rows []Row, o Options) ([]byte, *Stats, error) {
	schema, err := Schema(s, exclude...)
	if err != nil {
		return nil, nil, err
	}
	p, ncols, err := newPlan(schema)
	if err != nil {
		return nil, nil, err
	}
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = 128 * 1024
	}
	var buf bytes.Buffer
	opts := []parquet.WriterOption{schema, parquet.Compression(&parquet.Zstd), parquet.MaxRowsPerRowGroup(o.RowGroupRows),
		// PLAIN strings and binary: Spark's vectorized reader (3.5) reads parquet-go's default,
		// DELTA_LENGTH_BYTE_ARRAY, as empty strings.
		parquet.DefaultEncodingFor(parquet.ByteArray, &parquet.Plain),
		parquet.CreatedBy("ddb2delta", "sink", "")}
	// parquet-go orders fixed-length decimals as unsigned bytes, so its bounds of a column holding
	// negative decimals would be wrong: leave them out rather than mislead a reader's pruning.
	for _, path := range decimalPaths(s, nil) {
		opts = append(opts, parquet.SkipPageBounds(path...))
	}
	w := parquet.NewWriter(&buf, opts...)
	stats := newStats(s, exclude)
	enc := &encoder{cols: make([][]parquet.Value, ncols)}
	batch := make([]parquet.Row, 0, 256)
	flush := func() error {
		if _, err := w.WriteRows(batch); err != nil {
			return fmt.Errorf("writing parquet rows: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	for i, r := range rows {
		for c := range enc.cols {
			enc.cols[c] = enc.cols[c][:0]
		}
		if err := enc.write(p, map[string]any(withoutExcluded(r, exclude)), 0, 0, 0); err != nil {
			return nil, nil, fmt.Errorf("row %d: %w", i, err)
		}
		var row parquet.Row
		for _, vs := range enc.cols {
			row = append(row, vs...)
		}
		batch = append(batch, row)
		stats.add(r)
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, nil, err
	}
	if err := w.Close(); err != nil {
		return nil, nil, fmt.Errorf("closing parquet file: %w", err)
	}
	return buf.Bytes(), stats, nil
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
		if !contains(exclude, k) {
			out[k] = v
		}
	}
	return out
}

// Read decodes every row of a Parquet file written by Write (under this or an older schema).
// Columns lists the top-level columns wanted (nil: all).
func Read(data []byte, columns []string) ([]Row, error) {
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("opening parquet file: %w", err)
	}
	p, _, err := newPlan(f.Schema())
	if err != nil {
		return nil, err
	}
	r := parquet.NewReader(f)
	defer r.Close()
	out := make([]Row, 0, f.NumRows())
	rows := make([]parquet.Row, 256)
	for {
		n, err := r.ReadRows(rows)
		for _, row := range rows[:n] {
			d := decoder{cols: splitColumns(row, p.last)}
			m := map[string]any{}
			for _, c := range p.children {
				if columns != nil && !contains(columns, c.name) {
					continue
				}
				v, err := d.read(c, 0, 0)
				if err != nil {
					return nil, err
				}
				if v != nil {
					m[c.name] = v
				}
			}
			out = append(out, m)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("reading parquet rows: %w", err)
		}
		if n == 0 {
			return out, nil
		}
	}
}

func splitColumns(row parquet.Row, n int) [][]parquet.Value {
	cols := make([][]parquet.Value, n)
	for _, v := range row {
		c := v.Column()
		cols[c] = append(cols[c], v)
	}
	return cols
}

type decoder struct {
	cols [][]parquet.Value
}

func (d *decoder) peek(p *plan) parquet.Value { return d.cols[p.first][0] }

func (d *decoder) skip(p *plan) {
	for c := p.first; c < p.last; c++ {
		d.cols[c] = d.cols[c][1:]
	}
}

// read decodes the value of node p whose parent is defined at level def.
func (d *decoder) read(p *plan, def, depth int) (any, error) {
	if p.first == p.last {
		return nil, nil
	}
	if len(d.cols[p.first]) == 0 {
		return nil, fmt.Errorf("column %s: values missing", p.name)
	}
	lvl := def
	if p.optional {
		if d.peek(p).DefinitionLevel() <= def {
			d.skip(p)
			return nil, nil
		}
		lvl++
	}
	switch p.kind {
	case kStruct:
		m := map[string]any{}
		for _, c := range p.children {
			v, err := d.read(c, lvl, depth)
			if err != nil {
				return nil, err
			}
			if v != nil {
				m[c.name] = v
			}
		}
		return m, nil
	case kList, kMap:
		empty := d.peek(p).DefinitionLevel() == lvl
		var l []any
		m := map[string]string{}
		if empty {
			d.skip(p)
		}
		for !empty {
			if p.kind == kList {
				v, err := d.read(p.children[0], lvl+1, depth+1)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			} else {
				k, err := d.read(p.children[0], lvl+1, depth+1)
				if err != nil {
					return nil, err
				}
				v, err := d.read(p.children[1], lvl+1, depth+1)
				if err != nil {
					return nil, err
				}
				ks, _ := k.(string)
				vs, _ := v.(string)
				m[ks] = vs
			}
			if len(d.cols[p.first]) == 0 || d.peek(p).RepetitionLevel() != depth+1 {
				break
			}
		}
		if p.kind == kMap {
			return m, nil
		}
		if l == nil {
			l = []any{}
		}
		return l, nil
	}
	v := d.cols[p.col][0]
	d.cols[p.col] = d.cols[p.col][1:]
	switch p.conv {
	case cString:
		return string(v.ByteArray()), nil
	case cBytes:
		return append([]byte(nil), v.ByteArray()...), nil
	case cInt64:
		return v.Int64(), nil
	case cInt32:
		return v.Int32(), nil
	case cBool:
		return v.Boolean(), nil
	case cDate:
		return time.Unix(int64(v.Int32())*86400, 0).UTC(), nil
	case cTimestamp:
		return time.UnixMicro(v.Int64()).UTC(), nil
	case cDecimal:
		return decimalFromBytes(v.ByteArray()), nil
	case cSkip:
		return nil, nil
	}
	return nil, fmt.Errorf("column %s: unknown conversion", p.name)
}

// Stats are a data file's statistics, as Delta's add action holds them (JSON): the row count
// and, per top-level primitive column, the least and greatest value and the null count.
type Stats struct {
	NumRecords int64          `json:"numRecords"`
	MinValues  map[string]any `json:"minValues"`
	MaxValues  map[string]any `json:"maxValues"`
	NullCount  map[string]any `json:"nullCount"`

	types map[string]string
	long  map[string]bool // columns with a string too long to bound: no min/max
}

// maxStatString is the longest string kept in statistics; columns with longer values get none.
const maxStatString = 128

func newStats(s *deltatype.StructType, exclude []string) *Stats {
	st := &Stats{MinValues: map[string]any{}, MaxValues: map[string]any{}, NullCount: map[string]any{},
		types: map[string]string{}, long: map[string]bool{}}
	for _, f := range s.Fields {
		if contains(exclude, f.Name) || f.Type.Primitive == "" || f.Type.Primitive == "binary" || f.Type.Primitive == "boolean" {
			continue
		}
		st.types[f.Name] = f.Type.Primitive
		st.NullCount[f.Name] = int64(0)
	}
	return st
}

func (s *Stats) add(r Row) {
	s.NumRecords++
	for c, typ := range s.types {
		v := r[c]
		if v == nil {
			s.NullCount[c] = s.NullCount[c].(int64) + 1
			continue
		}
		if str, ok := v.(string); ok && len(str) > maxStatString {
			s.long[c] = true
		}
		if s.MinValues[c] == nil || less(typ, v, s.MinValues[c]) {
			s.MinValues[c] = v
		}
		if s.MaxValues[c] == nil || less(typ, s.MaxValues[c], v) {
			s.MaxValues[c] = v
		}
	}
}

func less(typ string, a, b any) bool {
	switch x := a.(type) {
	case string:
		return x < b.(string)
	case int64:
		return x < b.(int64)
	case int32:
		return x < b.(int32)
	case time.Time:
		return x.Before(b.(time.Time))
	case *big.Int:
		return x.Cmp(b.(*big.Int)) < 0
	}
	return false
}

// JSON renders the statistics for an add action. Timestamps are bounded to the millisecond (the
// maximum rounded up) and decimals written as numbers, as Delta readers expect.
func (s *Stats) JSON() string {
	out := struct {
		NumRecords int64          `json:"numRecords"`
		MinValues  map[string]any `json:"minValues"`
		MaxValues  map[string]any `json:"maxValues"`
		NullCount  map[string]any `json:"nullCount"`
	}{s.NumRecords, map[string]any{}, map[string]any{}, s.NullCount}
	for c := range s.MinValues {
		if s.long[c] {
			continue
		}
		out.MinValues[c] = statValue(s.types[c], s.MinValues[c], false)
		out.MaxValues[c] = statValue(s.types[c], s.MaxValues[c], true)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func statValue(typ string, v any, upper bool) any {
	switch x := v.(type) {
	case time.Time:
		if typ == "date" {
			return x.UTC().Format("2006-01-02")
		}
		t := x.UTC().Truncate(time.Millisecond)
		if upper && t.Before(x) {
			t = t.Add(time.Millisecond)
		}
		return t.Format("2006-01-02T15:04:05.000Z")
	case *big.Int:
		return json.Number(decimalText(x, 18))
	}
	return v
}

// decimalText renders unscaled × 10^-scale in plain decimal notation.
func decimalText(d *big.Int, scale int) string {
	neg := d.Sign() < 0
	digits := new(big.Int).Abs(d).String()
	for len(digits) <= scale {
		digits = "0" + digits
	}
	s := digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if neg {
		s = "-" + s
	}
	return s
}
