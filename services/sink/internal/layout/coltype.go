package layout

// Column types of the typed layout: what an attribute's column holds, chosen by a schema hint or
// by the DynamoDB type of the attribute's values, and how a value is put in it (or rescued when it
// does not fit).

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
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

// ColType is a column's type in the typed layout.
type ColType struct {
	Kind      string
	Precision int      // TDecimal
	Scale     int      // TDecimal
	Elem      *ColType // TArray, TSet
}

// The default number column: exact for every integer of up to 20 digits and every fraction of up
// to 18 places (Spark's choice for unbounded decimals); other numbers are rescued.
var defaultNumber = ColType{Kind: TDecimal, Precision: 38, Scale: 18}

var decimalType = regexp.MustCompile(`^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$`)

// scalarNames are the accepted spellings of the scalar kinds (Spark's aliases too).
var scalarNames = map[string]string{
	"string": TString, "boolean": TBoolean, "bool": TBoolean, "binary": TBinary,
	"long": TLong, "bigint": TLong, "int": TInt, "integer": TInt, "double": TDouble, "json": TJSON,
}

// ParseType parses a schema hint's type: string, boolean, binary, long, int, double,
// decimal(p,s), json, array<T> or set<T> (T a scalar type other than json).
func ParseType(s string) (ColType, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if k, ok := scalarNames[t]; ok {
		return ColType{Kind: k}, nil
	}
	if m := decimalType.FindStringSubmatch(t); m != nil {
		p, _ := strconv.Atoi(m[1])
		sc, _ := strconv.Atoi(m[2])
		if p < 1 || p > 38 || sc > p {
			return ColType{}, fmt.Errorf("type %q: a decimal's precision must be 1 to 38 and its scale 0 to the precision", s)
		}
		return ColType{Kind: TDecimal, Precision: p, Scale: sc}, nil
	}
	for _, k := range []string{TArray, TSet} {
		if inner, ok := strings.CutPrefix(t, k+"<"); ok && strings.HasSuffix(inner, ">") {
			e, err := ParseType(strings.TrimSuffix(inner, ">"))
			if err != nil {
				return ColType{}, fmt.Errorf("type %q: %w", s, err)
			}
			if e.Elem != nil || e.Kind == TJSON {
				return ColType{}, fmt.Errorf("type %q: elements must be string, boolean, binary, long, int, double or decimal(p,s)", s)
			}
			if k == TSet && e.Kind == TBoolean {
				return ColType{}, fmt.Errorf("type %q: DynamoDB sets hold strings, numbers or binary", s)
			}
			return ColType{Kind: k, Elem: &e}, nil
		}
	}
	if t == "struct" || strings.HasPrefix(t, "struct<") || strings.HasPrefix(t, "map<") {
		return ColType{}, fmt.Errorf("type %q: a map attribute is a struct by default; hint its attributes by path instead (address.zip: string)", s)
	}
	return ColType{}, fmt.Errorf("unknown type %q: use string, boolean, binary, long, int, double, decimal(p,s), json, array<T> or set<T>", s)
}

// String renders the type as a hint would spell it (canonical).
func (t ColType) String() string {
	switch t.Kind {
	case TDecimal:
		return fmt.Sprintf("decimal(%d,%d)", t.Precision, t.Scale)
	case TArray, TSet:
		return t.Kind + "<" + t.Elem.String() + ">"
	}
	return t.Kind
}

// delta returns the Delta type of a non-struct column.
func (t ColType) delta() deltatype.DataType {
	switch t.Kind {
	case TString, TJSON:
		return deltatype.String
	case TBoolean:
		return deltatype.Boolean
	case TBinary:
		return deltatype.Binary
	case TLong:
		return deltatype.Long
	case TInt:
		return deltatype.Integer
	case TDouble:
		return deltatype.Double
	case TDecimal:
		return deltatype.Decimal(t.Precision, t.Scale)
	case TArray, TSet:
		return deltatype.ArrayOf(t.Elem.delta())
	}
	return deltatype.StructOf()
}

// defaultType is the column type of an attribute first seen with value v and no hint; ok is false
// for NULL, which has no type (a NULL value is rescued).
func defaultType(v types.AttributeValue) (ColType, bool) {
	switch v.(type) {
	case *types.AttributeValueMemberS:
		return ColType{Kind: TString}, true
	case *types.AttributeValueMemberN:
		return defaultNumber, true
	case *types.AttributeValueMemberB:
		return ColType{Kind: TBinary}, true
	case *types.AttributeValueMemberBOOL:
		return ColType{Kind: TBoolean}, true
	case *types.AttributeValueMemberSS:
		return ColType{Kind: TSet, Elem: &ColType{Kind: TString}}, true
	case *types.AttributeValueMemberNS:
		return ColType{Kind: TSet, Elem: &defaultNumber}, true
	case *types.AttributeValueMemberBS:
		return ColType{Kind: TSet, Elem: &ColType{Kind: TBinary}}, true
	case *types.AttributeValueMemberL:
		return ColType{Kind: TJSON}, true
	case *types.AttributeValueMemberM:
		return ColType{Kind: TStruct}, true
	}
	return ColType{}, false
}

// value converts v to the column's Go value; ok is false when v does not fit the column exactly
// (it is then rescued). Struct columns are filled by the caller. err reports a malformed number.
func (t ColType) value(v types.AttributeValue) (out any, ok bool, err error) {
	switch t.Kind {
	case TString:
		if s, is := v.(*types.AttributeValueMemberS); is {
			return s.Value, true, nil
		}
	case TBoolean:
		if b, is := v.(*types.AttributeValueMemberBOOL); is {
			return b.Value, true, nil
		}
	case TBinary:
		if b, is := v.(*types.AttributeValueMemberB); is {
			return b.Value, true, nil
		}
	case TLong, TInt, TDouble, TDecimal:
		if n, is := v.(*types.AttributeValueMemberN); is {
			return t.number(n.Value)
		}
	case TJSON:
		b, fits, err := ddbavro.AppendPlainJSON(nil, v)
		if err != nil || !fits {
			return nil, false, err
		}
		return string(b), true, nil
	case TArray:
		l, is := v.(*types.AttributeValueMemberL)
		if !is {
			return nil, false, nil
		}
		out := make([]any, len(l.Value))
		for i, e := range l.Value {
			x, fits, err := t.Elem.value(e)
			if err != nil || !fits {
				return nil, false, err
			}
			out[i] = x
		}
		return out, true, nil
	case TSet:
		return t.set(v)
	}
	return nil, false, nil
}

// number converts number text to a numeric column's value, when it fits exactly.
func (t ColType) number(text string) (any, bool, error) {
	n, err := ddbavro.ParseNumber(text)
	if err != nil {
		return nil, false, err
	}
	switch t.Kind {
	case TLong:
		i, ok := n.Int64()
		return i, ok, nil
	case TInt:
		i, ok := n.Int64()
		if !ok || i < math.MinInt32 || i > math.MaxInt32 {
			return nil, false, nil
		}
		return int32(i), true, nil
	case TDouble:
		// Exact when the shortest text of the nearest double is the number itself.
		f, err := strconv.ParseFloat(n.String(), 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, false, nil
		}
		back, err := ddbavro.CanonicalNumber(strconv.FormatFloat(f, 'g', -1, 64))
		if err != nil || back != n.String() {
			return nil, false, nil
		}
		return f, true, nil
	case TDecimal:
		d, ok := n.DecimalAt(t.Precision, t.Scale)
		return d, ok, nil
	}
	return nil, false, nil
}

// set converts a DynamoDB set of the column's element kind, sorted (sets are unordered).
func (t ColType) set(v types.AttributeValue) (any, bool, error) {
	var out []any
	switch s := v.(type) {
	case *types.AttributeValueMemberSS:
		if t.Elem.Kind != TString {
			return nil, false, nil
		}
		sorted := slices.Clone(s.Value)
		slices.Sort(sorted)
		for _, x := range sorted {
			out = append(out, x)
		}
	case *types.AttributeValueMemberBS:
		if t.Elem.Kind != TBinary {
			return nil, false, nil
		}
		sorted := slices.Clone(s.Value)
		slices.SortFunc(sorted, func(a, b []byte) int { return strings.Compare(string(a), string(b)) })
		for _, x := range sorted {
			out = append(out, x)
		}
	case *types.AttributeValueMemberNS:
		switch t.Elem.Kind {
		case TLong, TInt, TDouble, TDecimal:
		default:
			return nil, false, nil
		}
		nums := make([]ddbavro.Number, len(s.Value))
		for i, x := range s.Value {
			n, err := ddbavro.ParseNumber(x)
			if err != nil {
				return nil, false, err
			}
			nums[i] = n
		}
		slices.SortFunc(nums, func(a, b ddbavro.Number) int { return compareNumbers(a.String(), b.String()) })
		for _, n := range nums {
			x, fits, err := t.Elem.number(n.String())
			if err != nil || !fits {
				return nil, false, err
			}
			out = append(out, x)
		}
	default:
		return nil, false, nil
	}
	return out, true, nil
}

// attribute converts a column's Go value back to the DynamoDB value it came from (value's
// inverse).
func (t ColType) attribute(v any) (types.AttributeValue, error) {
	bad := func() (types.AttributeValue, error) { return nil, fmt.Errorf("%T is not a %s value", v, t) }
	switch t.Kind {
	case TString:
		if s, ok := v.(string); ok {
			return &types.AttributeValueMemberS{Value: s}, nil
		}
	case TBoolean:
		if b, ok := v.(bool); ok {
			return &types.AttributeValueMemberBOOL{Value: b}, nil
		}
	case TBinary:
		if b, ok := v.([]byte); ok {
			return &types.AttributeValueMemberB{Value: b}, nil
		}
	case TLong, TInt, TDouble, TDecimal:
		text, err := t.numberText(v)
		if err != nil {
			return nil, err
		}
		return &types.AttributeValueMemberN{Value: text}, nil
	case TJSON:
		if s, ok := v.(string); ok {
			return ddbavro.FromPlainJSON(s)
		}
	case TArray:
		xs, ok := v.([]any)
		if !ok {
			return bad()
		}
		l := &types.AttributeValueMemberL{Value: make([]types.AttributeValue, len(xs))}
		for i, x := range xs {
			e, err := t.Elem.attribute(x)
			if err != nil {
				return nil, err
			}
			l.Value[i] = e
		}
		return l, nil
	case TSet:
		xs, ok := v.([]any)
		if !ok {
			return bad()
		}
		switch t.Elem.Kind {
		case TString:
			out := &types.AttributeValueMemberSS{}
			for _, x := range xs {
				s, ok := x.(string)
				if !ok {
					return bad()
				}
				out.Value = append(out.Value, s)
			}
			return out, nil
		case TBinary:
			out := &types.AttributeValueMemberBS{}
			for _, x := range xs {
				b, ok := x.([]byte)
				if !ok {
					return bad()
				}
				out.Value = append(out.Value, b)
			}
			return out, nil
		}
		out := &types.AttributeValueMemberNS{}
		for _, x := range xs {
			text, err := t.Elem.numberText(x)
			if err != nil {
				return nil, err
			}
			out.Value = append(out.Value, text)
		}
		return out, nil
	}
	return bad()
}

// numberText renders a numeric column's Go value as canonical DynamoDB number text.
func (t ColType) numberText(v any) (string, error) {
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10), nil
	case int32:
		return strconv.FormatInt(int64(x), 10), nil
	case float64:
		return ddbavro.CanonicalNumber(strconv.FormatFloat(x, 'g', -1, 64))
	case *big.Int:
		n, err := ddbavro.NumberFromDecimal(x, t.Scale)
		if err != nil {
			return "", err
		}
		return n.String(), nil
	}
	return "", fmt.Errorf("%T is not a %s value", v, t)
}
