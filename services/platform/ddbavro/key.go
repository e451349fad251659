package ddbavro

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/hamba/avro/v2"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
)

// KeyOf builds the Kafka record key of an item from its key attributes (a stream record's Keys, or
// the item itself). sortAttr is empty for tables without a sort key. Numbers are canonical, so one
// item always has one key, and all its changes land in one partition.
func KeyOf(keys map[string]types.AttributeValue, partitionAttr, sortAttr string) (avrov1.Key, error) {
	var k avrov1.Key
	pk, err := keyAttribute(keys, partitionAttr)
	if err != nil {
		return k, err
	}
	k.PartitionKey = pk
	if sortAttr != "" {
		sk, err := keyAttribute(keys, sortAttr)
		if err != nil {
			return k, err
		}
		k.SortKey = &sk
	}
	return k, nil
}

func keyAttribute(keys map[string]types.AttributeValue, name string) (avrov1.KeyAttribute, error) {
	ka := avrov1.KeyAttribute{Name: name}
	switch v := keys[name].(type) {
	case *types.AttributeValueMemberS:
		ka.S = &v.Value
	case *types.AttributeValueMemberN:
		n, err := ParseNumber(v.Value)
		if err != nil {
			return ka, fmt.Errorf("key attribute %s: %w", name, err)
		}
		s := n.String()
		ka.N = &s
	case *types.AttributeValueMemberB:
		ka.B = &v.Value
	case nil:
		return ka, fmt.Errorf("key attribute %s is missing", name)
	default:
		return ka, fmt.Errorf("key attribute %s is %T; DynamoDB keys are S, N or B", name, v)
	}
	return ka, nil
}

// KeySchema is the record key's schema (one for every table).
func KeySchema() avro.Schema { return contracts.Key }

// AppendKey appends the Avro encoding of k.
func AppendKey(b []byte, k avrov1.Key) ([]byte, error) {
	out, err := avro.Marshal(contracts.Key, k)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return append(b, out...), nil
}

// ReadKey decodes a key.
func ReadKey(data []byte) (avrov1.Key, error) {
	var k avrov1.Key
	if err := avro.Unmarshal(contracts.Key, data, &k); err != nil {
		return k, fmt.Errorf("decoding key: %w: %v", ErrMalformed, err)
	}
	return k, nil
}
