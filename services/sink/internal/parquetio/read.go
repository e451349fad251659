package parquetio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"

	"github.com/parquet-go/parquet-go"
)

// Read decodes every row of a Parquet file written by Write (under this or an older schema), or
// by another writer. Columns lists the top-level columns wanted (nil: all). Values of types the
// sink does not use are read as null: for reading what the sink needs from others' checkpoints.
func Read(data []byte, columns []string) ([]Row, error) { return read(data, columns, false) }

// ReadData decodes every row and column of a table's data file, for rewriting it: a value of a
// type the sink cannot write back (another writer's file may hold one) is an error naming the
// column, never a silent null.
func ReadData(data []byte) ([]Row, error) { return read(data, nil, true) }

// rowReader reads a file's rows (parquet-go's Reader).
type rowReader interface {
	ReadRows([]parquet.Row) (int, error)
	SeekToRow(int64) error
	Close() error
}

// openRows opens a file for reading rows, with the plan of its schema.
func openRows(data []byte) (*parquet.File, *plan, rowReader, error) {
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("opening parquet file: %w", err)
	}
	p, _, err := newPlan(f.Schema())
	if err != nil {
		return nil, nil, nil, err
	}
	return f, p, parquet.NewReader(f), nil
}

func read(data []byte, columns []string, strict bool) ([]Row, error) {
	f, p, r, err := openRows(data)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out := make([]Row, 0, f.NumRows())
	rows := make([]parquet.Row, 256)
	for {
		n, err := r.ReadRows(rows)
		for _, row := range rows[:n] {
			m, err := decodeRow(p, row, columns, strict)
			if err != nil {
				return nil, err
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

// decodeRow decodes one row of a file by its plan (columns: the top-level columns wanted, nil
// for all).
func decodeRow(p *plan, row parquet.Row, columns []string, strict bool) (Row, error) {
	d := decoder{cols: splitColumns(row, p.last), strict: strict}
	m := map[string]any{}
	for _, c := range p.children {
		if columns != nil && !slices.Contains(columns, c.name) {
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
	return m, nil
}

// ReadDataAt decodes the rows at the given positions (in the file, ascending) of a table's data
// file, as ReadData does, seeking to each: for a few rows of a large file.
func ReadDataAt(data []byte, positions []int) ([]Row, error) {
	f, p, r, err := openRows(data)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out := make([]Row, 0, len(positions))
	buf := make([]parquet.Row, 1)
	for _, pos := range positions {
		if err := r.SeekToRow(int64(pos)); err != nil {
			return nil, fmt.Errorf("seeking to row %d: %w", pos, err)
		}
		n, err := r.ReadRows(buf)
		if n != 1 {
			return nil, fmt.Errorf("reading row %d of %d: %v", pos, f.NumRows(), err)
		}
		m, err := decodeRow(p, buf[0], nil, true)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
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
	cols   [][]parquet.Value
	strict bool
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
	case cTimestampMillis:
		return time.UnixMilli(v.Int64()).UTC(), nil
	case cTimestampNanos:
		return time.Unix(0, v.Int64()).UTC(), nil
	case cInt96:
		// Spark's default timestamp encoding: nanoseconds of the day, then the Julian day.
		i := v.Int96()
		nanos := int64(i[1])<<32 | int64(i[0])
		days := int64(i[2]) - julianUnixEpoch
		return time.Unix(days*86400, nanos).UTC().Truncate(time.Microsecond), nil
	case cDecimal:
		return decimalFromBytes(v.ByteArray()), nil
	case cDecimalInt32:
		return big.NewInt(int64(v.Int32())), nil
	case cDecimalInt64:
		return big.NewInt(v.Int64()), nil
	case cFloat64:
		return v.Double(), nil
	case cSkip:
		if d.strict {
			return nil, fmt.Errorf("column %s: a value of type %s, which the sink does not write", p.name, p.typ)
		}
		return nil, nil
	}
	return nil, fmt.Errorf("column %s: unknown conversion", p.name)
}

// julianUnixEpoch is the Julian day number of 1970-01-01.
const julianUnixEpoch = 2440588

func decimalFromBytes(b []byte) *big.Int {
	d := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		d.Sub(d, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return d
}
