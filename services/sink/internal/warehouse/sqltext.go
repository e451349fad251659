package warehouse

// The SQL the warehouse target sends, as text. Values are inlined as literals, not sent as
// parameters: a Databricks SQL warehouse takes parameters, but a Spark Thrift server below
// protocol V8 does not, and every value here is one the sink produced itself (names from its
// configuration, offsets, file names), quoted by the functions below.

import (
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
)

// Ident is a table's name in the warehouse: catalog.schema.table (Unity Catalog's three levels;
// on open-source Spark the catalog is spark_catalog).
type Ident struct{ Catalog, Schema, Table string }

// ParseIdent parses "catalog.schema.table", "schema.table" or "table", filling the missing
// levels from the defaults. Parts may be backquoted (`my-schema`).
func ParseIdent(s, catalog, schema string) (Ident, error) {
	parts, err := splitName(s)
	if err != nil {
		return Ident{}, fmt.Errorf("table name %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		parts = []string{catalog, schema, parts[0]}
	case 2:
		parts = []string{catalog, parts[0], parts[1]}
	case 3:
	default:
		return Ident{}, fmt.Errorf("table name %q: want catalog.schema.table, got %d parts", s, len(parts))
	}
	id := Ident{Catalog: parts[0], Schema: parts[1], Table: parts[2]}
	if id.Catalog == "" || id.Schema == "" || id.Table == "" {
		return Ident{}, fmt.Errorf("table name %q: catalog, schema and table must all be known (set databricks.catalog and databricks.schema, or name all three)", s)
	}
	return id, nil
}

// splitName splits a dotted name whose parts may be backquoted.
func splitName(s string) ([]string, error) {
	var parts []string
	var cur strings.Builder
	quoted, started := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '`' && i+1 < len(s) && s[i+1] == '`':
			cur.WriteByte('`')
			i++
		case c == '`':
			quoted = !quoted
			started = true
		case c == '.' && !quoted:
			parts = append(parts, cur.String())
			cur.Reset()
			started = false
		default:
			cur.WriteByte(c)
			started = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unclosed backquote")
	}
	if started || len(parts) > 0 {
		parts = append(parts, cur.String())
	}
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("empty part")
		}
	}
	return parts, nil
}

// SQL renders the name with each part backquoted.
func (i Ident) SQL() string {
	return quoteIdent(i.Catalog) + "." + quoteIdent(i.Schema) + "." + quoteIdent(i.Table)
}

// String renders the name as a user writes it.
func (i Ident) String() string { return i.Catalog + "." + i.Schema + "." + i.Table }

// In returns the name of another table in the same schema.
func (i Ident) In(table string) Ident {
	return Ident{Catalog: i.Catalog, Schema: i.Schema, Table: table}
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// quoteString renders a string literal. Spark SQL (and so Databricks SQL) treats a backslash in
// a literal as an escape, so both backslashes and quotes are escaped.
func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// sqlType renders a Delta type as a SQL type.
func sqlType(t deltatype.DataType) string {
	switch {
	case t.Struct != nil:
		fs := make([]string, len(t.Struct.Fields))
		for i, f := range t.Struct.Fields {
			fs[i] = quoteIdent(f.Name) + ": " + sqlType(f.Type)
		}
		return "STRUCT<" + strings.Join(fs, ", ") + ">"
	case t.Array != nil:
		return "ARRAY<" + sqlType(t.Array.Element) + ">"
	case t.Map != nil:
		return "MAP<" + sqlType(t.Map.Key) + ", " + sqlType(t.Map.Value) + ">"
	}
	switch t.Primitive {
	case "long":
		return "BIGINT"
	case "integer":
		return "INT"
	case "short":
		return "SMALLINT"
	case "byte":
		return "TINYINT"
	}
	return strings.ToUpper(t.Primitive) // string, boolean, binary, date, timestamp, double, float, decimal(p,s)
}

// staged is a staged file as a statement reads it: the table's schema (its column order: SQL
// assigns structs by position), the schema the file was written with (the same columns, or fewer:
// the table may have grown since the file was staged), and where the file is.
type staged struct {
	table, file *deltatype.StructType
	path        string
}

// columns renders the expressions reading each of the table's columns from the file (prefix:
// the file's alias), in the table's order.
func (b staged) columns(prefix string) string {
	cols := make([]string, len(b.table.Fields))
	for i, f := range b.table.Fields {
		var have *deltatype.DataType
		if hf := b.file.Field(f.Name); hf != nil {
			have = &hf.Type
		}
		cols[i] = project(f.Type, have, prefix+quoteIdent(f.Name)) + " AS " + quoteIdent(f.Name)
	}
	return strings.Join(cols, ", ")
}

// project renders the expression reading a value of type t at src as the table holds it, from a
// file whose value there has type have (nil: the file has no such column or field, so null).
// Structs are rebuilt field by field, by name, in the table's order: a staged Parquet file orders
// a struct's fields by name, and the table by when they were added.
func project(t deltatype.DataType, have *deltatype.DataType, src string) string {
	if have == nil {
		return "CAST(NULL AS " + sqlType(t) + ")"
	}
	if t.Struct == nil || have.Struct == nil {
		return src
	}
	fs := make([]string, 0, 2*len(t.Struct.Fields))
	for _, f := range t.Struct.Fields {
		var h *deltatype.DataType
		if hf := have.Struct.Field(f.Name); hf != nil {
			h = &hf.Type
		}
		fs = append(fs, quoteString(f.Name), project(f.Type, h, src+"."+quoteIdent(f.Name)))
	}
	return "CASE WHEN " + src + " IS NULL THEN NULL ELSE named_struct(" + strings.Join(fs, ", ") + ") END"
}

// selectStaged renders the query reading a staged file's rows as the table's columns, restricted
// by where (empty: every row).
func selectStaged(b staged, where string) string {
	q := "SELECT " + b.columns("f.") + " FROM parquet." + quoteIdent(b.path) + " AS f"
	if where != "" {
		q += " WHERE " + where
	}
	return q
}

func columnList(s *deltatype.StructType, prefix string) string {
	cols := make([]string, len(s.Fields))
	for i, f := range s.Fields {
		cols[i] = prefix + quoteIdent(f.Name)
	}
	return strings.Join(cols, ", ")
}

// createTable renders the statement creating a table of schema s. It fails when the table exists
// (StateExists): the writer then reads what another replica created.
func createTable(id Ident, s *deltatype.StructType, partitions []string, comment string, props map[string]string) string {
	cols := make([]string, len(s.Fields))
	for i, f := range s.Fields {
		cols[i] = quoteIdent(f.Name) + " " + sqlType(f.Type)
	}
	q := "CREATE TABLE " + id.SQL() + " (" + strings.Join(cols, ", ") + ") USING DELTA"
	if len(partitions) > 0 {
		ps := make([]string, len(partitions))
		for i, p := range partitions {
			ps[i] = quoteIdent(p)
		}
		q += " PARTITIONED BY (" + strings.Join(ps, ", ") + ")"
	}
	if comment != "" {
		q += " COMMENT " + quoteString(comment)
	}
	if len(props) > 0 {
		q += " TBLPROPERTIES (" + propertyList(props) + ")"
	}
	return q
}

func propertyList(props map[string]string) string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	kv := make([]string, len(keys))
	for i, k := range keys {
		kv[i] = quoteString(k) + " = " + quoteString(props[k])
	}
	return strings.Join(kv, ", ")
}

// setProperties renders the statement setting table properties.
func setProperties(id Ident, props map[string]string) string {
	return "ALTER TABLE " + id.SQL() + " SET TBLPROPERTIES (" + propertyList(props) + ")"
}

// newColumn is a column (or a struct's field, by path) that table schema next has and prev
// does not.
type newColumn struct {
	path []string
	typ  deltatype.DataType
}

// addedColumns returns the columns and nested struct fields of next missing from prev, in
// schema order. A field whose type changed is an error: the sink never changes a column's type.
func addedColumns(prev, next *deltatype.StructType, path []string) ([]newColumn, error) {
	var out []newColumn
	for _, f := range next.Fields {
		p := append(slices.Clone(path), f.Name)
		old := prev.Field(f.Name)
		switch {
		case old == nil:
			out = append(out, newColumn{path: p, typ: f.Type})
		case f.Type.Struct != nil && old.Type.Struct != nil:
			sub, err := addedColumns(old.Type.Struct, f.Type.Struct, p)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		case !f.Type.Equal(old.Type):
			return nil, fmt.Errorf("column %s is %s in the table and %s in the batch: a column's type does not change", strings.Join(p, "."), sqlType(old.Type), sqlType(f.Type))
		}
	}
	return out, nil
}

// addColumn renders the statement adding one column or struct field.
func addColumn(id Ident, c newColumn) string {
	parts := make([]string, len(c.path))
	for i, p := range c.path {
		parts[i] = quoteIdent(p)
	}
	return "ALTER TABLE " + id.SQL() + " ADD COLUMNS (" + strings.Join(parts, ".") + " " + sqlType(c.typ) + ")"
}

// newer renders the sequence guard (layout.Newer) of source row s over table row t: a greater
// sequence number (zero-padded text, so text order is numeric order), or the same one with a
// stream change over a snapshot row.
const newer = "(s." + "`" + layout.ColSequence + "`" + " > t.`" + layout.ColSequence + "` OR (s.`" + layout.ColSequence + "` = t.`" + layout.ColSequence +
	"` AND NOT s.`" + layout.ColSnapshot + "` AND t.`" + layout.ColSnapshot + "`))"

// mergeMirror renders a mirror batch's MERGE: the staged file holds the newest change per key;
// a newer change replaces the row or deletes it, an older one (a replay) changes nothing.
func mergeMirror(id Ident, b staged, where string) string {
	s := b.table
	var set []string
	for _, f := range s.Fields {
		set = append(set, "t."+quoteIdent(f.Name)+" = s."+quoteIdent(f.Name))
	}
	op := "s.`" + layout.ColOp + "`"
	return "MERGE INTO " + id.SQL() + " AS t USING (" + selectStaged(b, where) + ") AS s" +
		" ON t.`" + layout.ColKey + "` = s.`" + layout.ColKey + "`" +
		" WHEN MATCHED AND " + op + " = 'd' AND " + newer + " THEN DELETE" +
		" WHEN MATCHED AND " + newer + " THEN UPDATE SET " + strings.Join(set, ", ") +
		" WHEN NOT MATCHED AND " + op + " <> 'd' THEN INSERT (" + columnList(s, "") + ") VALUES (" + columnList(s, "s.") + ")"
}

// mergeChangelog renders the append of a changelog batch that may be in the table already: only
// the rows whose Kafka position (topic, partition, offset) the table does not hold are added.
// minOffset (the batch's lowest offset) lets the engine skip the files of older batches.
func mergeChangelog(id Ident, b staged, where string, minOffset int64) string {
	s := b.table
	on := make([]string, 0, 5)
	for _, c := range []string{layout.ColKafkaTopic, layout.ColKafkaPartition, layout.ColKafkaOffset} {
		on = append(on, "t."+quoteIdent(c)+" = s."+quoteIdent(c))
	}
	on = append(on, "t.`"+layout.ColKafkaOffset+"` >= "+strconv.FormatInt(minOffset, 10))
	if s.Field(layout.ColDate) != nil {
		on = append(on, "t.`"+layout.ColDate+"` = s.`"+layout.ColDate+"`")
	}
	return "MERGE INTO " + id.SQL() + " AS t USING (" + selectStaged(b, where) + ") AS s ON " + strings.Join(on, " AND ") +
		" WHEN NOT MATCHED THEN INSERT (" + columnList(s, "") + ") VALUES (" + columnList(s, "s.") + ")"
}

// copyInto renders Databricks' COPY INTO of one staged file: idempotent by itself, since the
// table records the files it loaded and skips them when they come again.
func copyInto(id Ident, b staged, dir, name string) string {
	return "COPY INTO " + id.SQL() + " FROM (SELECT " + b.columns("") + " FROM " + quoteString(dir) + ")" +
		" FILEFORMAT = PARQUET FILES = (" + quoteString(name) + ")"
}

// partitionFilter renders the condition selecting rows of the given topic-partitions.
func partitionFilter(parts map[string][]int32) string {
	topics := make([]string, 0, len(parts))
	for t := range parts {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	var or []string
	for _, t := range topics {
		ps := slices.Sorted(slices.Values(parts[t]))
		ns := make([]string, len(ps))
		for i, p := range ps {
			ns[i] = strconv.Itoa(int(p))
		}
		or = append(or, "(f.`"+layout.ColKafkaTopic+"` = "+quoteString(t)+" AND f.`"+layout.ColKafkaPartition+"` IN ("+strings.Join(ns, ", ")+"))")
	}
	if len(or) == 0 {
		return "FALSE"
	}
	return strings.Join(or, " OR ")
}

// The offsets table: per sink table and topic-partition, the next offset to consume and the
// staged file of the last batch recorded (its intent), with the batch's first offset.
func createOffsets(id Ident) string {
	return "CREATE TABLE IF NOT EXISTS " + id.SQL() + " (table_name STRING NOT NULL, topic STRING NOT NULL, kafka_partition INT NOT NULL, " +
		"next_offset BIGINT NOT NULL, batch_file STRING, batch_first_offset BIGINT, updated_at TIMESTAMP) USING DELTA PARTITIONED BY (table_name) " +
		"COMMENT " + quoteString("ddb2delta sink: the Kafka offsets each table written through this warehouse holds (do not edit while the sink runs)")
}

// readOffsets renders the query of a table's offsets. A Databricks warehouse takes the table's
// name as a named parameter; a Spark Thrift server (below protocol V8) takes no parameters.
func readOffsets(id Ident, table, dialect string) (string, []any) {
	q := "SELECT topic, kafka_partition, next_offset, batch_file, batch_first_offset FROM " + id.SQL() + " WHERE table_name = "
	if dialect == Databricks {
		return q + ":table_name", []any{sql.Named("table_name", table)}
	}
	return q + quoteString(table), nil
}

// offsetRow is one topic-partition's entry of a batch's intent.
type offsetRow struct {
	tp    tp
	next  int64  // one past the batch's last offset of the partition
	file  string // the batch's staged file ("" when it has no rows)
	first int64  // the batch's first offset of the partition
	prev  int64  // the next offset the row holds now, as this writer knows it (-1: no row)
}

// recordOffsets renders the MERGE recording a batch's intent, as a compare-and-set on each
// partition's next offset (a writer that lost the partition changes nothing: the count of rows
// changed tells it). The partition column is compared with a literal, so writers of different
// tables never conflict on the offsets table.
func recordOffsets(id Ident, table string, rows []offsetRow) string {
	vals := make([]string, len(rows))
	for i, r := range rows {
		file := "CAST(NULL AS STRING)"
		if r.file != "" {
			file = quoteString(r.file)
		}
		vals[i] = "(" + quoteString(table) + ", " + quoteString(r.tp.topic) + ", " + strconv.Itoa(int(r.tp.partition)) + ", " +
			strconv.FormatInt(r.next, 10) + ", " + file + ", " + strconv.FormatInt(r.first, 10) + ", " + strconv.FormatInt(r.prev, 10) + ")"
	}
	return "MERGE INTO " + id.SQL() + " AS o USING (SELECT * FROM VALUES " + strings.Join(vals, ", ") +
		" AS v(table_name, topic, kafka_partition, next_offset, batch_file, batch_first_offset, prev_offset)) AS v" +
		" ON o.table_name = " + quoteString(table) + " AND o.table_name = v.table_name AND o.topic = v.topic AND o.kafka_partition = v.kafka_partition" +
		" WHEN MATCHED AND o.next_offset = v.prev_offset THEN UPDATE SET next_offset = v.next_offset, batch_file = v.batch_file," +
		" batch_first_offset = v.batch_first_offset, updated_at = current_timestamp()" +
		" WHEN NOT MATCHED AND v.prev_offset = -1 THEN INSERT (table_name, topic, kafka_partition, next_offset, batch_file, batch_first_offset, updated_at)" +
		" VALUES (v.table_name, v.topic, v.kafka_partition, v.next_offset, v.batch_file, v.batch_first_offset, current_timestamp())"
}

// recorded renders the condition, on a staged file's row f, that the offsets table still names
// the file as the last batch of the row's partition: a writer that lost the partition (and
// does not know it yet) loads nothing, and a load run again after a conflict re-reads it.
func recorded(offsets Ident, table, file string) string {
	return "EXISTS (SELECT 1 FROM " + offsets.SQL() + " AS o WHERE o.table_name = " + quoteString(table) +
		" AND o.topic = f.`" + layout.ColKafkaTopic + "` AND o.kafka_partition = f.`" + layout.ColKafkaPartition + "`" +
		" AND o.batch_file = " + quoteString(file) + ")"
}
