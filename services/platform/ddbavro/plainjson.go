package ddbavro

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// AppendPlainJSON appends v as plain JSON: S a string, N a number (its exact canonical text), BOOL
// a boolean, NULL null, L an array, M an object with sorted keys: the JSON a reader expects, which
// FromPlainJSON turns back into the same value. fits is false when v holds a value plain JSON
// cannot tell apart from another (B, SS, NS, BS).
func AppendPlainJSON(b []byte, v types.AttributeValue) (out []byte, fits bool, err error) {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return appendJSONString(b, v.Value), true, nil
	case *types.AttributeValueMemberN:
		c, err := CanonicalNumber(v.Value)
		if err != nil {
			return nil, false, err
		}
		return append(b, c...), true, nil
	case *types.AttributeValueMemberBOOL:
		return strconv.AppendBool(b, v.Value), true, nil
	case *types.AttributeValueMemberNULL:
		return append(b, "null"...), true, nil
	case *types.AttributeValueMemberL:
		b = append(b, '[')
		for i, e := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			if b, fits, err = AppendPlainJSON(b, e); err != nil || !fits {
				return nil, false, err
			}
		}
		return append(b, ']'), true, nil
	case *types.AttributeValueMemberM:
		keys := make([]string, 0, len(v.Value))
		for k := range v.Value {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendJSONString(b, k), ':')
			if b, fits, err = AppendPlainJSON(b, v.Value[k]); err != nil || !fits {
				return nil, false, err
			}
		}
		return append(b, '}'), true, nil
	}
	return nil, false, nil
}

// FromPlainJSON parses plain JSON back into a DynamoDB value: AppendPlainJSON's inverse.
func FromPlainJSON(text string) (types.AttributeValue, error) {
	d := json.NewDecoder(strings.NewReader(text))
	d.UseNumber()
	var tree any
	if err := d.Decode(&tree); err != nil {
		return nil, fmt.Errorf("plain JSON: %w", err)
	}
	var conv func(x any) (types.AttributeValue, error)
	conv = func(x any) (types.AttributeValue, error) {
		switch x := x.(type) {
		case string:
			return &types.AttributeValueMemberS{Value: x}, nil
		case json.Number:
			c, err := CanonicalNumber(x.String())
			return &types.AttributeValueMemberN{Value: c}, err
		case bool:
			return &types.AttributeValueMemberBOOL{Value: x}, nil
		case nil:
			return &types.AttributeValueMemberNULL{Value: true}, nil
		case []any:
			l := &types.AttributeValueMemberL{Value: make([]types.AttributeValue, len(x))}
			for i, e := range x {
				v, err := conv(e)
				if err != nil {
					return nil, err
				}
				l.Value[i] = v
			}
			return l, nil
		case map[string]any:
			m := &types.AttributeValueMemberM{Value: make(map[string]types.AttributeValue, len(x))}
			for k, e := range x {
				v, err := conv(e)
				if err != nil {
					return nil, err
				}
				m.Value[k] = v
			}
			return m, nil
		}
		return nil, fmt.Errorf("plain JSON: unexpected %T", x)
	}
	return conv(tree)
}
