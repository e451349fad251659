package ddbavro

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
)

// maxDepth bounds nesting when decoding: DynamoDB allows 32 levels, so anything deeper is corrupt
// input, and the bound keeps hostile bytes from exhausting the stack.
const maxDepth = 64

// The fields of io.ddb2delta.dynamodb.AttributeValue, in schema order.
const (
	avS = iota
	avN
	avB
	avBOOL
	avNULL
	avSS
	avNS
	avBS
	avL
	avM
	avFields
)

// appendGeneric appends v in the lossless AttributeValue encoding. Map keys are written sorted, so
// one value always has one encoding. Errors carry the path below v; callers add v's own.
func appendGeneric(b []byte, v types.AttributeValue) ([]byte, error) {
	field, err := genericField(v, "")
	if err != nil {
		return nil, err
	}
	for range field {
		b = append(b, 0) // null branch of the fields before the set one
	}
	b = append(b, 2) // zig-zag 1: the non-null branch
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		b = appendString(b, v.Value)
	case *types.AttributeValueMemberN:
		n, err := ParseNumber(v.Value)
		if err != nil {
			return nil, err
		}
		b = appendString(b, n.String())
	case *types.AttributeValueMemberB:
		b = appendBytes(b, v.Value)
	case *types.AttributeValueMemberBOOL:
		b = appendBool(b, v.Value)
	case *types.AttributeValueMemberNULL:
		b = appendBool(b, v.Value)
	case *types.AttributeValueMemberSS:
		b = appendStringArray(b, v.Value)
	case *types.AttributeValueMemberNS:
		canon := make([]string, len(v.Value))
		for i, s := range v.Value {
			n, err := ParseNumber(s)
			if err != nil {
				return nil, inAttr("["+strconv.Itoa(i)+"]", err)
			}
			canon[i] = n.String()
		}
		b = appendStringArray(b, canon)
	case *types.AttributeValueMemberBS:
		if len(v.Value) > 0 {
			b = appendLong(b, int64(len(v.Value)))
			for _, x := range v.Value {
				b = appendBytes(b, x)
			}
		}
		b = append(b, 0)
	case *types.AttributeValueMemberL, *types.AttributeValueMemberM:
		text, err := marshalDynamoJSON(v)
		if err != nil {
			return nil, err
		}
		b = appendString(b, text)
	}
	for i := field + 1; i < avFields; i++ {
		b = append(b, 0)
	}
	return b, nil
}

func appendStringArray(b []byte, v []string) []byte {
	if len(v) > 0 {
		b = appendLong(b, int64(len(v)))
		for _, s := range v {
			b = appendString(b, s)
		}
	}
	return append(b, 0)
}

func genericField(v types.AttributeValue, path string) (int, error) {
	switch v.(type) {
	case *types.AttributeValueMemberS:
		return avS, nil
	case *types.AttributeValueMemberN:
		return avN, nil
	case *types.AttributeValueMemberB:
		return avB, nil
	case *types.AttributeValueMemberBOOL:
		return avBOOL, nil
	case *types.AttributeValueMemberNULL:
		return avNULL, nil
	case *types.AttributeValueMemberSS:
		return avSS, nil
	case *types.AttributeValueMemberNS:
		return avNS, nil
	case *types.AttributeValueMemberBS:
		return avBS, nil
	case *types.AttributeValueMemberL:
		return avL, nil
	case *types.AttributeValueMemberM:
		return avM, nil
	case nil:
		return 0, &attrError{path: path, err: errors.New("no value")}
	}
	return 0, &attrError{path: path, err: fmt.Errorf("unsupported attribute value type %T", v)}
}

// readGeneric decodes one AttributeValue.
func readGeneric(r *reader, depth int) types.AttributeValue {
	if depth > maxDepth {
		r.fail("nesting deeper than %d", maxDepth)
		return nil
	}
	var out types.AttributeValue
	set := 0
	for f := 0; f < avFields && r.err == nil; f++ {
		if r.unionIndex(2) == 0 {
			continue
		}
		set++
		switch f {
		case avS:
			out = &types.AttributeValueMemberS{Value: r.str()}
		case avN:
			s := r.str()
			n, err := ParseNumber(s)
			if err != nil {
				r.fail("%v", err)
			}
			out = &types.AttributeValueMemberN{Value: n.String()}
		case avB:
			out = &types.AttributeValueMemberB{Value: r.bytes()}
		case avBOOL:
			out = &types.AttributeValueMemberBOOL{Value: r.boolean()}
		case avNULL:
			out = &types.AttributeValueMemberNULL{Value: r.boolean()}
		case avSS, avNS:
			var vs []string
			for n := r.blockCount(); n > 0 && r.err == nil; n = r.blockCount() {
				for range n {
					vs = append(vs, r.str())
				}
			}
			if f == avSS {
				out = &types.AttributeValueMemberSS{Value: vs}
			} else {
				for i, s := range vs {
					n, err := ParseNumber(s)
					if err != nil {
						r.fail("%v", err)
					}
					vs[i] = n.String()
				}
				out = &types.AttributeValueMemberNS{Value: vs}
			}
		case avBS:
			var vs [][]byte
			for n := r.blockCount(); n > 0 && r.err == nil; n = r.blockCount() {
				for range n {
					vs = append(vs, r.bytes())
				}
			}
			out = &types.AttributeValueMemberBS{Value: vs}
		case avL, avM:
			v, err := unmarshalDynamoJSON(r.str(), f == avL, depth+1)
			if err != nil {
				r.fail("%v", err)
			}
			out = v
		}
	}
	if r.err == nil && set != 1 {
		r.fail("AttributeValue with %d fields set, want exactly 1", set)
	}
	return out
}

func readGenericMap(r *reader, depth int) map[string]types.AttributeValue {
	m := map[string]types.AttributeValue{}
	for n := r.blockCount(); n > 0 && r.err == nil; n = r.blockCount() {
		for range n {
			k := r.str()
			m[k] = readGeneric(r, depth)
		}
	}
	return m
}

// ToGenerated converts v to the generated AttributeValue struct (the document encoding's Go
// type), numbers in canonical text. path names v in errors.
func ToGenerated(v types.AttributeValue, path string) (avrov1.AttributeValue, error) {
	var out avrov1.AttributeValue
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		out.S = &v.Value
	case *types.AttributeValueMemberN:
		n, err := ParseNumber(v.Value)
		if err != nil {
			return out, &attrError{path: path, err: err}
		}
		s := n.String()
		out.N = &s
	case *types.AttributeValueMemberB:
		out.B = &v.Value
	case *types.AttributeValueMemberBOOL:
		out.Bool = &v.Value
	case *types.AttributeValueMemberNULL:
		out.Null = &v.Value
	case *types.AttributeValueMemberSS:
		out.Ss = &v.Value
	case *types.AttributeValueMemberNS:
		ns := make([]string, len(v.Value))
		for i, s := range v.Value {
			n, err := ParseNumber(s)
			if err != nil {
				return out, &attrError{path: fmt.Sprintf("%s[%d]", path, i), err: err}
			}
			ns[i] = n.String()
		}
		out.Ns = &ns
	case *types.AttributeValueMemberBS:
		out.Bs = &v.Value
	case *types.AttributeValueMemberL, *types.AttributeValueMemberM:
		text, err := marshalDynamoJSON(v)
		if err != nil {
			return out, inAttr(path, err)
		}
		if _, isList := v.(*types.AttributeValueMemberL); isList {
			out.L = &text
		} else {
			out.M = &text
		}
	default:
		_, err := genericField(v, path)
		return out, err
	}
	return out, nil
}

// ItemToGenerated converts an item (or map value) with ToGenerated; prefix starts attribute paths.
func ItemToGenerated(item map[string]types.AttributeValue, prefix string) (map[string]avrov1.AttributeValue, error) {
	out := make(map[string]avrov1.AttributeValue, len(item))
	for k, v := range item {
		g, err := ToGenerated(v, prefix+k)
		if err != nil {
			return nil, err
		}
		out[k] = g
	}
	return out, nil
}

// FromGenerated converts the generated struct back; exactly one field must be set.
func FromGenerated(g avrov1.AttributeValue, path string) (types.AttributeValue, error) {
	var out []types.AttributeValue
	if g.S != nil {
		out = append(out, &types.AttributeValueMemberS{Value: *g.S})
	}
	if g.N != nil {
		n, err := ParseNumber(*g.N)
		if err != nil {
			return nil, &attrError{path: path, err: err}
		}
		out = append(out, &types.AttributeValueMemberN{Value: n.String()})
	}
	if g.B != nil {
		out = append(out, &types.AttributeValueMemberB{Value: *g.B})
	}
	if g.Bool != nil {
		out = append(out, &types.AttributeValueMemberBOOL{Value: *g.Bool})
	}
	if g.Null != nil {
		out = append(out, &types.AttributeValueMemberNULL{Value: *g.Null})
	}
	if g.Ss != nil {
		out = append(out, &types.AttributeValueMemberSS{Value: *g.Ss})
	}
	if g.Ns != nil {
		ns := make([]string, len(*g.Ns))
		for i, s := range *g.Ns {
			n, err := ParseNumber(s)
			if err != nil {
				return nil, &attrError{path: fmt.Sprintf("%s[%d]", path, i), err: err}
			}
			ns[i] = n.String()
		}
		out = append(out, &types.AttributeValueMemberNS{Value: ns})
	}
	if g.Bs != nil {
		out = append(out, &types.AttributeValueMemberBS{Value: *g.Bs})
	}
	for _, nested := range []struct {
		text   *string
		asList bool
	}{{g.L, true}, {g.M, false}} {
		if nested.text == nil {
			continue
		}
		v, err := unmarshalDynamoJSON(*nested.text, nested.asList, 1)
		if err != nil {
			return nil, &attrError{path: path, err: err}
		}
		out = append(out, v)
	}
	if len(out) != 1 {
		return nil, fmt.Errorf("attribute %s: %d fields set, want exactly 1", path, len(out))
	}
	return out[0], nil
}

// ItemFromGenerated converts a generated map back with FromGenerated.
func ItemFromGenerated(m map[string]avrov1.AttributeValue, prefix string) (map[string]types.AttributeValue, error) {
	out := make(map[string]types.AttributeValue, len(m))
	for k, v := range m {
		a, err := FromGenerated(v, prefix+k)
		if err != nil {
			return nil, err
		}
		out[k] = a
	}
	return out, nil
}

// AppendItem appends item as an Avro map of the lossless AttributeValue encoding (the document
// encoding's image), keys sorted: one item has one encoding. For stores that keep items outside
// Kafka, e.g. the enricher's join tables.
func AppendItem(b []byte, item map[string]types.AttributeValue) ([]byte, error) {
	return appendGenericMap(b, item, "")
}

// ReadItem decodes an item written by AppendItem.
func ReadItem(data []byte) (map[string]types.AttributeValue, error) {
	r := &reader{b: data}
	m := readGenericMap(r, 1)
	if r.err == nil && r.off != len(r.b) {
		r.fail("%d bytes after the item", len(r.b)-r.off)
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}
