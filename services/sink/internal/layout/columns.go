// Package layout maps change events to Delta rows: the lineage columns every table has, and
// columns for the items' attributes, which grow as new attributes (or new kinds of value for an
// attribute) appear.
//
// Item columns. Each (attribute, kind of value) pair gets one column, named after the attribute,
// so a table whose attributes keep one type has one column per attribute under its own name. A
// second kind for the same attribute (an "amount" that is sometimes a string) gets its own column,
// named <attribute>__<kind>: a column never changes type, every change to the schema adds a
// nullable column, and every value is kept exactly. The kinds and their Delta types:
//
//	S                 string
//	N                 long when the number is an integer within int64 (kind n), else
//	                  decimal(38,18) when it fits exactly (kind decimal), else string holding the
//	                  canonical number (kind number)
//	B                 binary
//	BOOL              boolean
//	NULL              boolean, true (kind null: a NULL attribute is distinct from an absent one)
//	SS / NS / BS      array<string> / array<string> (canonical numbers) / array<binary>
//	L                 string: the list as DynamoDB JSON, {"L":[…]} (lists may mix kinds)
//	M                 struct, whose fields follow the same rules
//
// Column names are the attribute names with the characters Spark refuses in column names
// (" ,;{}()\n\t=") replaced by "_", made unique without regard to case (Delta's rule). Each item
// column's metadata records its attribute (ddb.attr) and kind (ddb.kind), so the mapping is read
// back from the table's schema on start-up and is the same in every replica.
package layout

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// Metadata keys of item columns.
const (
	MetaAttr = "ddb.attr"
	MetaKind = "ddb.kind"
	// MetaPlaceholder marks the field a map's struct holds when it has no attribute of its own.
	MetaPlaceholder = "ddb.placeholder"
)

// Placeholder is the name of the always-null boolean field of a map column whose struct would
// otherwise have no field: an empty map ({"M": {}}) is a valid DynamoDB value, but Parquet has no
// group without children (delta-rs and Spark both fail on one, and on every row after it). With
// the field, an empty map is a present struct whose fields are all null, distinct from an absent
// map (a null struct). Once in a schema the field stays, as every column does.
const Placeholder = "_ddb_empty"

// columns is the set of item columns at one level: the item, or a nested map.
type columns struct {
	fields []deltatype.StructField
	byKey  map[string]int   // attr + "\x00" + kind → index in fields
	names  map[string]bool  // lower-cased names in use (including reserved ones)
	nested map[int]*columns // kind M fields
	added  bool             // a column was added here or below since load
	// placeholder: the struct holds the Placeholder field (it had no field when first written).
	placeholder bool
}

func newColumns(reserved ...string) *columns {
	c := &columns{byKey: map[string]int{}, names: map[string]bool{}, nested: map[int]*columns{}}
	for _, r := range reserved {
		c.names[strings.ToLower(r)] = true
	}
	return c
}

// loadColumns reads the item columns of a struct from a table's schema; fields without ddb
// metadata are reserved names.
func loadColumns(s *deltatype.StructType, reserved ...string) (*columns, error) {
	c := newColumns(reserved...)
	for _, f := range s.Fields {
		if f.Name == Placeholder && f.Metadata[MetaPlaceholder] == true {
			c.placeholder = true
		}
		attr, aok := f.Metadata[MetaAttr].(string)
		kind, kok := f.Metadata[MetaKind].(string)
		c.names[strings.ToLower(f.Name)] = true
		if !aok || !kok {
			continue
		}
		i := len(c.fields)
		c.fields = append(c.fields, f)
		c.byKey[attr+"\x00"+kind] = i
		if kind == "m" {
			if f.Type.Struct == nil {
				return nil, fmt.Errorf("column %s has kind m but type %s", f.Name, f.Type)
			}
			n, err := loadColumns(f.Type.Struct)
			if err != nil {
				return nil, fmt.Errorf("in column %s: %w", f.Name, err)
			}
			c.nested[i] = n
		}
	}
	return c, nil
}

// structType renders the columns as a Delta struct.
func (c *columns) structType() *deltatype.StructType {
	out := &deltatype.StructType{Fields: make([]deltatype.StructField, 0, len(c.fields)+1)}
	if c.placeholder {
		out.Fields = append(out.Fields, deltatype.StructField{Name: Placeholder, Type: deltatype.Boolean, Nullable: true,
			Metadata: map[string]any{MetaPlaceholder: true}})
	}
	for i, f := range c.fields {
		if n := c.nested[i]; n != nil {
			f.Type = deltatype.DataType{Struct: n.structType()}
		}
		out.Fields = append(out.Fields, f)
	}
	return out
}

// grew reports whether a column was added at this level or below, and clears the mark.
func (c *columns) grew() bool {
	g := c.added
	c.added = false
	for _, n := range c.nested {
		if n.grew() {
			g = true
		}
	}
	return g
}

var badChars = strings.NewReplacer(" ", "_", ",", "_", ";", "_", "{", "_", "}", "_", "(", "_", ")", "_", "\n", "_", "\t", "_", "=", "_")

// column returns the index of the column of (attr, kind), adding it when missing.
func (c *columns) column(attr, kind string, typ deltatype.DataType) int {
	key := attr + "\x00" + kind
	if i, ok := c.byKey[key]; ok {
		return i
	}
	base := badChars.Replace(attr)
	if base == "" {
		base = "_"
	}
	name := base
	if c.names[strings.ToLower(name)] {
		name = base + "__" + kind
	}
	for n := 2; c.names[strings.ToLower(name)]; n++ {
		name = base + "__" + kind + "_" + strconv.Itoa(n)
	}
	c.names[strings.ToLower(name)] = true
	i := len(c.fields)
	c.fields = append(c.fields, deltatype.StructField{Name: name, Type: typ, Nullable: true,
		Metadata: map[string]any{MetaAttr: attr, MetaKind: kind}})
	c.byKey[key] = i
	if kind == "m" {
		c.nested[i] = newColumns()
	}
	c.added = true
	return i
}

// row converts an item to a struct value (column name → value), adding columns as needed.
func (c *columns) row(item map[string]types.AttributeValue, path string) (map[string]any, error) {
	out := make(map[string]any, len(item))
	attrs := make([]string, 0, len(item))
	for a := range item {
		attrs = append(attrs, a)
	}
	slices.Sort(attrs) // deterministic column order when several appear at once
	for _, a := range attrs {
		kind, typ, val, err := convert(item[a])
		if err != nil {
			return nil, fmt.Errorf("attribute %s%s: %w", path, a, err)
		}
		i := c.column(a, kind, typ)
		if kind == "m" {
			if val, err = c.nested[i].row(item[a].(*types.AttributeValueMemberM).Value, path+a+"."); err != nil {
				return nil, err
			}
		}
		out[c.fields[i].Name] = val
	}
	if len(c.fields) == 0 && !c.placeholder { // an empty map, and no attribute seen here yet
		c.placeholder, c.added = true, true
		c.names[strings.ToLower(Placeholder)] = true
	}
	return out, nil
}

// convert returns a value's kind, its column type and its Go value (nil for M: the caller
// recurses).
func convert(v types.AttributeValue) (string, deltatype.DataType, any, error) {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return "s", deltatype.String, v.Value, nil
	case *types.AttributeValueMemberN:
		n, err := ddbavro.ParseNumber(v.Value)
		if err != nil {
			return "", deltatype.DataType{}, nil, err
		}
		if i, ok := n.Int64(); ok {
			return "n", deltatype.Long, i, nil
		}
		if d, ok := n.Decimal(); ok {
			return "decimal", deltatype.Decimal38, d, nil
		}
		return "number", deltatype.String, n.String(), nil
	case *types.AttributeValueMemberB:
		return "b", deltatype.Binary, v.Value, nil
	case *types.AttributeValueMemberBOOL:
		return "bool", deltatype.Boolean, v.Value, nil
	case *types.AttributeValueMemberNULL:
		return "null", deltatype.Boolean, true, nil
	case *types.AttributeValueMemberSS:
		out := make([]any, len(v.Value))
		for i, s := range v.Value {
			out[i] = s
		}
		return "ss", deltatype.ArrayOf(deltatype.String), out, nil
	case *types.AttributeValueMemberNS:
		out := make([]any, len(v.Value))
		for i, s := range v.Value {
			c, err := ddbavro.CanonicalNumber(s)
			if err != nil {
				return "", deltatype.DataType{}, nil, err
			}
			out[i] = c
		}
		slices.SortFunc(out, func(a, b any) int { return compareNumbers(a.(string), b.(string)) })
		return "ns", deltatype.ArrayOf(deltatype.String), out, nil
	case *types.AttributeValueMemberBS:
		out := make([]any, len(v.Value))
		for i, b := range v.Value {
			out[i] = b
		}
		return "bs", deltatype.ArrayOf(deltatype.Binary), out, nil
	case *types.AttributeValueMemberL:
		s, err := ddbavro.MarshalDynamoJSON(v)
		if err != nil {
			return "", deltatype.DataType{}, nil, err
		}
		return "l", deltatype.String, s, nil
	case *types.AttributeValueMemberM:
		return "m", deltatype.StructOf(), nil, nil
	case nil:
		return "", deltatype.DataType{}, nil, fmt.Errorf("no value")
	}
	return "", deltatype.DataType{}, nil, fmt.Errorf("unsupported attribute value %T", v)
}

// compareNumbers orders canonical number texts by value.
func compareNumbers(a, b string) int {
	x, _ := new(big.Float).SetPrec(512).SetString(a)
	y, _ := new(big.Float).SetPrec(512).SetString(b)
	if x == nil || y == nil {
		return strings.Compare(a, b)
	}
	return x.Cmp(y)
}

// KeyString renders a record key as the _key column: a JSON array of [type, value] pairs, the
// partition key first, numbers canonical and binary in base64. Unambiguous, and equal keys give
// equal strings.
func KeyString(k avrov1.Key) (string, error) {
	parts := []avrov1.KeyAttribute{k.PartitionKey}
	if k.SortKey != nil {
		parts = append(parts, *k.SortKey)
	}
	out := make([][2]string, 0, 2)
	for _, p := range parts {
		switch {
		case p.S != nil:
			out = append(out, [2]string{"S", *p.S})
		case p.N != nil:
			c, err := ddbavro.CanonicalNumber(*p.N)
			if err != nil {
				return "", fmt.Errorf("key attribute %s: %w", p.Name, err)
			}
			out = append(out, [2]string{"N", c})
		case p.B != nil:
			out = append(out, [2]string{"B", base64.StdEncoding.EncodeToString(*p.B)})
		default:
			return "", fmt.Errorf("key attribute %s has no value", p.Name)
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}
