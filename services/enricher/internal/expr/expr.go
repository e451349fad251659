// Package expr compiles and evaluates the enricher's CEL expressions (filters and projected
// fields) over one change event.
//
// Variables: op (string: c, u, d, r), before and after (the item images, maps from attribute name
// to value; absent images are empty maps, so has(after.x) is false for a delete), key (the primary
// key attributes) and source (table, shard_id, sequence_number, approximate_creation_ms,
// event_id, stream_view_type, ttl_delete, snapshot). DynamoDB values map to CEL values: S string,
// N int when it is an integer within int64 and double otherwise, B bytes, BOOL bool, NULL null,
// SS/NS/BS and L lists, M maps. CEL's string, list and set extensions are available.
//
// Expressions are compiled and type-checked when the enricher starts: a syntax or type error, a
// filter that is not a bool, or an attribute of before/after that the input schema does not have,
// is reported naming the pipeline, the expression and the line:column.
package expr

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
)

// Env is the CEL environment of change events.
type Env struct {
	env *cel.Env
}

// NewEnv returns the environment; each join adds a variable of its name, the matched item (an
// empty map when a left join finds nothing). Optional field selection (after.?x.orValue(0)) is on.
func NewEnv(joins ...string) (*Env, error) {
	item := cel.MapType(cel.StringType, cel.DynType)
	opts := []cel.EnvOption{
		cel.Variable("op", cel.StringType),
		cel.Variable("before", item),
		cel.Variable("after", item),
		cel.Variable("item", item),
		cel.Variable("key", item),
		cel.Variable("source", item),
		cel.OptionalTypes(),
		ext.Strings(), ext.Lists(), ext.Sets(), ext.Math(), ext.Encoders(),
	}
	for _, j := range joins {
		opts = append(opts, cel.Variable(j, item))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, err
	}
	return &Env{env: env}, nil
}

// Schema is what is known of the input's items: the attribute names its schema declares. A nil
// Schema checks no attribute names (e.g. document-encoded topics, which have no item schema).
type Schema struct {
	Attributes []string
}

// Program is a compiled expression.
type Program struct {
	Where  string // e.g. pipeline orders, filter
	Source string
	// Type is the result's type as CEL checked it (dyn when it depends on the data).
	Type *cel.Type
	// Refs are the variables the expression reads.
	Refs map[string]bool
	// Copy is set when the expression is only a variable's attribute (after.total,
	// customer["tier"]): the value can then be copied as it is, every digit of a number kept.
	Copy *Attr
	prg  cel.Program
}

// Attr names one attribute of one variable.
type Attr struct{ Var, Name string }

// sourceFields are the fields of the source variable.
var sourceFields = []string{"table", "table_arn", "shard_id", "sequence_number", "approximate_creation_ms", "event_id",
	"stream_view_type", "ttl_delete", "snapshot"}

// Compile parses and checks src. where names it in errors ("pipeline orders, filter"); want is
// the type the result must have (nil: any).
func (e *Env) Compile(where, src string, schema *Schema, want *cel.Type) (*Program, error) {
	checked, iss := e.env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%s: %s", where, strings.ReplaceAll(iss.Err().Error(), "<input>:", ""))
	}
	if want != nil && !checked.OutputType().IsExactType(want) && !checked.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("%s: %q is %s, it must be %s", where, src, checked.OutputType(), want)
	}
	if err := checkNames(checked, schema); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	prg, err := e.env.Program(checked, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	native := checked.NativeRep()
	return &Program{Where: where, Source: src, Type: checked.OutputType(), Refs: refs(native.Expr()),
		Copy: copyOf(native.Expr()), prg: prg}, nil
}

// refs returns the identifiers an expression reads (comprehension variables included: they
// never collide with the event's names, which the environment declares).
func refs(x ast.Expr) map[string]bool {
	out := map[string]bool{}
	ast.PreOrderVisit(x, ast.NewExprVisitor(func(e ast.Expr) {
		if e.Kind() == ast.IdentKind {
			out[e.AsIdent()] = true
		}
	}))
	return out
}

// copyOf returns the attribute when x is v.name or v["name"] of an identifier v.
func copyOf(x ast.Expr) *Attr {
	switch x.Kind() {
	case ast.SelectKind:
		sel := x.AsSelect()
		if sel.Operand().Kind() == ast.IdentKind && !sel.IsTestOnly() {
			return &Attr{Var: sel.Operand().AsIdent(), Name: sel.FieldName()}
		}
	case ast.CallKind:
		c := x.AsCall()
		if c.FunctionName() == "_[_]" && len(c.Args()) == 2 && c.Args()[0].Kind() == ast.IdentKind && c.Args()[1].Kind() == ast.LiteralKind {
			if name, ok := c.Args()[1].AsLiteral().Value().(string); ok {
				return &Attr{Var: c.Args()[0].AsIdent(), Name: name}
			}
		}
	}
	return nil
}

// checkNames checks every before.x / after.x against the schema's attributes, and every source.x
// against the source fields.
func checkNames(checked *cel.Ast, schema *Schema) error {
	native := checked.NativeRep()
	var errs []error
	var walk func(ast.Expr)
	walk = func(x ast.Expr) {
		switch x.Kind() {
		case ast.SelectKind:
			sel := x.AsSelect()
			op := sel.Operand()
			if op.Kind() == ast.IdentKind {
				name, field := op.AsIdent(), sel.FieldName()
				loc := native.SourceInfo().GetStartLocation(x.ID())
				at := fmt.Sprintf("%d:%d", loc.Line(), loc.Column()+1)
				switch {
				case (name == "before" || name == "after" || name == "item") && schema != nil && !slices.Contains(schema.Attributes, field):
					errs = append(errs, fmt.Errorf("%s: %s.%s: the input schema has no attribute %q (it has %s)", at, name, field, field, strings.Join(schema.Attributes, ", ")))
				case name == "source" && !slices.Contains(sourceFields, field):
					errs = append(errs, fmt.Errorf("%s: source.%s: no such field (source has %s)", at, field, strings.Join(sourceFields, ", ")))
				}
			}
			walk(op)
		case ast.CallKind:
			c := x.AsCall()
			if c.IsMemberFunction() {
				walk(c.Target())
			}
			for _, a := range c.Args() {
				walk(a)
			}
		case ast.ListKind:
			for _, el := range x.AsList().Elements() {
				walk(el)
			}
		case ast.MapKind:
			for _, en := range x.AsMap().Entries() {
				walk(en.AsMapEntry().Key())
				walk(en.AsMapEntry().Value())
			}
		case ast.ComprehensionKind:
			c := x.AsComprehension()
			walk(c.IterRange())
			walk(c.AccuInit())
			walk(c.LoopCondition())
			walk(c.LoopStep())
			walk(c.Result())
		}
	}
	walk(native.Expr())
	return errors.Join(errs...)
}

// Eval evaluates the program on an event's variables (Vars).
func (p *Program) Eval(vars map[string]any) (ref.Val, error) {
	v, _, err := p.prg.Eval(vars)
	if err != nil {
		return nil, fmt.Errorf("%s: evaluating %q: %w", p.Where, p.Source, err)
	}
	return v, nil
}

// Bool evaluates a filter.
func (p *Program) Bool(vars map[string]any) (bool, error) {
	v, err := p.Eval(vars)
	if err != nil {
		return false, err
	}
	b, ok := v.Value().(bool)
	if !ok {
		return false, fmt.Errorf("%s: %q gave %v (%s), not a bool", p.Where, p.Source, v.Value(), v.Type())
	}
	return b, nil
}
