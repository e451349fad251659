package parquetio

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/parquet-go/parquet-go"
)

// File is an opened Parquet file whose columns are read one at a time: for what needs a few
// columns of every row (a mirror's key index) without decoding whole rows.
type File struct {
	f *parquet.File
}

// Open opens a Parquet file.
func Open(data []byte) (*File, error) {
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("opening parquet file: %w", err)
	}
	return &File{f: f}, nil
}

// Metadata returns a value of the file's key-value metadata.
func (f *File) Metadata(key string) (string, bool) { return f.f.Lookup(key) }

// NumRows is the file's row count.
func (f *File) NumRows() int64 { return f.f.NumRows() }

// Scan calls fn with each row's value of a top-level, non-nested column, in row order (row is
// the row's position in the file, as deletion vectors count). A null value is passed as a null
// parquet.Value. The value's bytes are valid only during the call.
func (f *File) Scan(column string, fn func(row int, v parquet.Value) error) error {
	leaf, ok := f.f.Schema().Lookup(column)
	if !ok {
		return fmt.Errorf("parquet file has no column %s", column)
	}
	if leaf.MaxRepetitionLevel > 0 {
		return fmt.Errorf("column %s is repeated", column)
	}
	row := 0
	buf := make([]parquet.Value, 1024)
	for _, rg := range f.f.RowGroups() {
		pages := rg.ColumnChunks()[leaf.ColumnIndex].Pages()
		err := func() error {
			defer pages.Close()
			for {
				p, err := pages.ReadPage()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("column %s: %w", column, err)
				}
				vr := p.Values()
				for {
					n, err := vr.ReadValues(buf)
					for _, v := range buf[:n] {
						if err := fn(row, v); err != nil {
							return err
						}
						row++
					}
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return fmt.Errorf("column %s: %w", column, err)
					}
					if n == 0 {
						break
					}
				}
				parquet.Release(p)
			}
		}()
		if err != nil {
			return err
		}
	}
	if int64(row) != f.f.NumRows() {
		return fmt.Errorf("column %s has %d values for %d rows", column, row, f.f.NumRows())
	}
	return nil
}
