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
	"fmt"
	"slices"

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
		if slices.Contains(exclude, f.Name) {
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
		// Dictionary-encoded (falling back to PLAIN pages when a column chunk's dictionary
		// grows too large): ids, statuses and enum-like attributes repeat.
		return parquet.Encoded(parquet.String(), &parquet.RLEDictionary), nil
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
	case "double":
		return parquet.Leaf(parquet.DoubleType), nil
	}
	if p, s, ok := deltatype.DecimalParams(t); ok {
		// Every decimal as 16 bytes (precision 38 fits), whatever its precision: Parquet allows
		// a wider array than the precision needs, and Spark, Arrow and delta-rs read it.
		return parquet.Decimal(s, p, parquet.FixedLenByteArrayType(16)), nil
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
	cTimestampMillis // other writers' units and encodings of timestamps
	cTimestampNanos
	cInt96
	cDecimal      // fixed-length two's complement, any length
	cDecimalInt32 // as other writers store small decimals (Spark: precision up to 9)
	cDecimalInt64 // (Spark: precision up to 18)
	cFloat64
	cSkip // a type the sink does not use (in a file another writer made)
)

// plan is a node of the schema with its column index (leaves) and children in column order.
type plan struct {
	name     string
	optional bool
	kind     kind
	conv     conv
	col      int     // leaf column index
	typ      string  // leaf column's Parquet type, for errors
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
		p.typ = f.Type().String()
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
		if _, ok := lv.(*format.DecimalType); ok {
			return cDecimalInt32, nil
		}
		return cInt32, nil
	case parquet.Double:
		return cFloat64, nil
	case parquet.Int64:
		if _, ok := lv.(*format.DecimalType); ok {
			return cDecimalInt64, nil
		}
		if ts, ok := lv.(*format.TimestampType); ok {
			switch ts.Unit.Value.(type) {
			case *format.MilliSeconds:
				return cTimestampMillis, nil
			case *format.NanoSeconds:
				return cTimestampNanos, nil
			}
			return cTimestamp, nil
		}
		return cInt64, nil
	case parquet.Int96:
		return cInt96, nil
	case parquet.ByteArray:
		if _, ok := lv.(*format.StringType); ok {
			return cString, nil
		}
		return cBytes, nil
	case parquet.FixedLenByteArray:
		if _, ok := lv.(*format.DecimalType); ok {
			return cDecimal, nil
		}
	}
	return cSkip, nil
}
