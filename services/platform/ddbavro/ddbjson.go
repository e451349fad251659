package ddbavro

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// DynamoDB JSON is the generic encoding's form for nested lists and maps: {"S":"x"}, {"N":"1.5"},
// {"B":"<base64>"}, {"L":[…]}, {"M":{…}}, … exactly as DynamoDB's own APIs write values. Map keys
// are written sorted and numbers in canonical text, so one value has one text.

// marshalDynamoJSON returns the DynamoDB JSON of v's list or map contents: a JSON array for L, an
// object for M. Errors carry the attribute path below v.
func marshalDynamoJSON(v types.AttributeValue) (string, error) {
	var out []byte
	var err error
	switch v := v.(type) {
	case *types.AttributeValueMemberL:
		out, err = appendJSONList(nil, v.Value, false)
	case *types.AttributeValueMemberM:
		out, err = appendJSONMap(nil, v.Value, false)
	default:
		return "", fmt.Errorf("internal error: %T is not a list or map", v)
	}
	return string(out), err
}

func appendJSONList(b []byte, l []types.AttributeValue, raw bool) ([]byte, error) {
	b = append(b, '[')
	var err error
	for i, x := range l {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendJSONValue(b, x, raw); err != nil {
			return nil, inAttr("["+strconv.Itoa(i)+"]", err)
		}
	}
	return append(b, ']'), nil
}

func appendJSONMap(b []byte, m map[string]types.AttributeValue, raw bool) ([]byte, error) {
	b = append(b, '{')
	var err error
	for i, k := range sortedAttrs(m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, k), ':')
		if b, err = appendJSONValue(b, m[k], raw); err != nil {
			return nil, inAttr("."+k, err)
		}
	}
	return append(b, '}'), nil
}

// appendJSONValue appends v's DynamoDB JSON. Numbers are checked and canonical unless raw, which
// writes them as received (for dead letters, which must keep even a malformed number).
func appendJSONValue(b []byte, v types.AttributeValue, raw bool) ([]byte, error) {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return append(appendJSONString(append(b, `{"S":`...), v.Value), '}'), nil
	case *types.AttributeValueMemberN:
		n, err := jsonNumber(v.Value, raw)
		if err != nil {
			return nil, err
		}
		return append(appendJSONString(append(b, `{"N":`...), n), '}'), nil
	case *types.AttributeValueMemberB:
		return append(appendJSONBase64(append(b, `{"B":`...), v.Value), '}'), nil
	case *types.AttributeValueMemberBOOL:
		return append(strconv.AppendBool(append(b, `{"BOOL":`...), v.Value), '}'), nil
	case *types.AttributeValueMemberNULL:
		return append(strconv.AppendBool(append(b, `{"NULL":`...), v.Value), '}'), nil
	case *types.AttributeValueMemberSS:
		b = append(b, `{"SS":[`...)
		for i, s := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		return append(b, "]}"...), nil
	case *types.AttributeValueMemberNS:
		b = append(b, `{"NS":[`...)
		for i, s := range v.Value {
			n, err := jsonNumber(s, raw)
			if err != nil {
				return nil, inAttr("["+strconv.Itoa(i)+"]", err)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, n)
		}
		return append(b, "]}"...), nil
	case *types.AttributeValueMemberBS:
		b = append(b, `{"BS":[`...)
		for i, x := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONBase64(b, x)
		}
		return append(b, "]}"...), nil
	case *types.AttributeValueMemberL:
		b, err := appendJSONList(append(b, `{"L":`...), v.Value, raw)
		if err != nil {
			return nil, err
		}
		return append(b, '}'), nil
	case *types.AttributeValueMemberM:
		b, err := appendJSONMap(append(b, `{"M":`...), v.Value, raw)
		if err != nil {
			return nil, err
		}
		return append(b, '}'), nil
	}
	_, err := genericField(v, "")
	return nil, err
}

func appendJSONBase64(b []byte, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendJSONString appends s as a JSON string, escaping what JSON requires (quote, backslash,
// control characters). DynamoDB strings are valid UTF-8, which JSON carries as is.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
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

// MarshalDynamoJSON returns the DynamoDB JSON of one value ({"S":"x"}, {"L":[…]}, …), with map
// keys sorted and numbers canonical: one value, one text.
func MarshalDynamoJSON(v types.AttributeValue) (string, error) {
	out, err := appendJSONValue(nil, v, false)
	return string(out), err
}

// UnmarshalDynamoJSON parses the DynamoDB JSON of one value: MarshalDynamoJSON's inverse.
func UnmarshalDynamoJSON(text string) (types.AttributeValue, error) {
	d := json.NewDecoder(bytes.NewReader([]byte(text)))
	d.UseNumber()
	var tree any
	if err := d.Decode(&tree); err != nil {
		return nil, fmt.Errorf("%w: value is not JSON: %v", ErrMalformed, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: text after the value", ErrMalformed)
	}
	return fromJSONValue(tree, 0)
}

// AppendRawItemJSON appends the DynamoDB JSON object of an item ({"a":{"S":"x"},…}, keys sorted),
// with numbers as received, unchecked: the form in which a dead letter keeps an item that could not
// be published. A nil item appends null.
func AppendRawItemJSON(b []byte, item map[string]types.AttributeValue) ([]byte, error) {
	if item == nil {
		return append(b, "null"...), nil
	}
	return appendJSONMap(b, item, true)
}

// AppendJSONString appends s as a JSON string.
func AppendJSONString(b []byte, s string) []byte { return appendJSONString(b, s) }

func jsonNumber(s string, raw bool) (string, error) {
	if raw {
		return s, nil
	}
	n, err := ParseNumber(s)
	if err != nil {
		return "", err
	}
	return n.String(), nil
}
