package main

// Rebuilding DynamoDB items from Delta rows as delta-rs prints them: typed tables (ddb.type
// columns and _rescued_data) and tables of the earlier layout (ddb.kind columns).

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// itemOf rebuilds the DynamoDB item of a row from the item columns (those whose metadata names
// an attribute, and its type (typed tables) or kind (an earlier version's)), then folds in the
// values of _rescued_data (typed tables), canonical.
func itemOf(fields []deltaField, row map[string]any) (map[string]types.AttributeValue, error) {
	item, err := columnsOf(fields, row)
	if err != nil {
		return nil, err
	}
	if text, ok := row["_rescued_data"].(string); ok && text != "" {
		var rescued map[string]json.RawMessage
		if err := json.Unmarshal([]byte(text), &rescued); err != nil {
			return nil, fmt.Errorf("_rescued_data: %w", err)
		}
		for p, raw := range rescued {
			v, err := ddbavro.UnmarshalDynamoJSON(string(raw))
			if err != nil {
				return nil, fmt.Errorf("_rescued_data[%q]: %w", p, err)
			}
			path, err := ddbavro.ParseAttributePath(p)
			if err != nil {
				return nil, err
			}
			ddbavro.SetAtPath(item, path, v)
		}
	}
	return ddbavro.CanonicalItem(item)
}

func columnsOf(fields []deltaField, row map[string]any) (map[string]types.AttributeValue, error) {
	item := map[string]types.AttributeValue{}
	for _, f := range fields {
		attr, _ := f.Metadata["ddb.attr"].(string)
		kind, _ := f.Metadata["ddb.kind"].(string)
		typ, typed := f.Metadata["ddb.type"].(string)
		v, ok := row[f.Name]
		if attr == "" || !ok || v == nil {
			continue
		}
		var av types.AttributeValue
		var err error
		if typed {
			av, err = typedValueOf(typ, f.Type, v)
		} else {
			av, err = valueOf(kind, f.Type, v)
		}
		if err != nil {
			return nil, fmt.Errorf("column %s (attribute %s, %s%s): %w", f.Name, attr, kind, typ, err)
		}
		item[attr] = av
	}
	return item, nil
}

// typedValueOf converts one value of a typed table's column (ddb.type spelled) back to a DynamoDB
// value, as delta-rs prints it.
func typedValueOf(spelled string, typ json.RawMessage, v any) (types.AttributeValue, error) {
	text := func() (string, error) { return textOf(v) }
	elems := func() (string, []any, error) {
		inner := spelled[strings.IndexByte(spelled, '<')+1 : len(spelled)-1]
		xs, ok := v.([]any)
		if !ok {
			return "", nil, fmt.Errorf("%T is not a list", v)
		}
		return inner, xs, nil
	}
	switch {
	case spelled == "struct":
		return structValue(typ, v, columnsOf)
	case spelled == "string":
		t, err := text()
		return &types.AttributeValueMemberS{Value: t}, err
	case spelled == "boolean":
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%T is not a bool", v)
		}
		return &types.AttributeValueMemberBOOL{Value: b}, nil
	case spelled == "binary":
		t, err := text()
		if err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(t)
		return &types.AttributeValueMemberB{Value: b}, err
	case spelled == "json":
		t, err := text()
		if err != nil {
			return nil, err
		}
		return ddbavro.FromPlainJSON(t)
	case spelled == "long", spelled == "int", spelled == "double", strings.HasPrefix(spelled, "decimal("):
		t, err := text()
		if err != nil {
			return nil, err
		}
		r, ok := new(big.Rat).SetString(t) // delta-rs prints a decimal with all its places
		if !ok {
			return nil, fmt.Errorf("number %q", t)
		}
		c, err := ddbavro.CanonicalNumber(r.FloatString(40))
		return &types.AttributeValueMemberN{Value: c}, err
	case strings.HasPrefix(spelled, "array<"):
		inner, xs, err := elems()
		if err != nil {
			return nil, err
		}
		l := &types.AttributeValueMemberL{}
		for _, x := range xs {
			e, err := typedValueOf(inner, nil, x)
			if err != nil {
				return nil, err
			}
			l.Value = append(l.Value, e)
		}
		return l, nil
	case strings.HasPrefix(spelled, "set<"):
		inner, xs, err := elems()
		if err != nil {
			return nil, err
		}
		var ss, ns []string
		var bs [][]byte
		for _, x := range xs {
			e, err := typedValueOf(inner, nil, x)
			if err != nil {
				return nil, err
			}
			switch e := e.(type) {
			case *types.AttributeValueMemberS:
				ss = append(ss, e.Value)
			case *types.AttributeValueMemberN:
				ns = append(ns, e.Value)
			case *types.AttributeValueMemberB:
				bs = append(bs, e.Value)
			}
		}
		switch {
		case ss != nil:
			return &types.AttributeValueMemberSS{Value: ss}, nil
		case ns != nil:
			return &types.AttributeValueMemberNS{Value: ns}, nil
		}
		return &types.AttributeValueMemberBS{Value: bs}, nil
	}
	return nil, fmt.Errorf("unknown column type %q", spelled)
}

// valueOf converts one column value back to a DynamoDB value.
func valueOf(kind string, typ json.RawMessage, v any) (types.AttributeValue, error) {
	str := func() (string, error) { return textOf(v) }
	list := func() ([]string, error) {
		xs, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%T is not a list", v)
		}
		out := make([]string, len(xs))
		for i, x := range xs {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("element %T is not text", x)
			}
			out[i] = s
		}
		return out, nil
	}
	unb64 := func(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
	switch kind {
	case "s":
		t, err := str()
		return &types.AttributeValueMemberS{Value: t}, err
	case "n", "decimal", "number":
		t, err := str()
		if err != nil {
			return nil, err
		}
		if kind == "decimal" { // delta-rs prints decimal(38,18) with its 18 places
			r, ok := new(big.Rat).SetString(t)
			if !ok {
				return nil, fmt.Errorf("decimal %q", t)
			}
			t = r.FloatString(18)
		}
		c, err := ddbavro.CanonicalNumber(t)
		return &types.AttributeValueMemberN{Value: c}, err
	case "b":
		t, err := str()
		if err != nil {
			return nil, err
		}
		b, err := unb64(t)
		return &types.AttributeValueMemberB{Value: b}, err
	case "bool":
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%T is not a bool", v)
		}
		return &types.AttributeValueMemberBOOL{Value: b}, nil
	case "null":
		return &types.AttributeValueMemberNULL{Value: true}, nil
	case "ss":
		l, err := list()
		return &types.AttributeValueMemberSS{Value: l}, err
	case "ns":
		l, err := list()
		return &types.AttributeValueMemberNS{Value: l}, err
	case "bs":
		l, err := list()
		if err != nil {
			return nil, err
		}
		out := make([][]byte, len(l))
		for i, s := range l {
			if out[i], err = unb64(s); err != nil {
				return nil, err
			}
		}
		return &types.AttributeValueMemberBS{Value: out}, nil
	case "l":
		t, err := str()
		return &types.AttributeValueMemberS{Value: "L:" + t}, err // compared as DynamoDB JSON text
	case "m":
		return structValue(typ, v, itemOf)
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// structValue converts a struct column's value (typ its Delta type) to a map, its fields by conv.
func structValue(typ json.RawMessage, v any, conv func([]deltaField, map[string]any) (map[string]types.AttributeValue, error)) (types.AttributeValue, error) {
	row, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%T is not a struct", v)
	}
	var st struct {
		Fields []deltaField `json:"fields"`
	}
	if err := json.Unmarshal(typ, &st); err != nil {
		return nil, fmt.Errorf("struct type: %w", err)
	}
	m, err := conv(st.Fields, row)
	return &types.AttributeValueMemberM{Value: m}, err
}

// textOf returns a text or number value as delta-rs prints it.
func textOf(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	}
	return "", fmt.Errorf("%T is not text", v)
}
