package warehouse

// The table's schema: read from its ddb2delta.schema property, created and grown with DDL, and
// the schema each staged file was written with.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

// readSchema reads the table's schema from its properties, and its layout.
func (w *Writer) readSchema(ctx context.Context) error {
	props, err := w.properties(ctx)
	if err != nil {
		return err
	}
	var schema *deltatype.StructType
	if props != nil {
		raw, ok := props[PropSchema]
		if !ok {
			return fmt.Errorf("table %s: %s exists but has no %s property: it was not created by the sink's warehouse target "+
				"(write to another table, or register a table the sink writes directly)", w.cfg.Name, w.cfg.Table, PropSchema)
		}
		if m := props[PropMode]; m != w.cfg.Mode {
			return fmt.Errorf("table %s: %s is a %s table, not a %s", w.cfg.Name, w.cfg.Table, m, w.cfg.Mode)
		}
		schema = &deltatype.StructType{}
		if err := json.Unmarshal([]byte(raw), schema); err != nil {
			return fmt.Errorf("table %s: property %s of %s: %w", w.cfg.Name, PropSchema, w.cfg.Table, err)
		}
		w.lineage.load(props)
	}
	lay, err := layout.New(layout.Options{Mode: w.cfg.Mode, PartitionByDate: w.cfg.PartitionByDate, Hints: w.cfg.Hints}, schema, w.partitions(schema))
	if err != nil {
		return fmt.Errorf("table %s (%s): %w", w.cfg.Name, w.cfg.Table, err)
	}
	w.lay, w.schema = lay, schema
	return nil
}

func (w *Writer) partitions(schema *deltatype.StructType) []string {
	if schema == nil || schema.Field(layout.ColDate) == nil {
		return nil
	}
	return []string{layout.ColDate}
}

// properties returns the table's properties, or nil when it does not exist.
func (w *Writer) properties(ctx context.Context) (map[string]string, error) {
	props := map[string]string{}
	err := w.c.query(ctx, "reading the properties of "+w.cfg.Table.String(), "SHOW TBLPROPERTIES "+w.cfg.Table.SQL(), func(r *sql.Rows) error {
		var k, v string
		if err := r.Scan(&k, &v); err != nil {
			return err
		}
		props[k] = v
		return nil
	})
	if SQLState(err) == StateNotFound {
		return nil, nil
	}
	return props, err
}

// evolve creates the table, or adds the columns the layout grew, and keeps its properties (the
// schema with the layout's metadata, the lineage) current.
func (w *Writer) evolve(ctx context.Context) error {
	w.lay.Grew() // what the table lacks decides, not the flag: an evolution that failed is tried again
	want := w.lay.Schema()
	if w.schema != nil {
		add, err := addedColumns(w.schema, want, nil)
		if err != nil {
			return fmt.Errorf("table %s (%s): %w", w.cfg.Name, w.cfg.Table, err)
		}
		if len(add) == 0 && !w.lineage.changed {
			return nil
		}
	} else {
		props := maps.Clone(w.cfg.Properties)
		if props == nil {
			props = map[string]string{}
		}
		maps.Copy(props, w.ownProperties(want))
		err := w.c.exec(ctx, "creating "+w.cfg.Table.String(), createTable(w.cfg.Table, want, w.lay.PartitionColumns(), w.lineage.Comment(), props))
		if err == nil {
			w.log.Info("table created in the warehouse", "table", w.cfg.Name, "name", w.cfg.Table.String(), "columns", len(want.Fields))
			w.schema, w.lineage.changed = want, false
			return nil
		}
		if SQLState(err) != StateExists {
			return err
		}
		// Another replica created it first: go on from what it created.
	}
	// Another replica may grow the table at the same time: each round reads the schema the
	// table's property records, adds what it lacks, and records the union; a property another
	// replica overwrote in between (the last SET wins) is seen by the next round's read.
	for round := 0; ; round++ {
		props, err := w.properties(ctx)
		if err != nil {
			return err
		}
		cur := &deltatype.StructType{}
		if err := json.Unmarshal([]byte(props[PropSchema]), cur); err != nil {
			return fmt.Errorf("table %s: property %s of %s: %w", w.cfg.Name, PropSchema, w.cfg.Table, err)
		}
		add, err := addedColumns(cur, want, nil)
		if err != nil {
			return fmt.Errorf("table %s (%s): %w", w.cfg.Name, w.cfg.Table, err)
		}
		merged := unionSchema(cur, want)
		set := w.ownProperties(merged)
		if len(add) == 0 && subset(set, props) {
			w.schema, w.lineage.changed = merged, false
			if extra, _ := addedColumns(want, merged, nil); len(extra) > 0 {
				lay, err := layout.New(layout.Options{Mode: w.cfg.Mode, PartitionByDate: w.cfg.PartitionByDate, Hints: w.cfg.Hints}, merged, w.partitions(merged))
				if err != nil {
					return fmt.Errorf("table %s (%s): %w", w.cfg.Name, w.cfg.Table, err)
				}
				w.lay = lay
				return errRelayout
			}
			return nil
		}
		if round >= 10 {
			return fmt.Errorf("table %s: the %s property of %s kept changing under this writer", w.cfg.Name, PropSchema, w.cfg.Table)
		}
		for _, c := range add {
			if err := w.c.exec(ctx, "adding column "+strings.Join(c.path, "."), addColumn(w.cfg.Table, c)); err != nil && !alreadyExists(err) {
				return err
			}
		}
		if err := w.c.exec(ctx, "setting the properties of "+w.cfg.Table.String(), setProperties(w.cfg.Table, set)); err != nil {
			return err
		}
		if len(add) > 0 {
			w.log.Info("table schema evolved", "table", w.cfg.Name, "added", len(add))
		}
	}
}

// ownProperties are the properties the sink keeps on a table of schema s.
func (w *Writer) ownProperties(s *deltatype.StructType) map[string]string {
	b, _ := json.Marshal(s)
	p := w.lineage.Properties()
	p[PropSchema] = string(b)
	p[layout.ConfLayout] = layout.ConfLayoutTyped
	if w.cfg.Properties[delta.ConfStatsColumns] == "" {
		p[delta.ConfStatsColumns] = writer.StatsColumns(s, w.partitions(s))
	}
	return p
}

func subset(a, b map[string]string) bool {
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// unionSchema returns a's fields, with b's fields missing from them added (at the end of their
// struct: ALTER TABLE ADD COLUMNS appends).
func unionSchema(a, b *deltatype.StructType) *deltatype.StructType {
	out := &deltatype.StructType{Fields: slices.Clone(a.Fields)}
	for _, f := range b.Fields {
		i := slices.IndexFunc(out.Fields, func(o deltatype.StructField) bool { return o.Name == f.Name })
		switch {
		case i < 0:
			out.Fields = append(out.Fields, f)
		case out.Fields[i].Type.Struct != nil && f.Type.Struct != nil:
			out.Fields[i].Type = deltatype.DataType{Struct: unionSchema(out.Fields[i].Type.Struct, f.Type.Struct)}
		}
	}
	return out
}

// stagedSchema returns the schema a staged file was written with (the table's then: the table
// may have grown since).
func stagedSchema(data []byte) (*deltatype.StructType, error) {
	f, err := parquetio.Open(data)
	if err != nil {
		return nil, err
	}
	raw, ok := f.Metadata(PropSchema)
	if !ok {
		return nil, fmt.Errorf("no %s in its metadata: not staged by this sink", PropSchema)
	}
	s := &deltatype.StructType{}
	return s, json.Unmarshal([]byte(raw), s)
}
