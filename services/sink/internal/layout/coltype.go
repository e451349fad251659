package layout

// Column types of the typed layout (package coltype's grammar): what an attribute's column holds,
// chosen by a schema hint or by the DynamoDB type of the attribute's values, and how a value is
// put in it (or rescued when it does not fit).

import (
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/platform/coltype"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// ColType is a column's type (coltype.Type).
type ColType = coltype.Type

// The column type kinds.
const (
	TString  = coltype.TString
	TBoolean = coltype.TBoolean
	TBinary  = coltype.TBinary
	TLong    = coltype.TLong
	TInt     = coltype.TInt
	TDouble  = coltype.TDouble
	TDecimal = coltype.TDecimal
	TJSON    = coltype.TJSON
	TArray   = coltype.TArray
	TSet     = coltype.TSet
	TStruct  = coltype.TStruct
)

var defaultNumber = coltype.DefaultNumber

// ParseType parses a schema hint's type (coltype.Parse).
func ParseType(s string) (ColType, error) { return coltype.Parse(s) }

// delta returns the Delta type of a non-struct column.
func deltaOf(t ColType) deltatype.DataType {
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
		return deltatype.ArrayOf(deltaOf(*t.Elem))
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

// valueOf converts v to the column's Go value; ok is false when v does not fit the column exactly
// (it is then rescued). Struct columns are filled by the caller. err reports a malformed number.
func valueOf(t ColType, v types.AttributeValue) (out any, ok bool, err error) {
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
			return number(t, n.Value)
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
			x, fits, err := valueOf(*t.Elem, e)
			if err != nil || !fits {
				return nil, false, err
			}
			out[i] = x
		}
		return out, true, nil
	case TSet:
		return set(t, v)
	}
	return nil, false, nil
}

// number converts number text to a numeric column's value, when it fits exactly.
func number(t ColType, text string) (any, bool, error) {
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
func set(t ColType, v types.AttributeValue) (any, bool, error) {
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
			x, fits, err := number(*t.Elem, n.String())
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

// attributeOf converts a column's Go value back to the DynamoDB value it came from (valueOf's
// inverse).
func attributeOf(t ColType, v any) (types.AttributeValue, error) {
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
		text, err := numberText(t, v)
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
			e, err := attributeOf(*t.Elem, x)
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
			text, err := numberText(*t.Elem, x)
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
func numberText(t ColType, v any) (string, error) {
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
