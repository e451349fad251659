package ddbavro

import (
	"encoding/base64"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Plain returns ev as a generic Avro reader (fastavro, confluent-kafka's AvroDeserializer) returns
// it when reading with this model's schema: unions unwrapped, every field of every record present
// (null when absent), bytes as {"$bytes": base64}, decimals as {"$decimal": canonical text},
// timestamps as epoch milliseconds. Tests compare it with what such readers print; it is also a
// readable dump of a typed event. A nil model gives the document encoding's view.
func (m *Model) Plain(ev *Event) map[string]any {
	img := func(item map[string]types.AttributeValue) any {
		if item == nil {
			return nil
		}
		if m == nil {
			out := map[string]any{}
			for k, v := range item {
				out[k] = plainGeneric(v)
			}
			return out
		}
		return plainRecord(m.item, item)
	}
	opt := func(s *string) any {
		if s == nil {
			return nil
		}
		return *s
	}
	src := ev.Source
	return map[string]any{
		"before": img(ev.Before), "after": img(ev.After), "op": ev.Op, "ts_ms": ev.TsMs.UnixMilli(),
		"source": map[string]any{
			"table": src.Table, "table_arn": src.TableArn, "stream_arn": opt(src.StreamArn), "shard_id": opt(src.ShardID),
			"sequence_number": opt(src.SequenceNumber), "approximate_creation_ms": src.ApproximateCreationMs.UnixMilli(),
			"event_id": opt(src.EventID), "stream_view_type": src.StreamViewType, "ttl_delete": src.TTLDelete, "snapshot": src.Snapshot,
		},
	}
}

func plainRecord(r *record, item map[string]types.AttributeValue) map[string]any {
	out := make(map[string]any, len(r.fields))
	for _, f := range r.fields {
		v, ok := item[f.attr]
		if !ok {
			out[f.name] = nil
			continue
		}
		out[f.name] = plainValue(f.typ, v)
	}
	return out
}

func plainValue(u *union, v types.AttributeValue) any {
	b, _, err := u.choose(v)
	if err != nil || b == nil {
		return nil
	}
	switch b.kind {
	case kString:
		return v.(*types.AttributeValueMemberS).Value
	case kBool:
		return v.(*types.AttributeValueMemberBOOL).Value
	case kBytes:
		return plainBytes(v.(*types.AttributeValueMemberB).Value)
	case kLong:
		n, _ := ParseNumber(v.(*types.AttributeValueMemberN).Value)
		i, _ := n.Int64()
		return i
	case kDecimal:
		n, _ := ParseNumber(v.(*types.AttributeValueMemberN).Value)
		return map[string]any{"$decimal": n.String()}
	case kArray:
		elems := arrayElements(v)
		out := make([]any, len(elems))
		for i, e := range elems {
			out[i] = plainValue(b.items, e)
		}
		return out
	case kRecord:
		return plainRecord(b.rec, v.(*types.AttributeValueMemberM).Value)
	}
	return plainGeneric(v)
}

func plainBytes(b []byte) any { return map[string]any{"$bytes": base64.StdEncoding.EncodeToString(b)} }

func plainGeneric(v types.AttributeValue) any {
	out := map[string]any{"S": nil, "N": nil, "B": nil, "BOOL": nil, "NULL": nil, "SS": nil, "NS": nil, "BS": nil, "L": nil, "M": nil}
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		out["S"] = v.Value
	case *types.AttributeValueMemberN:
		c, _ := CanonicalNumber(v.Value)
		out["N"] = c
	case *types.AttributeValueMemberB:
		out["B"] = plainBytes(v.Value)
	case *types.AttributeValueMemberBOOL:
		out["BOOL"] = v.Value
	case *types.AttributeValueMemberNULL:
		out["NULL"] = v.Value
	case *types.AttributeValueMemberSS:
		out["SS"] = anySlice(v.Value, func(s string) any { return s })
	case *types.AttributeValueMemberNS:
		out["NS"] = anySlice(v.Value, func(s string) any { c, _ := CanonicalNumber(s); return c })
	case *types.AttributeValueMemberBS:
		out["BS"] = anySlice(v.Value, func(b []byte) any { return plainBytes(b) })
	case *types.AttributeValueMemberL:
		out["L"], _ = marshalDynamoJSON(v)
	case *types.AttributeValueMemberM:
		out["M"], _ = marshalDynamoJSON(v)
	}
	return out
}

func anySlice[T any](in []T, f func(T) any) []any {
	out := make([]any, len(in))
	for i, x := range in {
		out[i] = f(x)
	}
	return out
}
