package expr

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	celtypes "github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// Attribute converts an expression's result to a DynamoDB value: string S, int/uint/double N,
// bool BOOL, bytes B, null NULL, list L, map (string keys) M, timestamp S (RFC 3339), duration S.
// An empty optional (after.?x of an absent x) gives ok=false: the attribute is left out. NaN and
// infinities are errors, as DynamoDB has no such numbers.
func Attribute(v ref.Val) (types.AttributeValue, bool, error) {
	switch v.Type() {
	case celtypes.OptionalType:
		o := v.(*celtypes.Optional)
		if !o.HasValue() {
			return nil, false, nil
		}
		return Attribute(o.GetValue())
	case celtypes.StringType:
		return &types.AttributeValueMemberS{Value: v.Value().(string)}, true, nil
	case celtypes.IntType:
		return &types.AttributeValueMemberN{Value: strconv.FormatInt(v.Value().(int64), 10)}, true, nil
	case celtypes.UintType:
		return &types.AttributeValueMemberN{Value: strconv.FormatUint(v.Value().(uint64), 10)}, true, nil
	case celtypes.DoubleType:
		f := v.Value().(float64)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, false, fmt.Errorf("%v is not a DynamoDB number", f)
		}
		return &types.AttributeValueMemberN{Value: strconv.FormatFloat(f, 'g', -1, 64)}, true, nil
	case celtypes.BoolType:
		return &types.AttributeValueMemberBOOL{Value: v.Value().(bool)}, true, nil
	case celtypes.BytesType:
		return &types.AttributeValueMemberB{Value: v.Value().([]byte)}, true, nil
	case celtypes.NullType:
		return &types.AttributeValueMemberNULL{Value: true}, true, nil
	case celtypes.TimestampType:
		return &types.AttributeValueMemberS{Value: v.Value().(time.Time).UTC().Format(time.RFC3339Nano)}, true, nil
	case celtypes.DurationType:
		return &types.AttributeValueMemberS{Value: v.Value().(time.Duration).String()}, true, nil
	case celtypes.ListType:
		l := v.(traits.Lister)
		n := int(l.Size().(celtypes.Int))
		out := make([]types.AttributeValue, 0, n)
		for i := range n {
			el, ok, err := Attribute(l.Get(celtypes.Int(i)))
			if err != nil {
				return nil, false, fmt.Errorf("[%d]: %w", i, err)
			}
			if ok {
				out = append(out, el)
			}
		}
		return &types.AttributeValueMemberL{Value: out}, true, nil
	case celtypes.MapType:
		m := v.(traits.Mapper)
		out := map[string]types.AttributeValue{}
		var keys []string
		for it := m.Iterator(); it.HasNext() == celtypes.True; {
			k := it.Next()
			s, ok := k.Value().(string)
			if !ok {
				return nil, false, fmt.Errorf("map key %v is a %s; DynamoDB map keys are strings", k.Value(), k.Type())
			}
			keys = append(keys, s)
		}
		sort.Strings(keys)
		for _, k := range keys {
			el, ok, err := Attribute(m.Get(celtypes.String(k)))
			if err != nil {
				return nil, false, fmt.Errorf("%s: %w", k, err)
			}
			if ok {
				out[k] = el
			}
		}
		return &types.AttributeValueMemberM{Value: out}, true, nil
	}
	return nil, false, fmt.Errorf("a %s (%v) has no DynamoDB type", v.Type().TypeName(), reflect.TypeOf(v.Value()))
}

// Kind is the DynamoDB type of v (S, N, B, BOOL, NULL, SS, NS, BS, L, M).
func Kind(v types.AttributeValue) string {
	if k := ddbavro.TypeName(v); k != "" {
		return k
	}
	return fmt.Sprintf("%T", v)
}
