package ddbavro

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/hamba/avro/v2"
)

// typicalEvent is an update of an order: before and after images of ten attributes (strings,
// integers, decimals, a string set, a list and a nested map), about 500 bytes encoded.
func typicalEvent() *Event {
	img := func(status, amount string) map[string]types.AttributeValue {
		return map[string]types.AttributeValue{
			"order_id":   &types.AttributeValueMemberS{Value: "order-000123"},
			"customer":   &types.AttributeValueMemberS{Value: "customer-042"},
			"status":     &types.AttributeValueMemberS{Value: status},
			"amount":     &types.AttributeValueMemberN{Value: amount},
			"quantity":   &types.AttributeValueMemberN{Value: "3"},
			"created_ms": &types.AttributeValueMemberN{Value: "1795500000000"},
			"tags":       &types.AttributeValueMemberSS{Value: []string{"gift", "express"}},
			"items": &types.AttributeValueMemberL{Value: []types.AttributeValue{
				&types.AttributeValueMemberS{Value: "sku-123"}, &types.AttributeValueMemberS{Value: "sku-456"}}},
			"address": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
				"city": &types.AttributeValueMemberS{Value: "Zürich"}, "zip": &types.AttributeValueMemberN{Value: "8001"}}},
			"paid": &types.AttributeValueMemberBOOL{Value: status != "placed"},
		}
	}
	return &Event{Op: "u", Before: img("placed", "129.90"), After: img("paid", "129.90"),
		TsMs: time.UnixMilli(1795500000123).UTC(), Source: testSource()}
}

func benchModel(b *testing.B, ev *Event) *Model {
	m := NewModel("orders")
	if _, err := m.EvolveFor(ev); err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkChangeEventEncode: the baseline is hamba/avro's plain Marshal of the generated struct
// (no conversion from DynamoDB values); "generated-structs" is the document encoding (DynamoDB
// values → generated struct → hamba/avro); "typed-generic" is the typed encoding's schema-driven
// encoder straight from DynamoDB values; "document" is the document encoding's direct encoder, the
// one the services use.
func BenchmarkChangeEventEncode(b *testing.B) {
	ev := typicalEvent()
	doc, err := ToDocumentEvent(ev)
	if err != nil {
		b.Fatal(err)
	}
	m := benchModel(b, ev)
	run := func(name string, f func() ([]byte, error)) {
		b.Run(name, func(b *testing.B) {
			out, err := f()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(out)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(out)), "bytes/event")
		})
	}
	buf := make([]byte, 0, 1024)
	run("baseline-hamba-marshal", func() ([]byte, error) { return avro.Marshal(contracts.ChangeEvent, doc) })
	run("generated-structs", func() ([]byte, error) { return MarshalDocument(buf[:0], ev) })
	run("document", func() ([]byte, error) { return AppendDocument(buf[:0], ev) })
	run("typed-generic", func() ([]byte, error) { return m.AppendTyped(buf[:0], ev) })
}

// BenchmarkChangeEventDecode: the baseline is hamba/avro's plain Unmarshal into the generated
// struct; "generated-structs" adds the conversion to DynamoDB values; "document" is the
// bounds-checked reader the services use; "typed-generic" is the typed decoder.
func BenchmarkChangeEventDecode(b *testing.B) {
	ev := typicalEvent()
	m := benchModel(b, ev)
	docBytes, err := AppendDocument(nil, ev)
	if err != nil {
		b.Fatal(err)
	}
	typedBytes, err := m.AppendTyped(nil, ev)
	if err != nil {
		b.Fatal(err)
	}
	run := func(name string, data []byte, f func() error) {
		b.Run(name, func(b *testing.B) {
			if err := f(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes/event")
		})
	}
	run("baseline-hamba-unmarshal", docBytes, func() error { _, err := UnmarshalDocument(docBytes); return err })
	run("generated-structs", docBytes, func() error {
		d, err := UnmarshalDocument(docBytes)
		if err != nil {
			return err
		}
		_, err = FromDocumentEvent(d)
		return err
	})
	run("document", docBytes, func() error { _, err := ReadDocument(docBytes); return err })
	run("typed-generic", typedBytes, func() error { _, err := m.ReadTyped(typedBytes); return err })
}
