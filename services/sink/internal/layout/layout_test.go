package layout

import (
	"encoding/json"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

func event(op string, seq string, before, after map[string]types.AttributeValue) *ddbavro.Event {
	return &ddbavro.Event{Op: op, Before: before, After: after, TsMs: time.UnixMilli(1795500001000),
		Source: avrov1.Source{Table: "orders", SequenceNumber: aws.String(seq), ShardID: aws.String("shard-1"), EventID: aws.String("e-" + seq),
			ApproximateCreationMs: time.UnixMilli(1795500000000)}}
}

var key = avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String("o-1")}}

// legacy returns the layout of a table created by an earlier version (one column per attribute
// and kind of value), before any item column: its lineage columns only.
func legacy(t *testing.T, mode string) *Layout {
	t.Helper()
	s := &deltatype.StructType{}
	for _, f := range lineage {
		f.Nullable = true
		s.Fields = append(s.Fields, f)
	}
	if mode == Changelog {
		s.Fields = append(s.Fields, deltatype.StructField{Name: ColBefore, Type: deltatype.StructOf(), Nullable: true},
			deltatype.StructField{Name: ColAfter, Type: deltatype.StructOf(), Nullable: true})
	}
	l, err := New(Options{Mode: mode}, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.Typed() {
		t.Fatal("an earlier version's table loaded as typed")
	}
	return l
}

// TestLegacyMirrorColumnsGrowAndKeepEveryKind: a table of the earlier layout is continued as it is.
func TestLegacyMirrorColumnsGrowAndKeepEveryKind(t *testing.T) {
	l := legacy(t, Mirror)
	item := map[string]types.AttributeValue{
		"id": s("o-1"), "amount": n("12"), "price": n("1.50"), "huge": n("1E+100"),
		"tags": &types.AttributeValueMemberSS{Value: []string{"b", "a"}}, "ns": &types.AttributeValueMemberNS{Value: []string{"10", "9.0"}},
		"gone": &types.AttributeValueMemberNULL{Value: true}, "ok": &types.AttributeValueMemberBOOL{Value: true},
		"raw":     &types.AttributeValueMemberB{Value: []byte{1, 2}},
		"list":    &types.AttributeValueMemberL{Value: []types.AttributeValue{s("x"), n("1")}},
		"address": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"city": s("Lyon"), "zip": n("69001")}},
		"a b":     s("spaced"), "A_B": s("case clash"),
	}
	r, err := l.Row(event("c", "100", nil, item), key, Origin{Topic: "t", Partition: 2, Offset: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Grew() || l.Grew() {
		t.Fatal("Grew must report the new columns once")
	}
	want := map[string]any{
		"amount": int64(12), "price": big.NewInt(1_500_000_000_000_000_000), "huge": canonical("1E+100"), "tags": []any{"b", "a"}, "ns": []any{"9", "10"},
		"gone": true, "ok": true, "raw": []byte{1, 2}, "list": `{"L":[{"S":"x"},{"N":"1"}]}`,
		"address": map[string]any{"city": "Lyon", "zip": int64(69001)}, "A_B": "case clash", "a_b__s": "spaced",
		ColKey: `[["S","o-1"]]`, ColSequence: strings.Repeat("0", 37) + "100", ColKafkaPartition: int32(2), ColKafkaOffset: int64(7),
	}
	for c, v := range want {
		if !reflect.DeepEqual(r[c], v) {
			t.Errorf("column %s = %#v, want %#v", c, r[c], v)
		}
	}
	// A second kind for "amount" adds a column; the first keeps its type.
	item2 := map[string]types.AttributeValue{"id": s("o-2"), "amount": s("twelve")}
	r2, err := l.Row(event("u", "101", nil, item2), key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if r2["amount__s"] != "twelve" || r2["amount"] != nil || !l.Grew() {
		t.Fatalf("second kind: %v", r2)
	}
	schema := l.Schema()
	if f := schema.Field("amount"); f == nil || !f.Type.Equal(deltatype.Long) || f.Metadata[MetaAttr] != "amount" {
		t.Fatalf("amount column %+v", f)
	}
	if f := schema.Field("address"); f == nil || f.Type.Struct == nil || f.Type.Struct.Field("zip") == nil {
		t.Fatalf("address column %+v", f)
	}
	// The layout read back from the schema maps the same attributes to the same columns.
	b, _ := json.Marshal(schema)
	var back deltatype.StructType
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	l2, err := New(Options{Mode: Mirror}, &back, nil)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := l2.Row(event("u", "102", nil, item), key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if l2.Grew() {
		t.Fatalf("the reloaded layout added columns: %s", l2.Schema().Fields[len(l.Schema().Fields)-1].Name)
	}
	if a, b := mustJSON(l2.Schema()), mustJSON(schema); !reflect.DeepEqual(r3["a_b__s"], "spaced") || a != b {
		t.Logf("%s\n%s", a, b)
		t.Fatal("the reloaded layout differs")
	}
	if err := deltatype.Evolves(&back, l2.Schema()); err != nil {
		t.Fatal(err)
	}
}

func TestChangelogRowsAndDeletes(t *testing.T) {
	l, err := New(Options{Mode: Changelog, PartitionByDate: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]types.AttributeValue{"id": s("o-1"), "status": s("placed")}
	r, err := l.Row(event("d", "5", before, nil), key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if r[ColBefore].(map[string]any)["status"] != "placed" || r[ColAfter] != nil || r[ColDate] != time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC) {
		t.Fatalf("row %v", r)
	}
	if got := l.PartitionColumns(); !reflect.DeepEqual(got, []string{ColDate}) {
		t.Fatalf("partitions %v", got)
	}
	m, _ := New(Options{Mode: Mirror}, nil, nil)
	del, err := m.Row(event("d", "6", before, nil), key, Origin{})
	if err != nil || del["status"] != nil || del[ColOp] != "d" {
		t.Fatalf("mirror delete row %v %v", del, err)
	}
	if _, err := m.Row(event("u", "7", nil, nil), key, Origin{}); err == nil || !strings.Contains(err.Error(), "new images") {
		t.Fatalf("update without image: %v", err)
	}
	// A mirror refuses a changelog table's schema, and the other way round.
	if _, err := New(Options{Mode: Mirror}, l.Schema(), nil); err == nil {
		t.Fatal("a mirror layout loaded a changelog schema")
	}
	if _, err := New(Options{Mode: Changelog}, m.Schema(), nil); err == nil {
		t.Fatal("a changelog layout loaded a mirror schema")
	}
}

func TestNewerRanksSnapshotsBelowStreamChanges(t *testing.T) {
	row := func(seq string, snap bool) Row {
		p, _ := PadSequence(seq)
		return Row{ColSequence: p, ColSnapshot: snap}
	}
	if !Newer(row("10", false), row("9", false)) || Newer(row("9", false), row("10", true)) ||
		!Newer(row("9", false), row("9", true)) || Newer(row("9", true), row("9", false)) || Newer(row("9", false), row("9", false)) {
		t.Fatal("Newer ranks wrongly")
	}
	if _, err := PadSequence("12a"); err == nil {
		t.Fatal("bad sequence accepted")
	}
}

func canonical(s string) string {
	c, _ := ddbavro.CanonicalNumber(s)
	return c
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestLegacyEmptyMaps (earlier layout): an empty map is a present struct (all fields null), distinct from an absent map
// (a null struct); a map that has no attribute gets the always-null placeholder field, since
// Parquet has no group without children. The placeholder stays when attributes appear later, and
// a layout loaded from the schema keeps it.
func TestLegacyEmptyMaps(t *testing.T) {
	for _, mode := range []string{Mirror, Changelog} {
		l := legacy(t, mode)
		empty := func() types.AttributeValue {
			return &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}
		}
		item := map[string]types.AttributeValue{"id": s("o-1"), "em": empty(),
			"mm": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"inner": empty()}}}
		r, err := l.Row(event("c", "1", nil, item), key, Origin{})
		if err != nil {
			t.Fatal(err)
		}
		img := map[string]any(r)
		if mode == Changelog {
			img = r[ColAfter].(map[string]any)
		}
		if !reflect.DeepEqual(img["em"], map[string]any{}) || !reflect.DeepEqual(img["mm"], map[string]any{"inner": map[string]any{}}) {
			t.Fatalf("%s: empty maps became %v and %v", mode, img["em"], img["mm"])
		}
		if !l.Grew() {
			t.Fatalf("%s: no schema change for the new columns", mode)
		}
		schema := l.Schema()
		structOf := func(s *deltatype.StructType, name string) *deltatype.StructType {
			if f := s.Field(name); f != nil && f.Type.Struct != nil {
				return f.Type.Struct
			}
			t.Fatalf("%s: no struct column %s in %v", mode, name, s)
			return nil
		}
		top := schema
		if mode == Changelog {
			top = structOf(schema, ColAfter)
		}
		for _, st := range []*deltatype.StructType{structOf(top, "em"), structOf(structOf(top, "mm"), "inner")} {
			if len(st.Fields) != 1 || st.Fields[0].Name != Placeholder || st.Fields[0].Metadata[MetaPlaceholder] != true {
				t.Fatalf("%s: an empty map's struct is %v, want the placeholder alone", mode, st)
			}
		}
		// An attribute appears in "em": the placeholder stays first, and survives a reload.
		item["em"] = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"a": s("x")}}
		if _, err := l.Row(event("u", "2", nil, item), key, Origin{}); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(l.Schema())
		var back deltatype.StructType
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		l2, err := New(Options{Mode: mode}, &back, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := l2.Schema(), l.Schema(); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: reloaded schema\n got %v\nwant %v", mode, got, want)
		}
		var em *deltatype.StructType
		if mode == Changelog {
			em = structOf(structOf(l2.Schema(), ColAfter), "em")
		} else {
			em = structOf(l2.Schema(), "em")
		}
		if len(em.Fields) != 2 || em.Fields[0].Name != Placeholder || em.Fields[1].Name != "a" {
			t.Fatalf("%s: em after an attribute appeared: %v", mode, em)
		}
	}
}
