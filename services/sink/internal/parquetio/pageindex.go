package parquetio

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

// dropColumnIndexes rewrites a Parquet file's footer so that no column has a column index (the
// min/max per page that readers use to skip pages); the offset indexes stay.
//
// Why: parquet-go always writes column indexes, and some are malformed. A page without bounds (a
// decimal column, whose bounds parquet-go would order as unsigned bytes and so must skip, or a
// fixed-length column whose page holds only nulls) gets a null-page flag and a null count but no
// min or max, so the index's lists differ in length and Spark fails every query that filters on
// the column ("Not all sizes are equal"). Row-group statistics and Delta's file statistics still
// let readers skip data; a page index adds little to files of the size the sink writes, and a
// wrong one breaks queries outright.
//
// The old footer's bytes are replaced in place: data pages and the indexes before it keep their
// offsets, and the index bytes no footer points to are ignored by readers.
func dropColumnIndexes(file []byte) ([]byte, error) {
	const magic = "PAR1"
	n := len(file)
	if n < 12 || string(file[n-4:]) != magic {
		return nil, fmt.Errorf("rewriting parquet footer: not a parquet file")
	}
	size := int(binary.LittleEndian.Uint32(file[n-8 : n-4]))
	start := n - 8 - size
	if size <= 0 || start < 4 {
		return nil, fmt.Errorf("rewriting parquet footer: footer length %d out of range", size)
	}
	var md format.FileMetaData
	proto := new(thrift.CompactProtocol)
	if err := thrift.Unmarshal(proto, file[start:n-8], &md); err != nil {
		return nil, fmt.Errorf("rewriting parquet footer: %w", err)
	}
	for i := range md.RowGroups {
		for j := range md.RowGroups[i].Columns {
			c := &md.RowGroups[i].Columns[j]
			c.ColumnIndexOffset, c.ColumnIndexLength = 0, 0 // zero optional fields are not written
		}
	}
	footer, err := thrift.Marshal(proto, &md)
	if err != nil {
		return nil, fmt.Errorf("rewriting parquet footer: %w", err)
	}
	out := bytes.NewBuffer(file[:start:start])
	out.Write(footer)
	_ = binary.Write(out, binary.LittleEndian, uint32(len(footer)))
	out.WriteString(magic)
	return out.Bytes(), nil
}
