package ddbavro

import (
	"maps"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/hamba/avro/v2"
)

// TestColumnTypesTravelInTheSchema: declared column types survive rendering, parsing and
// evolution, and every decoded event carries them.
func TestColumnTypesTravelInTheSchema(t *testing.T) {
	m := NewModel("orders")
	if !m.SetColumnTypes(map[string]string{"amount": "decimal(12,2)", "odd name": "json"}) || m.SetColumnTypes(map[string]string{"amount": "decimal(12,2)"}) {
		t.Fatal("SetColumnTypes reports changes wrongly")
	}
	ev := &Event{Op: "c", After: map[string]types.AttributeValue{"amount": &types.AttributeValueMemberN{Value: "1.5"}, "x": &types.AttributeValueMemberS{Value: "y"}}}
	if _, err := m.EvolveFor(ev); err != nil {
		t.Fatal(err)
	}
	s, err := avro.Parse(m.EnvelopeSchema())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ModelFromEnvelope(s)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"amount": "decimal(12,2)", "odd name": "json"}
	if !maps.Equal(back.ColumnTypes(), want) {
		t.Fatalf("column types after a round trip: %v", back.ColumnTypes())
	}
	b, err := back.AppendTyped(nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := back.ReadTyped(b)
	if err != nil || !maps.Equal(got.ColumnTypes, want) {
		t.Fatalf("decoded event's column types %v (%v)", got.ColumnTypes, err)
	}
	if NewModel("t").ColumnTypes() != nil {
		t.Fatal("a model without declarations has column types")
	}
}
