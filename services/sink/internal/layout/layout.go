package layout

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// Table modes.
const (
	Changelog = "changelog" // every change appended, in order, with both images
	Mirror    = "mirror"    // one row per item: the table equals the DynamoDB table
)

// Lineage columns, in every table. Sequence numbers are zero-padded to SeqWidth digits so that
// their text sorts as their value.
const (
	ColKey            = "_key"
	ColOp             = "_op"
	ColSequence       = "_sequence_number"
	ColSnapshot       = "_snapshot"
	ColTTLDelete      = "_ttl_delete"
	ColSourceTime     = "_source_time"
	ColProducerTime   = "_producer_time"
	ColTable          = "_source_table"
	ColShard          = "_shard_id"
	ColEventID        = "_event_id"
	ColKafkaTopic     = "_kafka_topic"
	ColKafkaPartition = "_kafka_partition"
	ColKafkaOffset    = "_kafka_offset"
	ColDate           = "_date" // partition column of date-partitioned changelog tables
	ColBefore         = "before"
	ColAfter          = "after"
	SeqWidth          = 40
)

// lineage are the lineage columns and their types, in table order.
var lineage = []deltatype.StructField{
	{Name: ColKey, Type: deltatype.String}, {Name: ColOp, Type: deltatype.String}, {Name: ColSequence, Type: deltatype.String},
	{Name: ColSnapshot, Type: deltatype.Boolean}, {Name: ColTTLDelete, Type: deltatype.Boolean},
	{Name: ColSourceTime, Type: deltatype.Timestamp}, {Name: ColProducerTime, Type: deltatype.Timestamp},
	{Name: ColTable, Type: deltatype.String}, {Name: ColShard, Type: deltatype.String}, {Name: ColEventID, Type: deltatype.String},
	{Name: ColKafkaTopic, Type: deltatype.String}, {Name: ColKafkaPartition, Type: deltatype.Integer}, {Name: ColKafkaOffset, Type: deltatype.Long},
}

// Layout is the column layout of one table; it evolves as events bring new attributes. Not safe
// for concurrent use.
//
// Tables created by this version are typed (typed.go): one column per attribute, typed by schema
// hints or the DynamoDB type, with _rescued_data. Tables created before it, with one column per
// (attribute, kind of value) (columns.go), are recognised by their columns' metadata and continued
// as they are: changing a table's columns would break every query and view over it.
type Layout struct {
	mode       string
	byDate     bool
	items      *columns      // an earlier version's table
	typed      *typedColumns // a typed table
	partitions []string
	rescued    int64            // values rescued since the last call to Rescued
	declared   map[uintptr]bool // ColumnTypes maps of writers' schemas already applied
	mixed      []string         // attribute paths newly seen with another DynamoDB type than their column's
	mixedSeen  map[string]bool
}

// Options configure a new table's layout.
type Options struct {
	Mode string
	// PartitionByDate partitions a changelog table by the UTC date of the source change (_date).
	PartitionByDate bool
	// Hints fix the types of attributes' columns (typed tables only).
	Hints *Hints
}

// ConfLayout is the table property naming a typed table's layout (ConfLayoutTyped).
const (
	ConfLayout      = "ddb2delta.layout"
	ConfLayoutTyped = "typed"
)

// New returns the layout of a table: read from its schema when it exists (schema non-nil), else
// a new one.
func New(o Options, schema *deltatype.StructType, partitionColumns []string) (*Layout, error) {
	if o.Mode != Changelog && o.Mode != Mirror {
		return nil, fmt.Errorf("mode %q is not changelog or mirror", o.Mode)
	}
	l := &Layout{mode: o.Mode, byDate: o.PartitionByDate && o.Mode == Changelog}
	reserved := []string{ColDate, ColBefore, ColAfter, ColRescued}
	for _, f := range lineage {
		reserved = append(reserved, f.Name)
	}
	if o.Mode == Changelog {
		reserved = []string{ColRescued} // the images' structs hold item columns only
	}
	if schema == nil {
		l.typed = newTypedColumns(reserved...)
		if err := l.typed.applyHints(o.Hints.node(), nil); err != nil {
			return nil, err
		}
		if l.byDate {
			l.partitions = []string{ColDate}
		}
		return l, nil
	}
	for _, f := range lineage {
		got := schema.Field(f.Name)
		if got == nil || !got.Type.Equal(f.Type) {
			return nil, fmt.Errorf("the table has no lineage column %s %s: it was not created by ddb2delta's sink", f.Name, f.Type)
		}
	}
	l.partitions = partitionColumns
	l.byDate = len(partitionColumns) == 1 && partitionColumns[0] == ColDate
	if len(partitionColumns) > 0 && !l.byDate {
		return nil, fmt.Errorf("the table is partitioned by %v; the sink writes tables partitioned by %s or not at all", partitionColumns, ColDate)
	}
	items := schema
	switch o.Mode {
	case Mirror:
		if a := schema.Field(ColAfter); a != nil && a.Type.Struct != nil && a.Metadata[MetaKind] == nil && a.Metadata[MetaType] == nil {
			return nil, fmt.Errorf("the table has an %s struct column: it is a changelog table, not a mirror", ColAfter)
		}
	case Changelog:
		after := schema.Field(ColAfter)
		if after == nil || after.Type.Struct == nil || after.Metadata[MetaType] != nil {
			return nil, fmt.Errorf("the table has no %s struct column: it is not a changelog table", ColAfter)
		}
		items = after.Type.Struct
	}
	var err error
	if f := items.Field(ColRescued); f != nil && f.Metadata[MetaRescued] == true {
		if l.typed, err = loadTyped(items, reserved...); err == nil {
			err = l.typed.applyHints(o.Hints.node(), nil)
		}
	} else {
		if !o.Hints.Empty() {
			return nil, fmt.Errorf("the table was created by an earlier version of the sink, with one column per kind of value and no %s: "+
				"schema hints need a table created by this version (remove the hints to continue this table as it is, "+
				"or write a new table: see the sink README's migration section)", ColRescued)
		}
		l.items, err = loadColumns(items, reserved...)
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// declare applies the column types an event's writer declared in its schema (the enricher's
// projection) as schema hints: a declared attribute without a column gets it, with that type,
// before any value. Configured hints were applied first and win: an attribute whose column
// exists keeps it (values that do not fit are rescued). Each schema's map is applied once.
func (l *Layout) declare(columns map[string]string) error {
	if len(columns) == 0 {
		return nil
	}
	id := reflect.ValueOf(columns).Pointer()
	if l.declared[id] {
		return nil
	}
	for _, attr := range sortedKeys(columns) {
		t, err := ParseType(columns[attr])
		if err != nil {
			return fmt.Errorf("the writer's schema declares attribute %s as %w", attr, err)
		}
		if l.typed.byAttr[attr] == nil {
			l.typed.add(attr, t)
		}
	}
	if l.declared == nil {
		l.declared = map[uintptr]bool{}
	}
	l.declared[id] = true
	return nil
}

// Typed reports whether the table has the typed layout.
func (l *Layout) Typed() bool { return l.typed != nil }

// Mixed returns the attribute paths seen, since the last call and for the first time, with a
// value of another DynamoDB type than their column holds (the value was rescued). Without a hint
// such an attribute's column is typed by whichever type came first: worth a warning.
func (l *Layout) Mixed() []string {
	out := l.mixed
	l.mixed = nil
	return out
}

// Rescued returns how many values were rescued since the last call.
func (l *Layout) Rescued() int64 {
	n := l.rescued
	l.rescued = 0
	return n
}

// Mode returns the layout's mode.
func (l *Layout) Mode() string { return l.mode }

// PartitionColumns returns the table's partition columns.
func (l *Layout) PartitionColumns() []string { return l.partitions }

// Schema returns the table schema. Typed: the item columns (mirror) or the before and after
// structs (changelog), then _rescued_data (mirror), the lineage columns and the partition column.
// An earlier version's table: the lineage columns first.
func (l *Layout) Schema() *deltatype.StructType {
	var items *deltatype.StructType
	if l.typed != nil {
		items = l.typed.structType()
		items.Fields = append(items.Fields, deltatype.StructField{Name: ColRescued, Type: deltatype.String, Nullable: true,
			Metadata: map[string]any{MetaRescued: true}})
	} else {
		items = l.items.structType()
	}
	var lin []deltatype.StructField
	for _, f := range lineage {
		f.Nullable = true
		lin = append(lin, f)
	}
	s := &deltatype.StructType{}
	if l.typed == nil {
		s.Fields = append(s.Fields, lin...)
	}
	switch l.mode {
	case Mirror:
		s.Fields = append(s.Fields, items.Fields...)
	case Changelog:
		s.Fields = append(s.Fields,
			deltatype.StructField{Name: ColBefore, Type: deltatype.DataType{Struct: items}, Nullable: true},
			deltatype.StructField{Name: ColAfter, Type: deltatype.DataType{Struct: items}, Nullable: true})
	}
	if l.typed != nil {
		s.Fields = append(s.Fields, lin...)
	}
	if l.byDate {
		s.Fields = append(s.Fields, deltatype.StructField{Name: ColDate, Type: deltatype.Date, Nullable: true})
	}
	return s
}

// Grew reports whether columns were added since the last call.
func (l *Layout) Grew() bool {
	if l.typed != nil {
		return l.typed.grew()
	}
	return l.items.grew()
}

// image converts an item image to its columns' values (typed: with _rescued_data), path naming
// the image in errors.
func (l *Layout) image(item map[string]types.AttributeValue, path string) (map[string]any, error) {
	if l.typed == nil {
		return l.items.row(item, path)
	}
	res := &rescued{}
	out, err := l.typed.row(item, nil, res)
	if err != nil {
		return nil, fmt.Errorf("%s%w", path, err)
	}
	if out[ColRescued], err = rescuedText(res.values); err != nil {
		return nil, err
	}
	l.rescued += int64(len(res.values))
	for _, p := range res.mixed {
		if !l.mixedSeen[p] {
			if l.mixedSeen == nil {
				l.mixedSeen = map[string]bool{}
			}
			l.mixedSeen[p] = true
			l.mixed = append(l.mixed, p)
		}
	}
	return out, nil
}

// Origin is where an event was read from.
type Origin struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Row is one row: column name → value (nil or absent for null). Values are string, int64,
// int32, bool, []byte, time.Time, *big.Int (decimal(38,18) unscaled), []any and map[string]any
// (struct).
type Row map[string]any

// Row converts an event into its row. In a mirror table a delete's row carries the key and
// lineage only; the writer uses it to remove the item.
func (l *Layout) Row(ev *ddbavro.Event, key avrov1.Key, o Origin) (Row, error) {
	k, err := KeyString(key)
	if err != nil {
		return nil, err
	}
	seq, err := PadSequence(derefOr(ev.Source.SequenceNumber, "0"))
	if err != nil {
		return nil, err
	}
	r := Row{
		ColKey: k, ColOp: ev.Op, ColSequence: seq, ColSnapshot: ev.Source.Snapshot, ColTTLDelete: ev.Source.TTLDelete,
		ColSourceTime: ev.Source.ApproximateCreationMs.UTC(), ColProducerTime: ev.TsMs.UTC(), ColTable: ev.Source.Table,
		ColKafkaTopic: o.Topic, ColKafkaPartition: o.Partition, ColKafkaOffset: o.Offset,
	}
	if ev.Source.ShardID != nil {
		r[ColShard] = *ev.Source.ShardID
	}
	if ev.Source.EventID != nil {
		r[ColEventID] = *ev.Source.EventID
	}
	if l.typed != nil {
		if err := l.declare(ev.ColumnTypes); err != nil {
			return nil, err
		}
		defer l.typed.markKeys(key.PartitionKey.Name, sortKeyName(key)) // once their columns exist
	}
	switch l.mode {
	case Mirror:
		if ev.Op == "d" {
			return r, nil
		}
		if ev.After == nil {
			return nil, fmt.Errorf("a %q event without an after image cannot update a mirror: the stream view type must include new images", ev.Op)
		}
		items, err := l.image(ev.After, "")
		if err != nil {
			return nil, err
		}
		for c, v := range items {
			r[c] = v
		}
	case Changelog:
		if ev.Before != nil {
			if r[ColBefore], err = l.image(ev.Before, "before."); err != nil {
				return nil, err
			}
		}
		if ev.After != nil {
			if r[ColAfter], err = l.image(ev.After, "after."); err != nil {
				return nil, err
			}
		}
		if l.byDate {
			d := ev.Source.ApproximateCreationMs.UTC()
			r[ColDate] = time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC)
		}
	}
	return r, nil
}

func sortKeyName(k avrov1.Key) string {
	if k.SortKey == nil {
		return ""
	}
	return k.SortKey.Name
}

func derefOr(s *string, def string) string {
	if s == nil {
		return def
	}
	return *s
}

// PadSequence zero-pads a sequence number to SeqWidth digits.
func PadSequence(s string) (string, error) {
	if s == "" || len(s) > SeqWidth || strings.Trim(s, "0123456789") != "" {
		return "", fmt.Errorf("sequence number %q is not a decimal of at most %d digits", s, SeqWidth)
	}
	return strings.Repeat("0", SeqWidth-len(s)) + s, nil
}

// Newer reports whether row a's change is newer than row b's: a greater sequence number, or the
// same one with a a stream change and b a snapshot row.
func Newer(a, b Row) bool {
	sa, sb := a[ColSequence].(string), b[ColSequence].(string)
	if sa != sb {
		return sa > sb
	}
	return !a[ColSnapshot].(bool) && b[ColSnapshot].(bool)
}
