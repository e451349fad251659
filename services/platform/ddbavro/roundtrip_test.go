package ddbavro

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/hamba/avro/v2"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
)

func ptr[T any](v T) *T { return &v }

func testSource() avrov1.Source {
	return avrov1.Source{
		Table: "orders", TableArn: "arn:aws:dynamodb:us-east-1:123456789012:table/orders",
		StreamArn: ptr("arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-25T00:00:00.000"),
		ShardID:   ptr("shardId-00000001700000000000-abcdef01"), SequenceNumber: ptr("4900000000000000000000000000000000001"),
		ApproximateCreationMs: time.UnixMilli(1795500000000).UTC(), EventID: ptr("e1"), StreamViewType: "NEW_AND_OLD_IMAGES",
	}
}

// roundTrip checks, for a sequence of events through one evolving model, that both encodings give
// back every event exactly; that each schema the model rendered parses back to a model that
// decodes the records written with it; and that every later schema can read every earlier record
// (BACKWARD_TRANSITIVE), as hamba/avro's compatibility check sees it.
func roundTrip(t *testing.T, events []*Event) {
	t.Helper()
	m := NewModel("orders")
	type written struct {
		schema string
		data   []byte
		ev     *Event
	}
	var all []written
	for i, ev := range events {
		// Document encoding.
		doc, err := AppendDocument(nil, ev)
		if err != nil {
			t.Fatalf("event %d: document encode: %v", i, err)
		}
		back, err := ReadDocument(doc)
		if err != nil {
			t.Fatalf("event %d: document decode: %v", i, err)
		}
		checkSame(t, "document", i, ev, back)
		// The generated-struct path writes records every reader decodes the same way.
		viaGen, err := MarshalDocument(nil, ev)
		if err != nil {
			t.Fatalf("event %d: generated-struct encode: %v", i, err)
		}
		if back, err = ReadDocument(viaGen); err != nil {
			t.Fatalf("event %d: decoding the generated-struct encoding: %v", i, err)
		}
		checkSame(t, "generated-struct document", i, ev, back)
		g, err := UnmarshalDocument(doc)
		if err != nil {
			t.Fatalf("event %d: hamba/avro cannot decode the direct document encoding: %v", i, err)
		}
		if back, err = FromDocumentEvent(g); err != nil {
			t.Fatal(err)
		}
		checkSame(t, "document read by hamba/avro", i, ev, back)
		// The item codec (the enricher's join store) keeps an image as the document does.
		if ev.After != nil {
			b, err := AppendItem(nil, ev.After)
			if err != nil {
				t.Fatalf("event %d: item encode: %v", i, err)
			}
			item, err := ReadItem(b)
			if err != nil {
				t.Fatalf("event %d: item decode: %v", i, err)
			}
			checkSame(t, "item", i, &Event{After: ev.After, Op: ev.Op, TsMs: ev.TsMs, Source: ev.Source}, &Event{After: item, Op: ev.Op, TsMs: ev.TsMs, Source: ev.Source})
			if _, err := ReadItem(b[:len(b)-1]); len(b) > 1 && err == nil {
				t.Fatalf("event %d: a truncated item decoded", i)
			}
		}

		// Typed encoding: evolve only when the model says so.
		data, err := m.AppendTyped(nil, ev)
		if err == ErrEvolve {
			if _, err := m.EvolveFor(ev); err != nil {
				t.Fatalf("event %d: evolve: %v", i, err)
			}
			data, err = m.AppendTyped(nil, ev)
		}
		if err != nil {
			t.Fatalf("event %d: typed encode: %v", i, err)
		}
		all = append(all, written{m.EnvelopeSchema(), data, ev})
	}
	latest, err := avro.Parse(all[len(all)-1].schema)
	if err != nil {
		t.Fatalf("latest schema does not parse: %v\n%s", err, all[len(all)-1].schema)
	}
	compat := avro.NewSchemaCompatibility()
	for i, w := range all {
		ws, err := avro.Parse(w.schema)
		if err != nil {
			t.Fatalf("schema %d does not parse: %v\n%s", i, err, w.schema)
		}
		wm, err := ModelFromEnvelope(ws)
		if err != nil {
			t.Fatalf("schema %d does not give a model back: %v", i, err)
		}
		if again := wm.EnvelopeSchema(); again != w.schema {
			at := 0
			for at < len(again) && at < len(w.schema) && again[at] == w.schema[at] {
				at++
			}
			lo, hi := max(0, at-200), min(at+200, len(w.schema), len(again))
			t.Fatalf("schema %d changes through parse and render, at byte %d:\n%s\n%s", i, at, w.schema[lo:hi], again[lo:hi])
		}
		got, err := wm.ReadTyped(w.data)
		if err != nil {
			t.Fatalf("event %d: typed decode: %v", i, err)
		}
		checkSame(t, "typed", i, w.ev, got)
		if err := compat.Compatible(latest, ws); err != nil {
			t.Fatalf("latest schema cannot read records of schema %d: %v", i, err)
		}
		// An independent decoder reads the bytes with their schema. (hamba's Resolve recurses
		// without end on the recursive AttributeValue type, so reading old records with the newest
		// schema is checked by fastavro in the registry integration test.)
		var generic map[string]any
		if err := avro.Unmarshal(ws, w.data, &generic); err != nil {
			t.Fatalf("hamba/avro cannot decode record %d with its schema: %v", i, err)
		}
	}
}

func checkSame(t *testing.T, enc string, i int, want, got *Event) {
	t.Helper()
	w := *want
	w.Before, w.After = canonicalItem(want.Before), canonicalItem(want.After)
	if !reflect.DeepEqual(&w, got) {
		t.Fatalf("event %d did not round-trip through the %s encoding:\nwant %#v\n got %#v", i, enc, &w, got)
	}
}

func randomEvents(seed uint64, n int) []*Event {
	g := itemGen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	var out []*Event
	for i := range n {
		ev := &Event{Op: []string{"c", "u", "d", "r"}[g.r.IntN(4)], TsMs: time.UnixMilli(1795500000000 + int64(i)).UTC(), Source: testSource()}
		if ev.Op != "c" && ev.Op != "r" {
			ev.Before = g.item(0)
		}
		if ev.Op != "d" {
			ev.After = g.item(0)
		}
		out = append(out, ev)
	}
	return out
}

func TestRoundTripRandomItems(t *testing.T) {
	for seed := range uint64(300) {
		roundTrip(t, randomEvents(seed, 6))
	}
}

// FuzzRoundTrip explores more seeds: `go test -fuzz FuzzRoundTrip ./ddbavro`.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) { roundTrip(t, randomEvents(seed, 5)) })
}

func TestTypedConflictRules(t *testing.T) {
	s := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	n := func(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }
	events := []*Event{}
	for _, item := range []map[string]types.AttributeValue{
		{"v": s("text")},
		{"v": n("42")},     // adds long
		{"v": n("1.5")},    // adds Decimal38
		{"v": n("1E+100")}, // adds AttributeValue (beyond decimal(38,18))
		{"v": &types.AttributeValueMemberNULL{Value: true}},        // generic branch, distinct from absent
		{"v": &types.AttributeValueMemberSS{Value: []string{"a"}}}, // adds the one array
		{"v": &types.AttributeValueMemberNS{Value: []string{"1"}}}, // second array kind: generic
		{"v": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"x": s("y")}}},
		{},
	} {
		events = append(events, &Event{Op: "c", After: item, TsMs: time.UnixMilli(1).UTC(), Source: testSource()})
	}
	roundTrip(t, events)
	m := NewModel("orders")
	for _, ev := range events {
		if _, err := m.EvolveFor(ev); err != nil {
			t.Fatal(err)
		}
	}
	var kinds []kind
	for _, b := range m.item.fields[0].typ.branches {
		kinds = append(kinds, b.kind)
	}
	want := []kind{kNull, kString, kLong, kDecimal, kGeneric, kArray, kRecord}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("branches = %v, want %v", kinds, want)
	}
}

func TestBadValuesNameTheAttribute(t *testing.T) {
	tests := []struct {
		item map[string]types.AttributeValue
		want string
	}{
		{map[string]types.AttributeValue{"price": &types.AttributeValueMemberN{Value: "12,5"}}, `attribute price: invalid DynamoDB number "12,5"`},
		{map[string]types.AttributeValue{"m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"q": &types.AttributeValueMemberNS{Value: []string{"1", "1e999"}}}}}, `attribute m.q[1]: invalid DynamoDB number "1e999"`},
		{map[string]types.AttributeValue{"l": &types.AttributeValueMemberL{Value: []types.AttributeValue{nil}}}, "attribute l[0]: no value"},
	}
	for _, tt := range tests {
		m := NewModel("t")
		_, err := m.Evolve(tt.item)
		if err == nil || !containsStr(err.Error(), tt.want) {
			t.Errorf("Evolve: %v, want %q", err, tt.want)
		}
		_, err = AppendDocument(nil, &Event{Op: "c", After: tt.item})
		if err == nil || !containsStr(err.Error(), tt.want[len("attribute "):]) {
			t.Errorf("AppendDocument: %v, want %q", err, tt.want)
		}
	}
}

func containsStr(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0))
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
