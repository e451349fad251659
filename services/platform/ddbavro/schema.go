package ddbavro

import (
	"encoding/json"
	"fmt"

	"github.com/hamba/avro/v2"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
)

var contracts = avrov1.MustParse()

// genericSchemaJSON is io.ddb2delta.dynamodb.AttributeValue as JSON, for embedding at its first use.
var genericSchemaJSON = mustJSON(SchemaJSON(contracts.AttributeValue))

// sourceSchemaJSON is io.ddb2delta.cdc.Source as JSON.
var sourceSchemaJSON = mustJSON(SchemaJSON(contracts.Source))

func mustJSON(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(fmt.Sprintf("ddbavro: contract schema is not JSON: %v", err))
	}
	return v
}

// SchemaJSON returns the full JSON of s, self-contained, with docs, defaults and properties: the
// text to register. (hamba/avro's String returns the Parsing Canonical Form, which drops defaults,
// so a schema registered from it would not resolve older records.)
func SchemaJSON(s avro.Schema) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("ddbavro: marshalling a parsed schema: %v", err)) // parsed schemas always marshal
	}
	return string(b)
}

// renderer writes a model as Avro schema JSON, defining each named type at its first use and
// referring to it by name afterwards, as Avro requires.
type renderer struct{ defined map[string]bool }

func (r *renderer) record(rec *record) any {
	if r.defined[rec.name] {
		return rec.name
	}
	r.defined[rec.name] = true
	fields := make([]any, 0, len(rec.fields))
	for _, f := range rec.fields {
		fj := map[string]any{"name": f.name, "type": r.union(f.typ), "default": nil}
		if f.attr != f.name {
			fj[propAttr] = f.attr
		}
		if f.column != "" {
			fj[propColumn] = f.column
		}
		fields = append(fields, fj)
	}
	return map[string]any{"type": "record", "name": rec.name, "fields": fields}
}

func (r *renderer) union(u *union) any {
	out := make([]any, len(u.branches))
	for i, b := range u.branches {
		out[i] = r.branch(b)
	}
	return out
}

func (r *renderer) branch(b *branch) any {
	switch b.kind {
	case kNull:
		return "null"
	case kBool:
		return "boolean"
	case kString:
		return "string"
	case kLong:
		return "long"
	case kBytes:
		return "bytes"
	case kDecimal:
		if r.defined[decimalName] {
			return decimalName
		}
		r.defined[decimalName] = true
		return map[string]any{"type": "fixed", "name": decimalName, "size": decimalSize,
			"logicalType": "decimal", "precision": decimalPrecision, "scale": decimalScale}
	case kArray:
		return map[string]any{"type": "array", "items": r.union(b.items), propType: b.ddb}
	case kRecord:
		return r.record(b.rec)
	}
	if r.defined[genericName] {
		return genericName
	}
	r.defined[genericName] = true
	return genericSchemaJSON
}

// EnvelopeSchema returns the typed encoding's change-event schema for this model: the ChangeEvent
// envelope of proto/avro/v1 with before and after of the model's item record.
func (m *Model) EnvelopeSchema() string {
	r := &renderer{defined: map[string]bool{}}
	item := r.record(m.item)
	env := map[string]any{
		"type": "record", "name": "ChangeEvent", "namespace": "io.ddb2delta.cdc",
		"doc": contracts.ChangeEvent.Doc(),
		"fields": []any{
			map[string]any{"name": "before", "type": []any{"null", item}, "default": nil},
			map[string]any{"name": "after", "type": []any{"null", m.item.name}, "default": nil},
			map[string]any{"name": "op", "type": "string"},
			map[string]any{"name": "ts_ms", "type": map[string]any{"type": "long", "logicalType": "timestamp-millis"}},
			map[string]any{"name": "source", "type": sourceSchemaJSON},
		},
	}
	out, err := json.Marshal(env)
	if err != nil {
		panic(fmt.Sprintf("ddbavro: rendering schema: %v", err)) // only maps, strings and numbers
	}
	return string(out)
}

// ModelFromEnvelope rebuilds the model from a typed change-event schema (one this package rendered,
// fetched back from the registry), so a restarted producer continues evolving from where the
// registry is, and a decoder knows what every branch means.
func ModelFromEnvelope(s avro.Schema) (*Model, error) {
	env, ok := s.(*avro.RecordSchema)
	if !ok || env.FullName() != "io.ddb2delta.cdc.ChangeEvent" {
		return nil, fmt.Errorf("schema is not a ddb2delta change event: %s", s.Type())
	}
	var before avro.Schema
	for _, f := range env.Fields() {
		if f.Name() == "before" {
			before = f.Type()
		}
	}
	u, ok := before.(*avro.UnionSchema)
	if !ok || len(u.Types()) != 2 {
		return nil, fmt.Errorf("change event's before field is not a union of null and an item record")
	}
	p := &parser{m: &Model{names: map[string]bool{}}, recs: map[string]*record{}}
	item, ok := deref(u.Types()[1]).(*avro.RecordSchema)
	if !ok {
		return nil, fmt.Errorf("change event's before field holds %s, not a record", u.Types()[1].Type())
	}
	if item.FullName() == genericName {
		return nil, fmt.Errorf("change event uses the document encoding, not the typed one")
	}
	rec, err := p.record(item)
	if err != nil {
		return nil, err
	}
	p.m.item = rec
	p.m.indexColumns()
	return p.m, nil
}

type parser struct {
	m    *Model
	recs map[string]*record
}

func deref(s avro.Schema) avro.Schema {
	if r, ok := s.(*avro.RefSchema); ok {
		return r.Schema()
	}
	return s
}

func (p *parser) record(rs *avro.RecordSchema) (*record, error) {
	if r := p.recs[rs.FullName()]; r != nil {
		return r, nil
	}
	r := &record{name: rs.FullName(), byAttr: map[string]*field{}, names: map[string]bool{}}
	p.recs[r.name] = r
	p.m.names[r.name] = true
	for _, f := range rs.Fields() {
		attr := f.Name()
		if a, ok := f.Prop(propAttr).(string); ok {
			attr = a
		}
		u, err := p.union(f.Type(), r.name+"."+f.Name())
		if err != nil {
			return nil, err
		}
		fl := &field{name: f.Name(), attr: attr, typ: u}
		fl.column, _ = f.Prop(propColumn).(string)
		r.fields = append(r.fields, fl)
		r.byAttr[attr] = fl
		r.names[fl.name] = true
	}
	return r, nil
}

func (p *parser) union(s avro.Schema, where string) (*union, error) {
	us, ok := s.(*avro.UnionSchema)
	if !ok || len(us.Types()) == 0 || us.Types()[0].Type() != avro.Null {
		return nil, fmt.Errorf("%s: not a union starting with null", where)
	}
	u := &union{}
	for _, t := range us.Types() {
		b, err := p.branch(deref(t), where)
		if err != nil {
			return nil, err
		}
		u.branches = append(u.branches, b)
	}
	return u, nil
}

func (p *parser) branch(s avro.Schema, where string) (*branch, error) {
	switch s := s.(type) {
	case *avro.NullSchema:
		return &branch{kind: kNull}, nil
	case *avro.PrimitiveSchema:
		if s.Logical() != nil {
			break
		}
		switch s.Type() {
		case avro.Boolean:
			return &branch{kind: kBool}, nil
		case avro.String:
			return &branch{kind: kString}, nil
		case avro.Long:
			return &branch{kind: kLong}, nil
		case avro.Bytes:
			return &branch{kind: kBytes}, nil
		}
	case *avro.FixedSchema:
		if s.FullName() == decimalName {
			return &branch{kind: kDecimal}, nil
		}
	case *avro.ArraySchema:
		ddb, _ := s.Prop(propType).(string)
		switch ddb {
		case "SS", "NS", "BS", "L":
		default:
			return nil, fmt.Errorf("%s: array without a valid %q property", where, propType)
		}
		items, err := p.union(s.Items(), where+"[]")
		if err != nil {
			return nil, err
		}
		return &branch{kind: kArray, ddb: ddb, items: items}, nil
	case *avro.RecordSchema:
		if s.FullName() == genericName {
			return &branch{kind: kGeneric}, nil
		}
		rec, err := p.record(s)
		if err != nil {
			return nil, err
		}
		return &branch{kind: kRecord, rec: rec}, nil
	}
	return nil, fmt.Errorf("%s: %s is not a branch of the typed encoding", where, s.Type())
}
