package ddbavro

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// errEvolve is returned by the encoder when the model has no branch for a value: the caller
// evolves the model (a schema change) and encodes again. The hot path, a known shape, never
// evolves and makes a single pass.
var errEvolve = errors.New("model needs to evolve")

// appendItem appends item as the model's item record.
func (m *Model) appendItem(b []byte, item map[string]types.AttributeValue) ([]byte, error) {
	return appendRecord(b, m.item, item)
}

func appendRecord(b []byte, r *record, item map[string]types.AttributeValue) ([]byte, error) {
	if len(item) > len(r.fields) {
		return nil, errEvolve
	}
	seen := 0
	var err error
	for _, f := range r.fields {
		v, ok := item[f.attr]
		if !ok {
			b = append(b, 0) // null branch: absent
			continue
		}
		seen++
		if b, err = appendValue(b, f.typ, v); err != nil {
			return nil, inAttr(f.attr, err)
		}
	}
	if seen != len(item) {
		return nil, errEvolve // an attribute without a field
	}
	return b, nil
}

func appendValue(b []byte, u *union, v types.AttributeValue) ([]byte, error) {
	if nv, ok := v.(*types.AttributeValueMemberN); ok {
		return appendNumber(b, u, nv.Value)
	}
	br, _, err := u.choose(v)
	if err != nil {
		return nil, err
	}
	if br == nil {
		return nil, errEvolve
	}
	b = appendLong(b, int64(u.index(br)))
	switch br.kind {
	case kString:
		return appendString(b, v.(*types.AttributeValueMemberS).Value), nil
	case kBool:
		return appendBool(b, v.(*types.AttributeValueMemberBOOL).Value), nil
	case kBytes:
		return appendBytes(b, v.(*types.AttributeValueMemberB).Value), nil
	case kArray:
		return appendArray(b, br.items, v)
	case kRecord:
		b, err = appendRecord(b, br.rec, v.(*types.AttributeValueMemberM).Value)
		if err != nil {
			return nil, inAttr(".", err)
		}
		return b, nil
	case kGeneric:
		return appendGeneric(b, v)
	}
	return nil, fmt.Errorf("internal error: branch kind %d", br.kind)
}

// appendNumber writes a number to its narrowest existing branch, parsing it once.
func appendNumber(b []byte, u *union, text string) ([]byte, error) {
	br, _, err := u.chooseNumber(text)
	if err != nil {
		return nil, err
	}
	if br == nil {
		return nil, errEvolve
	}
	b = appendLong(b, int64(u.index(br)))
	if i, ok := smallInt(text); ok && br.kind == kLong {
		return appendLong(b, i), nil
	}
	n, err := ParseNumber(text)
	if err != nil {
		return nil, err
	}
	switch br.kind {
	case kLong:
		i, _ := n.Int64()
		return appendLong(b, i), nil
	case kDecimal:
		if out, ok := n.appendDecimal128(b); ok {
			return out, nil
		}
	}
	return appendGeneric(b, &types.AttributeValueMemberN{Value: text})
}

// appendArray writes a set or list as an Avro array of the items union; set elements are written
// straight from their Go values.
func appendArray(b []byte, items *union, v types.AttributeValue) ([]byte, error) {
	var n int
	switch v := v.(type) {
	case *types.AttributeValueMemberSS:
		n = len(v.Value)
	case *types.AttributeValueMemberNS:
		n = len(v.Value)
	case *types.AttributeValueMemberBS:
		n = len(v.Value)
	case *types.AttributeValueMemberL:
		n = len(v.Value)
	}
	if n == 0 {
		return append(b, 0), nil
	}
	b = appendLong(b, int64(n))
	var err error
	switch v := v.(type) {
	case *types.AttributeValueMemberSS:
		br := items.branchOf(kString)
		if br == nil {
			return nil, errEvolve
		}
		idx := int64(items.index(br))
		for _, s := range v.Value {
			b = appendString(appendLong(b, idx), s)
		}
	case *types.AttributeValueMemberBS:
		br := items.branchOf(kBytes)
		if br == nil {
			return nil, errEvolve
		}
		idx := int64(items.index(br))
		for _, x := range v.Value {
			b = appendBytes(appendLong(b, idx), x)
		}
	case *types.AttributeValueMemberNS:
		for i, s := range v.Value {
			if b, err = appendNumber(b, items, s); err != nil {
				return nil, inAttr("["+strconv.Itoa(i)+"]", err)
			}
		}
	case *types.AttributeValueMemberL:
		for i, x := range v.Value {
			if b, err = appendValue(b, items, x); err != nil {
				return nil, inAttr("["+strconv.Itoa(i)+"]", err)
			}
		}
	}
	return append(b, 0), nil
}

// readItem decodes an item written with this model (the writer's).
func (m *Model) readItem(r *reader) map[string]types.AttributeValue {
	return readRecord(r, m.item, 0)
}

func readRecord(r *reader, rec *record, depth int) map[string]types.AttributeValue {
	item := make(map[string]types.AttributeValue, len(rec.fields))
	for _, f := range rec.fields {
		if v := readValue(r, f.typ, depth); v != nil {
			item[f.attr] = v
		}
		if r.err != nil {
			return nil
		}
	}
	return item
}

// readValue decodes one union; nil means the null branch (attribute absent).
func readValue(r *reader, u *union, depth int) types.AttributeValue {
	if depth > maxDepth {
		r.fail("nesting deeper than %d", maxDepth)
		return nil
	}
	br := u.branches[r.unionIndex(len(u.branches))]
	if r.err != nil {
		return nil
	}
	switch br.kind {
	case kNull:
		return nil
	case kString:
		return &types.AttributeValueMemberS{Value: r.str()}
	case kBool:
		return &types.AttributeValueMemberBOOL{Value: r.boolean()}
	case kBytes:
		return &types.AttributeValueMemberB{Value: r.bytes()}
	case kLong:
		return &types.AttributeValueMemberN{Value: NumberFromInt64(r.long()).String()}
	case kDecimal:
		raw := r.fixed(decimalSize)
		if raw == nil {
			return nil
		}
		return &types.AttributeValueMemberN{Value: numberFromDecimal128(raw, decimalScale).String()}
	case kArray:
		return readArray(r, br, depth)
	case kRecord:
		return &types.AttributeValueMemberM{Value: readRecord(r, br.rec, depth+1)}
	case kGeneric:
		return readGeneric(r, depth+1)
	}
	r.fail("branch kind %d", br.kind)
	return nil
}

func readArray(r *reader, br *branch, depth int) types.AttributeValue {
	var elems []types.AttributeValue
	for n := r.blockCount(); n > 0 && r.err == nil; n = r.blockCount() {
		for range n {
			elems = append(elems, readValue(r, br.items, depth+1))
		}
	}
	if r.err != nil {
		return nil
	}
	switch br.ddb {
	case "L":
		out := make([]types.AttributeValue, len(elems))
		for i, e := range elems {
			if e == nil {
				r.fail("list element %d is null", i)
				return nil
			}
			out[i] = e
		}
		return &types.AttributeValueMemberL{Value: out}
	case "SS":
		out := make([]string, len(elems))
		for i, e := range elems {
			s, ok := e.(*types.AttributeValueMemberS)
			if !ok {
				r.fail("string set element %d is %T", i, e)
				return nil
			}
			out[i] = s.Value
		}
		return &types.AttributeValueMemberSS{Value: out}
	case "NS":
		out := make([]string, len(elems))
		for i, e := range elems {
			s, ok := e.(*types.AttributeValueMemberN)
			if !ok {
				r.fail("number set element %d is %T", i, e)
				return nil
			}
			out[i] = s.Value
		}
		return &types.AttributeValueMemberNS{Value: out}
	default: // BS
		out := make([][]byte, len(elems))
		for i, e := range elems {
			s, ok := e.(*types.AttributeValueMemberB)
			if !ok {
				r.fail("binary set element %d is %T", i, e)
				return nil
			}
			out[i] = s.Value
		}
		return &types.AttributeValueMemberBS{Value: out}
	}
}
