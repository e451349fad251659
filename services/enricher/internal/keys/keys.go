// Package keys encodes the primary key of an item into the bytes that join sides are matched
// by: a global table stores items under it, a lookup caches them under it, and an event's join
// expression values are encoded the same way.
package keys

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// Encode returns the match bytes of a key: its attributes sorted by name, each as name, type
// letter and value (numbers in canonical text, so 1.50 and 1.5 match). Only S, N and B, the
// types DynamoDB allows in keys, are accepted.
func Encode(key map[string]types.AttributeValue) ([]byte, error) {
	var b []byte
	for _, n := range Names(key) {
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		var val []byte
		switch v := key[n].(type) {
		case *types.AttributeValueMemberS:
			b, val = append(b, 'S'), []byte(v.Value)
		case *types.AttributeValueMemberN:
			c, err := ddbavro.CanonicalNumber(v.Value)
			if err != nil {
				return nil, fmt.Errorf("key attribute %s: %w", n, err)
			}
			b, val = append(b, 'N'), []byte(c)
		case *types.AttributeValueMemberB:
			b, val = append(b, 'B'), v.Value
		default:
			return nil, fmt.Errorf("key attribute %s: a key is a string, number or binary, not %T", n, key[n])
		}
		b = binary.AppendUvarint(b, uint64(len(val)))
		b = append(b, val...)
	}
	return b, nil
}

// FromRecordKey returns the attributes of a Kafka record key.
func FromRecordKey(k avrov1.Key) map[string]types.AttributeValue {
	out := map[string]types.AttributeValue{}
	for _, a := range []*avrov1.KeyAttribute{&k.PartitionKey, k.SortKey} {
		switch {
		case a == nil:
		case a.S != nil:
			out[a.Name] = &types.AttributeValueMemberS{Value: *a.S}
		case a.N != nil:
			out[a.Name] = &types.AttributeValueMemberN{Value: *a.N}
		case a.B != nil:
			out[a.Name] = &types.AttributeValueMemberB{Value: *a.B}
		}
	}
	return out
}

// Names returns the sorted attribute names of a key.
func Names(key map[string]types.AttributeValue) []string {
	names := make([]string, 0, len(key))
	for n := range key {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
