// Package coltype is the grammar of a Delta column type as ddb2delta's schema hints spell it
// (string, long, decimal(12,2), array<string>, set<long>, json, …): the sink's tables are typed
// by it, and the enricher declares its projection's columns in it.
package coltype

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Column type kinds.
const (
	TString  = "string"
	TBoolean = "boolean"
	TBinary  = "binary"
	TLong    = "long"
	TInt     = "int"
	TDouble  = "double"
	TDecimal = "decimal"
	TJSON    = "json"   // JSON text of the value (a string column)
	TArray   = "array"  // a list (L) whose elements all fit Elem
	TSet     = "set"    // a set (SS, NS, BS), written as an array, sorted
	TStruct  = "struct" // a map (M): one field per attribute
)

// Type is a column's type.
type Type struct {
	Kind      string
	Precision int   // TDecimal
	Scale     int   // TDecimal
	Elem      *Type // TArray, TSet
}

// The default number column: exact for every integer of up to 20 digits and every fraction of up
// to 18 places (Spark's choice for unbounded decimals); other numbers are rescued.
var DefaultNumber = Type{Kind: TDecimal, Precision: 38, Scale: 18}

var decimalType = regexp.MustCompile(`^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$`)

// scalarNames are the accepted spellings of the scalar kinds (Spark's aliases too).
var scalarNames = map[string]string{
	"string": TString, "boolean": TBoolean, "bool": TBoolean, "binary": TBinary,
	"long": TLong, "bigint": TLong, "int": TInt, "integer": TInt, "double": TDouble, "json": TJSON,
}

// Parse parses a schema hint's type: string, boolean, binary, long, int, double,
// decimal(p,s), json, array<T> or set<T> (T a scalar type other than json).
func Parse(s string) (Type, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if k, ok := scalarNames[t]; ok {
		return Type{Kind: k}, nil
	}
	if m := decimalType.FindStringSubmatch(t); m != nil {
		p, _ := strconv.Atoi(m[1])
		sc, _ := strconv.Atoi(m[2])
		if p < 1 || p > 38 || sc > p {
			return Type{}, fmt.Errorf("type %q: a decimal's precision must be 1 to 38 and its scale 0 to the precision", s)
		}
		return Type{Kind: TDecimal, Precision: p, Scale: sc}, nil
	}
	for _, k := range []string{TArray, TSet} {
		if inner, ok := strings.CutPrefix(t, k+"<"); ok && strings.HasSuffix(inner, ">") {
			e, err := Parse(strings.TrimSuffix(inner, ">"))
			if err != nil {
				return Type{}, fmt.Errorf("type %q: %w", s, err)
			}
			if e.Elem != nil || e.Kind == TJSON {
				return Type{}, fmt.Errorf("type %q: elements must be string, boolean, binary, long, int, double or decimal(p,s)", s)
			}
			if k == TSet && e.Kind == TBoolean {
				return Type{}, fmt.Errorf("type %q: DynamoDB sets hold strings, numbers or binary", s)
			}
			return Type{Kind: k, Elem: &e}, nil
		}
	}
	if t == "struct" || strings.HasPrefix(t, "struct<") || strings.HasPrefix(t, "map<") {
		return Type{}, fmt.Errorf("type %q: a map attribute is a struct by default; hint its attributes by path instead (address.zip: string)", s)
	}
	return Type{}, fmt.Errorf("unknown type %q: use string, boolean, binary, long, int, double, decimal(p,s), json, array<T> or set<T>", s)
}

// String renders the type as a hint would spell it (canonical).
func (t Type) String() string {
	switch t.Kind {
	case TDecimal:
		return fmt.Sprintf("decimal(%d,%d)", t.Precision, t.Scale)
	case TArray, TSet:
		return t.Kind + "<" + t.Elem.String() + ">"
	}
	return t.Kind
}

// DynamoKind is the DynamoDB type whose values the column holds: S, N, B, BOOL, L, SS, NS, BS or M;
// "" for json, which holds values of any type but binary and sets.
func (t Type) DynamoKind() string {
	switch t.Kind {
	case TString:
		return "S"
	case TBoolean:
		return "BOOL"
	case TBinary:
		return "B"
	case TLong, TInt, TDouble, TDecimal:
		return "N"
	case TArray:
		return "L"
	case TSet:
		switch t.Elem.Kind {
		case TString:
			return "SS"
		case TBinary:
			return "BS"
		}
		return "NS"
	case TStruct:
		return "M"
	}
	return ""
}
