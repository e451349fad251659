package layout

// The typed layout (tables created by this version): one column per attribute, at the top level
// and inside maps, whose type comes from a schema hint or, without one, from the DynamoDB type of
// the attribute's values (coltype.go) — never from which value arrived first. A value that does
// not fit its column is kept exactly in the _rescued_data column, as DynamoDB JSON keyed by the
// attribute's path, so that a row with its rescued values folded back in is the item.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// Metadata keys of typed item columns (besides MetaAttr).
const (
	MetaType = "ddb.type" // the column type, as a hint spells it ("struct" for a map)
	MetaKey  = "ddb.key"  // "hash" or "range" for a key attribute's column
	// MetaRescued marks the _rescued_data column (an earlier version's table may have an
	// attribute of that name).
	MetaRescued = "ddb.rescued"
)

// ColRescued holds the values that do not fit their columns (typed layout): a JSON object from
// attribute path to the value as DynamoDB JSON, or null when every value fit.
const ColRescued = "_rescued_data"

// typedColumns are the item columns at one level of a typed table: the item, or a map.
type typedColumns struct {
	fields []*typedField
	byAttr map[string]*typedField
	names  map[string]bool // lower-cased names in use (including reserved ones)
	added  bool            // a column was added or changed here since the last grew
}

type typedField struct {
	attr   string
	name   string
	typ    ColType
	key    string        // MetaKey
	nested *typedColumns // TStruct
}

func newTypedColumns(reserved ...string) *typedColumns {
	c := &typedColumns{byAttr: map[string]*typedField{}, names: map[string]bool{}}
	for _, r := range reserved {
		c.names[strings.ToLower(r)] = true
	}
	return c
}

// loadTyped reads a typed table's item columns from a struct of its schema; fields without ddb
// metadata are reserved names.
func loadTyped(s *deltatype.StructType, reserved ...string) (*typedColumns, error) {
	c := newTypedColumns(reserved...)
	for _, f := range s.Fields {
		c.names[strings.ToLower(f.Name)] = true
		attr, aok := f.Metadata[MetaAttr].(string)
		spelled, tok := f.Metadata[MetaType].(string)
		if !aok || !tok {
			continue
		}
		tf := &typedField{attr: attr, name: f.Name}
		tf.key, _ = f.Metadata[MetaKey].(string)
		if spelled == TStruct {
			if f.Type.Struct == nil {
				return nil, fmt.Errorf("column %s is marked %s but has type %s", f.Name, TStruct, f.Type)
			}
			n, err := loadTyped(f.Type.Struct)
			if err != nil {
				return nil, fmt.Errorf("in column %s: %w", f.Name, err)
			}
			tf.typ, tf.nested = ColType{Kind: TStruct}, n
		} else {
			t, err := ParseType(spelled)
			if err != nil {
				return nil, fmt.Errorf("column %s: %w", f.Name, err)
			}
			if !deltaOf(t).Equal(f.Type) {
				return nil, fmt.Errorf("column %s is marked %s but has type %s", f.Name, spelled, f.Type)
			}
			tf.typ = t
		}
		c.fields = append(c.fields, tf)
		c.byAttr[attr] = tf
	}
	return c, nil
}

// applyHints adds the hinted columns missing at this level and below, and fails when a column
// exists with another type than its hint: a column's type never changes (its files hold values
// of that type).
func (c *typedColumns) applyHints(n *hintNode, path []string) error {
	if n == nil {
		return nil
	}
	for _, attr := range sortedKeys(n.children) {
		h := n.children[attr]
		p := append(slices.Clone(path), attr)
		want := ColType{Kind: TStruct}
		if h.typ != nil {
			want = *h.typ
		}
		f := c.byAttr[attr]
		if f == nil {
			f = c.add(attr, want)
		} else if f.typ.String() != want.String() {
			what := "is a map with hinted attributes"
			if h.typ != nil {
				what = "is hinted as " + want.String()
			}
			return fmt.Errorf("attribute %s %s, but the table's column %s has type %s: a column's type cannot change "+
				"(drop or correct the hint, or write a new table)", FormatPath(p), what, f.name, f.typ)
		}
		if f.nested != nil {
			if err := f.nested.applyHints(h, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// add creates the column of attr, named after it: characters Spark refuses in column names
// replaced by "_", and made unique without regard to case (Delta's rule) by a numeric suffix.
func (c *typedColumns) add(attr string, t ColType) *typedField {
	base := badChars.Replace(attr)
	if base == "" {
		base = "_"
	}
	name := base
	for n := 2; c.names[strings.ToLower(name)]; n++ {
		name = base + "__" + strconv.Itoa(n)
	}
	c.names[strings.ToLower(name)] = true
	f := &typedField{attr: attr, name: name, typ: t}
	if t.Kind == TStruct {
		f.nested = newTypedColumns()
	}
	c.fields = append(c.fields, f)
	c.byAttr[attr] = f
	c.added = true
	return f
}

// ordered returns the fields in table order: the hash key's column, the range key's, then the
// others by name. The order depends only on the set of columns, not on when each was added.
func (c *typedColumns) ordered() []*typedField {
	out := slices.Clone(c.fields)
	rank := func(f *typedField) int {
		switch f.key {
		case "hash":
			return 0
		case "range":
			return 1
		}
		return 2
	}
	slices.SortFunc(out, func(a, b *typedField) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

// structType renders the columns as a Delta struct.
func (c *typedColumns) structType() *deltatype.StructType {
	out := &deltatype.StructType{Fields: make([]deltatype.StructField, 0, len(c.fields))}
	for _, f := range c.ordered() {
		meta := map[string]any{MetaAttr: f.attr, MetaType: f.typ.String()}
		if f.key != "" {
			meta[MetaKey] = f.key
		}
		typ := deltaOf(f.typ)
		if f.nested != nil {
			typ = deltatype.DataType{Struct: f.nested.structType()}
		}
		out.Fields = append(out.Fields, deltatype.StructField{Name: f.name, Type: typ, Nullable: true, Metadata: meta})
	}
	return out
}

// grew reports whether a column was added or changed at this level or below, and clears the mark.
func (c *typedColumns) grew() bool {
	g := c.added
	c.added = false
	for _, f := range c.fields {
		if f.nested != nil && f.nested.grew() {
			g = true
		}
	}
	return g
}

// markKeys records which top-level columns hold the item's key attributes (they come first).
func (c *typedColumns) markKeys(hash, rng string) {
	for attr, role := range map[string]string{hash: "hash", rng: "range"} {
		if f := c.byAttr[attr]; attr != "" && f != nil && f.key == "" {
			f.key, c.added = role, true
		}
	}
}

// rescued collects the values that did not fit their columns, by attribute path, and the paths of
// values whose DynamoDB type is not their column's (an attribute of mixed types).
type rescued struct {
	values map[string]types.AttributeValue
	mixed  []string
}

func (r *rescued) add(path string, v types.AttributeValue) {
	if r.values == nil {
		r.values = map[string]types.AttributeValue{}
	}
	r.values[path] = v
}

// row converts an item (or a map at path) to a struct value, adding columns for new attributes
// and collecting in res the values that do not fit.
func (c *typedColumns) row(item map[string]types.AttributeValue, path []string, res *rescued) (map[string]any, error) {
	out := make(map[string]any, len(item))
	var missing []string // attributes without a column: added in name order, so that name clashes resolve alike
	for attr, v := range item {
		if c.byAttr[attr] == nil {
			missing = append(missing, attr)
			continue
		}
		if err := c.cell(out, attr, v, path, res); err != nil {
			return nil, err
		}
	}
	slices.Sort(missing)
	for _, attr := range missing {
		if err := c.cell(out, attr, item[attr], path, res); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// cell puts attribute attr's value v in out (its column's value) or in res (rescued), adding the
// attribute's column when it has none and v has a type.
func (c *typedColumns) cell(out map[string]any, attr string, v types.AttributeValue, path []string, res *rescued) error {
	at := func() string { return FormatPath(append(slices.Clone(path), attr)) }
	if _, isNull := v.(*types.AttributeValueMemberNULL); isNull {
		// NULL has no type: it reads as null in whatever column the attribute has, and is kept in
		// _rescued_data (whether or not the column exists yet, so that rows do not depend on the
		// order of arrival).
		res.add(at(), v)
		return nil
	}
	f := c.byAttr[attr]
	if f == nil {
		t, ok := defaultType(v)
		if m, isMap := v.(*types.AttributeValueMemberM); !ok || (isMap && len(m.Value) == 0) {
			// An empty map would make a struct without fields: kept in _rescued_data, and the
			// column is made by the first value that has one.
			res.add(at(), v)
			return nil
		}
		f = c.add(attr, t)
	}
	if f.nested != nil {
		m, isMap := v.(*types.AttributeValueMemberM)
		if !isMap || len(m.Value) == 0 {
			res.add(at(), v)
			if !isMap {
				res.mixed = append(res.mixed, at())
			}
			return nil
		}
		sub, err := f.nested.row(m.Value, append(slices.Clone(path), attr), res)
		if err != nil {
			return err
		}
		out[f.name] = sub
		return nil
	}
	x, fits, err := valueOf(f.typ, v)
	if err != nil {
		return fmt.Errorf("attribute %s: %w", at(), err)
	}
	if !fits {
		res.add(at(), v)
		if k := f.typ.DynamoKind(); k != "" && k != ddbavro.TypeName(v) {
			res.mixed = append(res.mixed, at())
		}
		return nil
	}
	out[f.name] = x
	return nil
}

// rescuedText renders rescued values as the _rescued_data column's JSON: path → DynamoDB JSON,
// keys sorted; nil when there are none.
func rescuedText(res map[string]types.AttributeValue) (any, error) {
	if len(res) == 0 {
		return nil, nil
	}
	b := []byte{'{'}
	for i, path := range sortedKeys(res) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(ddbavro.AppendJSONString(b, path), ':')
		v, err := ddbavro.MarshalDynamoJSON(res[path])
		if err != nil {
			return nil, fmt.Errorf("rescuing attribute %s: %w", path, err)
		}
		b = append(b, v...)
	}
	return string(append(b, '}')), nil
}

// ParseRescued reads a _rescued_data value back: attribute path → value.
func ParseRescued(text string) (map[string]types.AttributeValue, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &raw); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object: %w", ColRescued, err)
	}
	out := make(map[string]types.AttributeValue, len(raw))
	for path, v := range raw {
		av, err := ddbavro.UnmarshalDynamoJSON(string(v))
		if err != nil {
			return nil, fmt.Errorf("%s[%q]: %w", ColRescued, path, err)
		}
		out[path] = av
	}
	return out, nil
}

// Item rebuilds the DynamoDB item of a typed row (a mirror row, or a changelog image): each
// column's value converted back by its type, then the rescued values folded in. It is how the
// tests prove a row holds its item exactly, and how a reader can rebuild items.
func (l *Layout) Item(image map[string]any) (map[string]types.AttributeValue, error) {
	if l.typed == nil {
		return nil, fmt.Errorf("the table has the earlier layout: Item reads typed tables")
	}
	item, err := l.typed.item(image)
	if err != nil {
		return nil, err
	}
	text, _ := image[ColRescued].(string)
	if text == "" {
		return item, nil
	}
	res, err := ParseRescued(text)
	if err != nil {
		return nil, err
	}
	for _, p := range sortedKeys(res) {
		path, err := ParsePath(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ColRescued, err)
		}
		ddbavro.SetAtPath(item, path, res[p])
	}
	return item, nil
}

func (c *typedColumns) item(row map[string]any) (map[string]types.AttributeValue, error) {
	out := map[string]types.AttributeValue{}
	for _, f := range c.fields {
		v := row[f.name]
		if v == nil {
			continue
		}
		var av types.AttributeValue
		var err error
		if f.nested != nil {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("column %s: %T is not a struct", f.name, v)
			}
			var inner map[string]types.AttributeValue
			inner, err = f.nested.item(m)
			av = &types.AttributeValueMemberM{Value: inner}
		} else {
			av, err = attributeOf(f.typ, v)
		}
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", f.name, err)
		}
		out[f.attr] = av
	}
	return out, nil
}
