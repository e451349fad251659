package serde

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }
func m(kv map[string]types.AttributeValue) types.AttributeValue {
	return &types.AttributeValueMemberM{Value: kv}
}
func ptr[T any](v T) *T { return &v }

// shapes are six successive shapes of one table's items: each adds attributes or new kinds of
// values, so the typed encoding registers a new schema version for each.
var shapes = []map[string]types.AttributeValue{
	{"id": s("order-1"), "amount": n("12")},
	{"id": s("order-1"), "amount": n("12.50"), "status": s("placed")},
	{"id": s("order-1"), "amount": n("1E+100"), "status": s("paid"), "tags": &types.AttributeValueMemberSS{Value: []string{"gift", "express"}}},
	{"id": s("order-1"), "amount": n("3"), "address": m(map[string]types.AttributeValue{"city": s("Zürich"), "zip": n("8001")}), "odd name!": s("kept")},
	{"id": s("order-1"), "amount": n("-0.000000000000000001"), "status": n("7"), "blob": &types.AttributeValueMemberB{Value: []byte{0, 1, 254}},
		"address": m(map[string]types.AttributeValue{"city": s("Bern"), "zip": n("3000"), "geo": &types.AttributeValueMemberL{Value: []types.AttributeValue{n("46.948"), n("7.4474")}}}),
		"flags":   &types.AttributeValueMemberNULL{Value: true}},
	{"id": s("order-1"), "amount": n("12345678901234567890123456789012345678"), "scores": &types.AttributeValueMemberNS{Value: []string{"1", "2.5"}}, "ok": &types.AttributeValueMemberBOOL{Value: true}},
}

func shapeEvent(i int) *ddbavro.Event {
	ev := &ddbavro.Event{Op: "u", After: shapes[i], TsMs: time.UnixMilli(1795500000000 + int64(i)).UTC(), Source: avrov1.Source{
		Table: "orders", TableArn: "arn:aws:dynamodb:us-east-1:000000000000:table/orders",
		StreamArn: ptr("arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/x"), ShardID: ptr("shardId-1"),
		SequenceNumber: ptr("10000000000000000000000" + string(rune('0'+i))), ApproximateCreationMs: time.UnixMilli(1795500000000).UTC(),
		EventID: ptr("ev" + string(rune('0'+i))), StreamViewType: "NEW_AND_OLD_IMAGES",
	}}
	if i > 0 {
		ev.Before = shapes[i-1]
	} else {
		ev.Op = "c"
	}
	return ev
}

// canonicalItem is the item as decoders return it: numbers in canonical text.
func canonicalItem(item map[string]types.AttributeValue) map[string]types.AttributeValue {
	out, err := ddbavro.CanonicalItem(item)
	if err != nil {
		panic(err)
	}
	return out
}
