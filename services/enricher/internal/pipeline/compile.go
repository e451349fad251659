// Package pipeline is the enricher's work: it turns a batch of input records into output
// records (enriched events and dead letters), pipeline by pipeline: filter, joins, projection,
// key, Avro encoding. The transaction around a batch is the runner's (package run).
package pipeline

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/cel-go/cel"
	celtypes "github.com/google/cel-go/common/types"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/expr"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/globaltable"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/lookup"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/platform/coltype"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// Source answers a join's key requests.
type Source interface {
	// Resolve returns the items found by request Match, and the requests refused as invalid.
	Resolve(ctx context.Context, reqs []lookup.Request) (found map[string]map[string]types.AttributeValue, bad map[string]error, err error)
	// KeyNames are the right side's key attributes, sorted (nil: not known yet).
	KeyNames() []string
	// Check returns why a key cannot be looked up, or nil.
	Check(key map[string]types.AttributeValue) error
}

// Global adapts a global table to Source.
type Global struct{ T *globaltable.Table }

// Resolve reads each key from the local store.
func (g Global) Resolve(_ context.Context, reqs []lookup.Request) (map[string]map[string]types.AttributeValue, map[string]error, error) {
	out := map[string]map[string]types.AttributeValue{}
	for _, r := range reqs {
		item, ok, err := g.T.Get(r.Match)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			out[string(r.Match)] = item
		}
	}
	return out, nil, nil
}

// KeyNames implements Source.
func (g Global) KeyNames() []string { return g.T.KeyNames() }

// Check implements Source: any key can be asked of a local table.
func (g Global) Check(map[string]types.AttributeValue) error { return nil }

// Looked adapts a DynamoDB lookup to Source.
type Looked struct{ L *lookup.Lookup }

// Resolve implements Source.
func (l Looked) Resolve(ctx context.Context, reqs []lookup.Request) (map[string]map[string]types.AttributeValue, map[string]error, error) {
	return l.L.Resolve(ctx, reqs)
}

// KeyNames implements Source.
func (l Looked) KeyNames() []string { return l.L.KeyNames }

// Check implements Source.
func (l Looked) Check(key map[string]types.AttributeValue) error { return l.L.Check(key) }

// compiled is one pipeline ready to run.
type compiled struct {
	name             string
	output           string
	filter           *expr.Program
	filterAfterJoins bool
	joins            []*join
	fields           []*field // empty: the input's images pass unchanged
	key              []*field // empty: the input's key
	enc              *serde.TableEncoder
	refs             map[string]bool // the variables any of its expressions reads
}

type join struct {
	as     string
	inner  bool
	on     []*field // one per right-side key attribute
	source Source
	what   string // "global table customers", for messages
}

type field struct {
	name   string
	prog   *expr.Program
	kind   string // the DynamoDB kind the value must have; "" any
	column string // the Delta column type declared (a schema hint for the sink); "" none
}

// kindOf maps a projected field's declared type to a DynamoDB kind.
var kindOf = map[string]string{"string": "S", "number": "N", "bool": "BOOL", "bytes": "B", "list": "L", "map": "M",
	"string_set": "SS", "number_set": "NS", "any": ""}

// staticKind is the kind CEL's checked type implies, "" when it depends on the data.
func staticKind(t *cel.Type) string {
	switch {
	case t.IsExactType(cel.StringType):
		return "S"
	case t.IsExactType(cel.IntType), t.IsExactType(cel.UintType), t.IsExactType(cel.DoubleType):
		return "N"
	case t.IsExactType(cel.BoolType):
		return "BOOL"
	case t.IsExactType(cel.BytesType):
		return "B"
	case t.Kind() == celtypes.ListKind:
		return "L"
	case t.Kind() == celtypes.MapKind:
		return "M"
	}
	return ""
}

// Sources are the join sides by name.
type Sources struct {
	Global  map[string]Source
	Lookups map[string]Source
}

// compile checks and compiles one pipeline's expressions; every error names the pipeline, the
// expression and, for CEL errors, the line:column.
func compile(s *settings.Settings, p settings.Pipeline, src Sources) (*compiled, error) {
	var names []string
	for _, j := range p.Joins {
		names = append(names, j.As)
	}
	env, err := expr.NewEnv(names...)
	if err != nil {
		return nil, err
	}
	c := &compiled{name: p.Name, output: s.OutputTopic(p)}
	where := func(what string) string { return fmt.Sprintf("pipeline %s, %s", p.Name, what) }
	if p.Filter != "" {
		if c.filter, err = env.Compile(where("filter"), p.Filter, nil, cel.BoolType); err != nil {
			return nil, err
		}
		for _, n := range names {
			c.filterAfterJoins = c.filterAfterJoins || c.filter.Refs[n]
		}
	}
	for i, j := range p.Joins {
		cj := &join{as: j.As, inner: j.Type == "inner"}
		if j.GlobalTable != "" {
			cj.source, cj.what = src.Global[j.GlobalTable], "global table "+j.GlobalTable
		} else {
			cj.source, cj.what = src.Lookups[j.Lookup], "lookup "+j.Lookup
		}
		if cj.source == nil {
			return nil, fmt.Errorf("%s: %s is not defined", where("join "+j.As), cj.what)
		}
		if want := cj.source.KeyNames(); want != nil && !slices.Equal(want, slices.Sorted(maps.Keys(j.On))) {
			return nil, fmt.Errorf("%s: on names %v, but the key of %s is %v", where("join "+j.As), slices.Sorted(maps.Keys(j.On)), cj.what, want)
		}
		for _, attr := range slices.Sorted(maps.Keys(j.On)) {
			// An expression may use the joins before this one.
			prog, err := env.Compile(where(fmt.Sprintf("join %s, on %s", j.As, attr)), j.On[attr], nil, nil)
			if err != nil {
				return nil, err
			}
			for _, later := range names[i:] {
				if prog.Refs[later] {
					return nil, fmt.Errorf("%s: uses %s, which is not joined yet (joins run in order)", where(fmt.Sprintf("join %s, on %s", j.As, attr)), later)
				}
			}
			cj.on = append(cj.on, &field{name: attr, prog: prog})
		}
		c.joins = append(c.joins, cj)
	}
	if c.fields, err = compileFields(env, where, "projection", p.Projection); err != nil {
		return nil, err
	}
	if c.key, err = compileFields(env, where, "key", p.Key); err != nil {
		return nil, err
	}
	c.refs = map[string]bool{}
	progs := []*expr.Program{c.filter}
	for _, j := range c.joins {
		for _, f := range j.on {
			progs = append(progs, f.prog)
		}
	}
	for _, f := range append(c.fields, c.key...) {
		progs = append(progs, f.prog)
	}
	for _, p := range progs {
		if p != nil {
			maps.Copy(c.refs, p.Refs)
		}
	}
	for _, k := range c.key {
		if k.kind != "" && k.kind != "S" && k.kind != "N" && k.kind != "B" {
			return nil, fmt.Errorf("%s: a key attribute is a string, number or bytes, not %s", where("key "+k.name), k.kind)
		}
	}
	return c, nil
}

func compileFields(env *expr.Env, where func(string) string, what string, fields []settings.Field) ([]*field, error) {
	var out []*field
	for _, f := range fields {
		prog, err := env.Compile(where(what+" "+f.Name), f.Expr, nil, nil)
		if err != nil {
			return nil, err
		}
		kind, known := kindOf[f.Type]
		column := ""
		if !known && f.Type != "" {
			t, err := coltype.Parse(f.Type) // validated with the settings
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where(what+" "+f.Name), err)
			}
			kind, column = t.DynamoKind(), t.String()
		}
		if f.Type == "" {
			kind = staticKind(prog.Type)
		} else if sk := staticKind(prog.Type); sk != "" && kind != "" && sk != kind && (sk != "L" || kind != "SS" && kind != "NS") {
			return nil, fmt.Errorf("%s: %q is a %s, but the field declares %s", where(what+" "+f.Name), f.Expr, prog.Type, f.Type)
		}
		out = append(out, &field{name: f.Name, prog: prog, kind: kind, column: column})
	}
	return out, nil
}

// declared returns an item whose values have the kinds of the fields known up front, and the
// column types declared: declaring them registers the output schema before any event. Lists,
// maps and fields of type any are learnt from the values.
func declared(fields []*field) (map[string]types.AttributeValue, map[string]string) {
	item := map[string]types.AttributeValue{}
	columns := map[string]string{}
	for _, f := range fields {
		if f.column != "" {
			columns[f.name] = f.column
		}
		switch f.kind {
		case "S":
			item[f.name] = &types.AttributeValueMemberS{Value: ""}
		case "N":
			// Integers stay longs; other numbers are decimals, which hold integers too.
			n := "0.5"
			if f.prog.Type.IsExactType(cel.IntType) || f.prog.Type.IsExactType(cel.UintType) {
				n = "0"
			}
			item[f.name] = &types.AttributeValueMemberN{Value: n}
		case "BOOL":
			item[f.name] = &types.AttributeValueMemberBOOL{}
		case "B":
			item[f.name] = &types.AttributeValueMemberB{Value: []byte{0}}
		case "SS":
			item[f.name] = &types.AttributeValueMemberSS{Value: []string{""}}
		case "NS":
			item[f.name] = &types.AttributeValueMemberNS{Value: []string{"0.5"}}
		}
	}
	return item, columns
}

// permissive is a Source that accepts any key: for checking expressions before the real sources
// are ready.
type permissive struct{}

func (permissive) Resolve(context.Context, []lookup.Request) (map[string]map[string]types.AttributeValue, map[string]error, error) {
	return nil, nil, nil
}
func (permissive) KeyNames() []string                          { return nil }
func (permissive) Check(map[string]types.AttributeValue) error { return nil }

// Validate compiles every pipeline's expressions without any service: a configuration error is
// reported at start-up, before global tables are restored or DynamoDB is asked anything.
func Validate(s *settings.Settings) error {
	src := Sources{Global: map[string]Source{}, Lookups: map[string]Source{}}
	for _, g := range s.GlobalTables {
		src.Global[g.Name] = permissive{}
	}
	for _, l := range s.Lookups {
		src.Lookups[l.Name] = permissive{}
	}
	for _, p := range s.Pipelines {
		if _, err := compile(s, p, src); err != nil {
			return err
		}
	}
	return nil
}
