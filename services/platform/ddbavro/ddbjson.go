package ddbavro

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// DynamoDB JSON is the generic encoding's form for nested lists and maps: {"S":"x"}, {"N":"1.5"},
// {"B":"<base64>"}, {"L":[…]}, {"M":{…}}, … exactly as DynamoDB's own APIs write values. Map keys
// are written sorted and numbers in canonical text, so one value has one text.

// marshalDynamoJSON returns the DynamoDB JSON of v's list or map contents: a JSON array for L, an
// object for M.
func marshalDynamoJSON(v types.AttributeValue, path string) (string, error) {
	var tree any
	var err error
	switch v := v.(type) {
	case *types.AttributeValueMemberL:
		tree, err = jsonList(v.Value, path)
	case *types.AttributeValueMemberM:
		tree, err = jsonMap(v.Value, path+".")
	default:
		return "", &attrError{path: path, err: fmt.Errorf("internal error: %T is not a list or map", v)}
	}
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tree); err != nil {
		return "", &attrError{path: path, err: err}
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

func jsonList(l []types.AttributeValue, path string) ([]any, error) {
	out := make([]any, len(l))
	for i, x := range l {
		var err error
		if out[i], err = jsonValue(x, fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func jsonMap(m map[string]types.AttributeValue, prefix string) (map[string]any, error) {
	out := make(map[string]any, len(m))
	for k, x := range m {
		var err error
		if out[k], err = jsonValue(x, prefix+k); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func jsonValue(v types.AttributeValue, path string) (any, error) {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return map[string]any{"S": v.Value}, nil
	case *types.AttributeValueMemberN:
		n, err := ParseNumber(v.Value)
		if err != nil {
			return nil, &attrError{path: path, err: err}
		}
		return map[string]any{"N": n.String()}, nil
	case *types.AttributeValueMemberB:
		return map[string]any{"B": base64.StdEncoding.EncodeToString(v.Value)}, nil
	case *types.AttributeValueMemberBOOL:
		return map[string]any{"BOOL": v.Value}, nil
	case *types.AttributeValueMemberNULL:
		return map[string]any{"NULL": v.Value}, nil
	case *types.AttributeValueMemberSS:
		return map[string]any{"SS": v.Value}, nil
	case *types.AttributeValueMemberNS:
		ns := make([]string, len(v.Value))
		for i, s := range v.Value {
			n, err := ParseNumber(s)
			if err != nil {
				return nil, &attrError{path: fmt.Sprintf("%s[%d]", path, i), err: err}
			}
			ns[i] = n.String()
		}
		return map[string]any{"NS": ns}, nil
	case *types.AttributeValueMemberBS:
		bs := make([]string, len(v.Value))
		for i, b := range v.Value {
			bs[i] = base64.StdEncoding.EncodeToString(b)
		}
		return map[string]any{"BS": bs}, nil
	case *types.AttributeValueMemberL:
		l, err := jsonList(v.Value, path)
		return map[string]any{"L": l}, err
	case *types.AttributeValueMemberM:
		m, err := jsonMap(v.Value, path+".")
		return map[string]any{"M": m}, err
	}
	_, err := genericField(v, path)
	return nil, err
}

// unmarshalDynamoJSON parses the DynamoDB JSON of a list (asList) or map back into a value.
func unmarshalDynamoJSON(text string, asList bool, depth int) (types.AttributeValue, error) {
	d := json.NewDecoder(bytes.NewReader([]byte(text)))
	d.UseNumber()
	var tree any
	if err := d.Decode(&tree); err != nil {
		return nil, fmt.Errorf("%w: nested value is not JSON: %v", ErrMalformed, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: text after the nested value", ErrMalformed)
	}
	if asList {
		return fromJSONValue(map[string]any{"L": tree}, depth)
	}
	return fromJSONValue(map[string]any{"M": tree}, depth)
}

func fromJSONValue(tree any, depth int) (types.AttributeValue, error) {
	bad := func(format string, args ...any) (types.AttributeValue, error) {
		return nil, fmt.Errorf("%w: DynamoDB JSON: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if depth > maxDepth {
		return bad("nesting deeper than %d", maxDepth)
	}
	obj, ok := tree.(map[string]any)
	if !ok || len(obj) != 1 {
		return bad("a value must be an object with one type key, got %T", tree)
	}
	for typ, raw := range obj {
		switch typ {
		case "S":
			if s, ok := raw.(string); ok {
				return &types.AttributeValueMemberS{Value: s}, nil
			}
		case "N":
			if s, ok := raw.(string); ok {
				n, err := ParseNumber(s)
				if err != nil {
					return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
				}
				return &types.AttributeValueMemberN{Value: n.String()}, nil
			}
		case "B":
			if s, ok := raw.(string); ok {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return bad("B is not base64")
				}
				return &types.AttributeValueMemberB{Value: b}, nil
			}
		case "BOOL", "NULL":
			if b, ok := raw.(bool); ok {
				if typ == "BOOL" {
					return &types.AttributeValueMemberBOOL{Value: b}, nil
				}
				return &types.AttributeValueMemberNULL{Value: b}, nil
			}
		case "SS", "NS", "BS":
			items, ok := raw.([]any)
			if !ok {
				break
			}
			strs := make([]string, len(items))
			for i, it := range items {
				if strs[i], ok = it.(string); !ok {
					return bad("%s element %d is %T", typ, i, it)
				}
			}
			switch typ {
			case "SS":
				return &types.AttributeValueMemberSS{Value: strs}, nil
			case "NS":
				for i, s := range strs {
					n, err := ParseNumber(s)
					if err != nil {
						return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
					}
					strs[i] = n.String()
				}
				return &types.AttributeValueMemberNS{Value: strs}, nil
			}
			bs := make([][]byte, len(strs))
			for i, s := range strs {
				var err error
				if bs[i], err = base64.StdEncoding.DecodeString(s); err != nil {
					return bad("BS element %d is not base64", i)
				}
			}
			return &types.AttributeValueMemberBS{Value: bs}, nil
		case "L":
			items, ok := raw.([]any)
			if !ok {
				break
			}
			l := make([]types.AttributeValue, len(items))
			for i, it := range items {
				var err error
				if l[i], err = fromJSONValue(it, depth+1); err != nil {
					return nil, err
				}
			}
			return &types.AttributeValueMemberL{Value: l}, nil
		case "M":
			fields, ok := raw.(map[string]any)
			if !ok {
				break
			}
			m := make(map[string]types.AttributeValue, len(fields))
			for k, it := range fields {
				var err error
				if m[k], err = fromJSONValue(it, depth+1); err != nil {
					return nil, err
				}
			}
			return &types.AttributeValueMemberM{Value: m}, nil
		default:
			return bad("unknown type key %q", typ)
		}
		return bad("%s holds %T", typ, raw)
	}
	return bad("empty value") // not reached: len(obj) == 1
}
