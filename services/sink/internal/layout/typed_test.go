package layout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
)

func b(v ...byte) types.AttributeValue { return &types.AttributeValueMemberB{Value: v} }
func m(kv ...any) types.AttributeValue {
	out := map[string]types.AttributeValue{}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1].(types.AttributeValue)
	}
	return &types.AttributeValueMemberM{Value: out}
}
func l(vs ...types.AttributeValue) types.AttributeValue {
	return &types.AttributeValueMemberL{Value: vs}
}

var null types.AttributeValue = &types.AttributeValueMemberNULL{Value: true}

func typedLayout(t *testing.T, mode string, hints map[string]string) *Layout {
	t.Helper()
	h, err := ParseHints(hints)
	if err != nil {
		t.Fatal(err)
	}
	lay, err := New(Options{Mode: mode, Hints: h}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return lay
}

// TestTypedDefaults: without hints each attribute's column type comes from its DynamoDB type;
// values that do not fit (a number beyond decimal(38,18), NULL, an empty map, a list holding
// binary) are rescued exactly; key columns come first, lineage after the items.
func TestTypedDefaults(t *testing.T) {
	lay := typedLayout(t, Mirror, nil)
	item := map[string]types.AttributeValue{
		"id": s("o-1"), "amount": n("12.50"), "qty": n("3"), "huge": n("1E+100"), "tiny": n("1E-30"),
		"tags": &types.AttributeValueMemberSS{Value: []string{"b", "a"}}, "ns": &types.AttributeValueMemberNS{Value: []string{"10", "9.5"}},
		"gone": null, "ok": &types.AttributeValueMemberBOOL{Value: true}, "raw": b(1, 2),
		"skus":    l(s("sku-890"), s("sku-1")),
		"mixed":   l(s("x"), n("1"), null, m("k", &types.AttributeValueMemberBOOL{Value: false})),
		"blobs":   l(b(7)),
		"address": m("city", s("Lyon"), "zip", n("69001"), "extra", m()),
		"empty":   m(),
		"a b":     s("spaced"),
	}
	r, err := lay.Row(event("c", "100", nil, item), key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	dec := func(unscaled string) *big.Int { v, _ := new(big.Int).SetString(unscaled, 10); return v }
	want := map[string]any{
		"id": "o-1", "amount": dec("12500000000000000000"), "qty": dec("3000000000000000000"), "tags": []any{"a", "b"},
		"ns": []any{dec("9500000000000000000"), dec("10000000000000000000")}, "ok": true, "raw": []byte{1, 2},
		"skus": `["sku-890","sku-1"]`, "mixed": `["x",1,null,{"k":false}]`,
		"address": map[string]any{"city": "Lyon", "zip": dec("69001000000000000000000")}, "a_b": "spaced",
		ColRescued: `{"address.extra":{"M":{}},"blobs":{"L":[{"B":"Bw=="}]},"empty":{"M":{}},"gone":{"NULL":true},` +
			`"huge":{"N":"1` + strings.Repeat("0", 100) + `"},"tiny":{"N":"0.` + strings.Repeat("0", 29) + `1"}}`,
	}
	for c, v := range want {
		if !reflect.DeepEqual(r[c], v) {
			t.Errorf("column %s = %#v, want %#v", c, r[c], v)
		}
	}
	for _, c := range []string{"huge", "tiny", "gone", "blobs", "empty"} {
		if r[c] != nil {
			t.Errorf("rescued %s also in a column: %v", c, r[c])
		}
	}
	if got := lay.Rescued(); got != 6 {
		t.Errorf("rescued %d values, want 6", got)
	}
	schema := lay.Schema()
	var names []string
	for _, f := range schema.Fields {
		names = append(names, f.Name)
	}
	wantNames := []string{"id", "a_b", "address", "amount", "blobs", "huge", "mixed", "ns", "ok", "qty", "raw", "skus", "tags", "tiny", ColRescued}
	for _, f := range lineage {
		wantNames = append(wantNames, f.Name)
	}
	if !slices.Equal(names, wantNames) {
		t.Errorf("columns %v\nwant %v", names, wantNames)
	}
	colTypes := map[string]deltatype.DataType{"amount": deltatype.Decimal38, "tags": deltatype.ArrayOf(deltatype.String),
		"ns": deltatype.ArrayOf(deltatype.Decimal38), "skus": deltatype.String, "raw": deltatype.Binary, "ok": deltatype.Boolean}
	for c, typ := range colTypes {
		if f := schema.Field(c); f == nil || !f.Type.Equal(typ) {
			t.Errorf("column %s: %+v, want type %s", c, f, typ)
		}
	}
	if f := schema.Field("a_b"); f.Metadata[MetaAttr] != "a b" || f.Metadata[MetaType] != "string" {
		t.Errorf("a_b metadata %v", f.Metadata)
	}
	if f := schema.Field("id"); f.Metadata[MetaKey] != "hash" {
		t.Errorf("id metadata %v", f.Metadata)
	}
	// The row with its rescued values folded back in is the item.
	got, err := lay.Item(r)
	if err != nil {
		t.Fatal(err)
	}
	assertSameItem(t, got, item)
	// A value of another DynamoDB type than its column's is rescued; the column keeps its type.
	r2, err := lay.Row(event("u", "101", nil, map[string]types.AttributeValue{"id": s("o-1"), "amount": s("twelve")}), key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if r2["amount"] != nil || r2[ColRescued] != `{"amount":{"S":"twelve"}}` || lay.Schema().Field("amount__2") != nil {
		t.Errorf("another type: %v", r2)
	}
}

// TestHints: hinted columns exist from the start with their types; values that do not fit are
// rescued exactly: a fraction in a long, a string where a number was hinted, a number beyond the
// column's precision, a number a double cannot hold exactly, a list that is not all strings.
func TestHints(t *testing.T) {
	hints := map[string]string{"amount": "decimal(12,2)", "qty": "long", "small": "int", "score": "double",
		"skus": "array<string>", "profile": "json", "address.zip": "string", "nums": "set<long>", "flags": "array<boolean>"}
	lay := typedLayout(t, Mirror, hints)
	schema := lay.Schema()
	wantTypes := map[string]deltatype.DataType{"amount": deltatype.Decimal(12, 2), "qty": deltatype.Long, "small": deltatype.Integer,
		"score": deltatype.Double, "skus": deltatype.ArrayOf(deltatype.String), "profile": deltatype.String,
		"nums": deltatype.ArrayOf(deltatype.Long), "flags": deltatype.ArrayOf(deltatype.Boolean)}
	for c, typ := range wantTypes {
		if f := schema.Field(c); f == nil || !f.Type.Equal(typ) {
			t.Errorf("hinted column %s: %+v, want %s before any value", c, f, typ)
		}
	}
	if a := schema.Field("address"); a == nil || a.Type.Struct == nil || a.Type.Struct.Field("zip") == nil {
		t.Errorf("address column %+v", a)
	}
	fits := map[string]types.AttributeValue{
		"id": s("o-1"), "amount": n("1234567890.12"), "qty": n("-9223372036854775808"), "small": n("2147483647"), "score": n("0.1"),
		"skus": l(s("a"), s("b")), "profile": m("name", s("Ann"), "age", n("41"), "vip", null), "address": m("zip", s("69001")),
		"nums": &types.AttributeValueMemberNS{Value: []string{"3", "1"}}, "flags": l(),
	}
	r, err := lay.Row(event("c", "1", nil, fits), key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"amount": big.NewInt(123456789012), "qty": int64(-9223372036854775808), "small": int32(2147483647),
		"score": 0.1, "skus": []any{"a", "b"}, "profile": `{"age":41,"name":"Ann","vip":null}`, "address": map[string]any{"zip": "69001"},
		"nums": []any{int64(1), int64(3)}, "flags": []any{}, ColRescued: nil}
	for c, v := range want {
		if !reflect.DeepEqual(r[c], v) {
			t.Errorf("column %s = %#v, want %#v", c, r[c], v)
		}
	}
	misfits := map[string]types.AttributeValue{
		"id": s("o-2"), "amount": n("0.125"), "qty": n("1.5"), "small": n("2147483648"), "score": n("0.12345678901234567890123"),
		"skus": l(s("a"), n("1")), "profile": m("pic", b(1)), "address": m("zip", n("69001")),
		"nums": &types.AttributeValueMemberSS{Value: []string{"1"}}, "flags": s("yes"),
	}
	r, err = lay.Row(event("c", "2", nil, misfits), key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	for c := range hints {
		if top, _, _ := strings.Cut(c, "."); r[top] != nil && top != "address" {
			t.Errorf("misfit %s in its column: %v", top, r[top])
		}
	}
	wantRescued := `{"address.zip":{"N":"69001"},"amount":{"N":"0.125"},"flags":{"S":"yes"},"nums":{"SS":["1"]},` +
		`"profile":{"M":{"pic":{"B":"AQ=="}}},"qty":{"N":"1.5"},"score":{"N":"0.12345678901234567890123"},` +
		`"skus":{"L":[{"S":"a"},{"N":"1"}]},"small":{"N":"2147483648"}}`
	if r[ColRescued] != wantRescued {
		t.Errorf("rescued\n got %v\nwant %s", r[ColRescued], wantRescued)
	}
	for _, it := range []map[string]types.AttributeValue{fits, misfits} {
		r, err := lay.Row(event("c", "3", nil, it), key, Origin{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := lay.Item(r)
		if err != nil {
			t.Fatal(err)
		}
		assertSameItem(t, got, it)
	}
	// A reloaded table keeps its columns; a hint contradicting an existing column is refused.
	h, _ := ParseHints(map[string]string{"qty": "double"})
	if _, err := New(Options{Mode: Mirror, Hints: h}, lay.Schema(), nil); err == nil || !strings.Contains(err.Error(), "attribute qty is hinted as double, but the table's column qty has type long") {
		t.Errorf("contradicting hint: %v", err)
	}
	h, _ = ParseHints(map[string]string{"address": "json"})
	if _, err := New(Options{Mode: Mirror, Hints: h}, lay.Schema(), nil); err == nil || !strings.Contains(err.Error(), "attribute address is hinted as json") {
		t.Errorf("hint json on a struct column: %v", err)
	}
	h, _ = ParseHints(map[string]string{"qty": "long", "extra": "string"})
	l2, err := New(Options{Mode: Mirror, Hints: h}, lay.Schema(), nil)
	if err != nil || !l2.Grew() || l2.Schema().Field("extra") == nil {
		t.Errorf("a new hint on a reloaded table adds its column: %v", err)
	}
	// Hints on a table of the earlier layout are refused with the way out.
	if _, err := New(Options{Mode: Mirror, Hints: h}, legacy(t, Mirror).Schema(), nil); err == nil || !strings.Contains(err.Error(), "earlier version") {
		t.Errorf("hints on an earlier version's table: %v", err)
	}
}

func TestParseHintsErrors(t *testing.T) {
	for hints, want := range map[string]string{
		`{"a": "decimal(40,2)"}`:                 `schema hint "a": type "decimal(40,2)": a decimal's precision must be 1 to 38`,
		`{"a": "varchar"}`:                       `schema hint "a": unknown type "varchar"`,
		`{"a": "array<json>"}`:                   `elements must be string, boolean, binary`,
		`{"a": "set<boolean>"}`:                  `DynamoDB sets hold strings, numbers or binary`,
		`{"a": "struct<x:int>"}`:                 `hint its attributes by path`,
		`{"a": "json", "a.b": "long"}`:           `schema hint "a.b" is a path into "a", which is hinted as json, not a map`,
		`{"a": "long", "a.b.c": "long"}`:         `schema hint "a.b.c" is a path into "a"`,
		"{\"a\": \"long\", \"`a`\": \"string\"}": "schema hints \"`a`\" and \"a\" name the same attribute",
		`{"a..b": "long"}`:                       `an empty attribute name`,
		"{\"`a\": \"long\"}":                     `unclosed backtick`,
	} {
		var m map[string]string
		if err := jsonUnmarshal(hints, &m); err != nil {
			t.Fatal(err)
		}
		_, err := ParseHints(m)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", hints, err, want)
		}
	}
	for _, p := range []string{"a", "a.b", "`a.b`.c", "`x``y`", "`we.ird`"} {
		path, err := ParsePath(p)
		if err != nil || FormatPath(path) != p {
			t.Errorf("path %s: %v %v → %s", p, path, err, FormatPath(path))
		}
	}
}

// TestOrderIndependence: the same items fed in two random orders into two tables give identical
// schemas and identical rows, with and without hints; every row with its rescued values is its
// item; and the rows survive a Parquet round trip unchanged. Attributes keep one DynamoDB type
// each (NULL aside) and carry every type, nesting, and numbers of every shape.
func TestOrderIndependence(t *testing.T) {
	hintSets := []map[string]string{nil, {"a1": "long", "a2": "decimal(10,2)", "a3": "double", "a8": "array<string>", "a9": "json", "m1.x": "int"}}
	for seed := range 40 {
		for hi, hints := range hintSets {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			items := genItems(rng, 30)
			var schemas []string
			var rows []map[string]Row
			for range 2 {
				perm := rng.Perm(len(items))
				lay := typedLayout(t, Mirror, hints)
				byKey := map[string]Row{}
				var all []parquetio.Row
				for _, i := range perm {
					it := items[i]
					k := avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(it["id"].(*types.AttributeValueMemberS).Value)}}
					r, err := lay.Row(event("c", fmt.Sprint(i+1), nil, it), k, Origin{})
					if err != nil {
						t.Fatal(err)
					}
					got, err := lay.Item(r)
					if err != nil {
						t.Fatal(err)
					}
					assertSameItem(t, got, it)
					byKey[r[ColKey].(string)] = r
					all = append(all, parquetio.Row(r))
				}
				data, _, err := parquetio.Write(lay.Schema(), nil, all, parquetio.Options{})
				if err != nil {
					t.Fatalf("seed %d hints %d: %v", seed, hi, err)
				}
				back, err := parquetio.ReadData(data)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range back {
					got, err := lay.Item(r)
					if err != nil {
						t.Fatal(err)
					}
					assertSameItem(t, got, items[mustAtoi(r[ColSequence].(string))-1])
				}
				schemas = append(schemas, mustJSON(lay.Schema()))
				rows = append(rows, byKey)
			}
			if schemas[0] != schemas[1] {
				t.Fatalf("seed %d hints %d: schemas differ\n%s\n%s", seed, hi, schemas[0], schemas[1])
			}
			for k, r := range rows[0] {
				if !reflect.DeepEqual(withoutLineage(r), withoutLineage(rows[1][k])) {
					t.Fatalf("seed %d hints %d: row %s differs\n%v\n%v", seed, hi, k, r, rows[1][k])
				}
			}
		}
	}
}

// genItems makes items whose attributes each keep one DynamoDB type (or are NULL now and then).
func genItems(rng *rand.Rand, count int) []map[string]types.AttributeValue {
	shapes := []string{"S", "N", "N", "N", "B", "BOOL", "SS", "NS", "L", "L", "BS", "M"}
	attrs := map[string]string{}
	for i := range 12 {
		attrs[fmt.Sprintf("a%d", i)] = shapes[rng.IntN(len(shapes))]
	}
	attrs["a1"], attrs["a2"], attrs["a3"], attrs["a8"], attrs["a9"] = "N", "N", "N", "L", "M"
	attrs["m1"] = "M"
	var out []map[string]types.AttributeValue
	for i := range count {
		it := map[string]types.AttributeValue{"id": s(fmt.Sprintf("k%03d", i))}
		for a, shape := range attrs {
			if rng.IntN(10) < 3 {
				continue
			}
			if rng.IntN(20) == 0 {
				it[a] = null
				continue
			}
			it[a] = genValue(rng, shape, 2)
		}
		out = append(out, it)
	}
	return out
}

func genValue(rng *rand.Rand, shape string, depth int) types.AttributeValue {
	switch shape {
	case "S":
		return s([]string{"", "x", "héllo", "a\"b", "1"}[rng.IntN(5)])
	case "N":
		return n(genNumber(rng))
	case "B":
		return b(byte(rng.IntN(256)), byte(rng.IntN(3)))
	case "BOOL":
		return &types.AttributeValueMemberBOOL{Value: rng.IntN(2) == 0}
	case "SS":
		return &types.AttributeValueMemberSS{Value: []string{"b", "a", fmt.Sprint(rng.IntN(9))}[:1+rng.IntN(3)]}
	case "NS":
		set := map[string]bool{}
		for range 1 + rng.IntN(3) {
			set[genNumber(rng)] = true
		}
		ns := &types.AttributeValueMemberNS{}
		for x := range set {
			c, _ := ddbavro.CanonicalNumber(x)
			if !slices.ContainsFunc(ns.Value, func(y string) bool { d, _ := ddbavro.CanonicalNumber(y); return d == c }) {
				ns.Value = append(ns.Value, x)
			}
		}
		return ns
	case "BS":
		return &types.AttributeValueMemberBS{Value: [][]byte{{1}, {byte(2 + rng.IntN(9))}}}
	case "L":
		var vs []types.AttributeValue
		for range rng.IntN(4) {
			if rng.IntN(3) == 0 {
				vs = append(vs, genValue(rng, []string{"N", "BOOL", "B", "M", "L"}[rng.IntN(5)], depth-1))
			} else {
				vs = append(vs, s(fmt.Sprint("e", rng.IntN(5))))
			}
		}
		return l(vs...)
	case "M":
		if depth <= 0 || rng.IntN(8) == 0 {
			return m()
		}
		kv := []any{}
		for _, a := range []string{"x", "y", "z.dot"} {
			if rng.IntN(3) > 0 {
				shape := map[string]string{"x": "N", "y": "S", "z.dot": "M"}[a]
				kv = append(kv, a, genValue(rng, shape, depth-1))
			}
		}
		return m(kv...)
	}
	panic(shape)
}

func genNumber(rng *rand.Rand) string {
	switch rng.IntN(7) {
	case 0:
		return fmt.Sprint(rng.IntN(1000) - 500)
	case 1:
		return fmt.Sprintf("%d.%02d", rng.IntN(100), rng.IntN(100))
	case 2:
		return "1E+" + fmt.Sprint(20+rng.IntN(100))
	case 3:
		return "-1.5E-" + fmt.Sprint(10+rng.IntN(100))
	case 4:
		return "0.1"
	case 5:
		return "9223372036854775807"
	}
	return "12345678901234567890.123456789012345678"
}

func withoutLineage(r Row) map[string]any {
	out := map[string]any{}
	for k, v := range r {
		if !slices.ContainsFunc(lineage, func(f deltatype.StructField) bool { return f.Name == k }) {
			out[k] = v
		}
	}
	return out
}

// assertSameItem compares items as DynamoDB does: numbers by value, sets unordered.
func assertSameItem(t *testing.T, got, want map[string]types.AttributeValue) {
	t.Helper()
	g, w := itemText(t, got), itemText(t, want)
	if g != w {
		t.Fatalf("rebuilt item differs\n got %s\nwant %s", g, w)
	}
}

func itemText(t *testing.T, item map[string]types.AttributeValue) string {
	t.Helper()
	c, err := ddbavro.CanonicalItem(item)
	if err != nil {
		t.Fatal(err)
	}
	text, err := ddbavro.MarshalDynamoJSON(sortSets(&types.AttributeValueMemberM{Value: c}))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func sortSets(v types.AttributeValue) types.AttributeValue {
	switch v := v.(type) {
	case *types.AttributeValueMemberSS:
		x := slices.Clone(v.Value)
		slices.Sort(x)
		return &types.AttributeValueMemberSS{Value: x}
	case *types.AttributeValueMemberNS:
		x := slices.Clone(v.Value)
		slices.SortFunc(x, compareNumbers)
		return &types.AttributeValueMemberNS{Value: x}
	case *types.AttributeValueMemberBS:
		x := slices.Clone(v.Value)
		slices.SortFunc(x, bytes.Compare)
		return &types.AttributeValueMemberBS{Value: x}
	case *types.AttributeValueMemberL:
		out := &types.AttributeValueMemberL{}
		for _, e := range v.Value {
			out.Value = append(out.Value, sortSets(e))
		}
		return out
	case *types.AttributeValueMemberM:
		out := &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}
		for k, e := range v.Value {
			out.Value[k] = sortSets(e)
		}
		return out
	}
	return v
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func mustAtoi(s string) int {
	i, _ := strconv.Atoi(s)
	return i
}

// TestReadmeExample: the README's example item becomes the row it shows.
func TestReadmeExample(t *testing.T) {
	lay := typedLayout(t, Mirror, map[string]string{"amount": "decimal(12,2)", "qty": "long", "skus": "array<string>", "address.zip": "string"})
	item := map[string]types.AttributeValue{
		"order_id": s("o-1"), "amount": n("129.90"), "qty": n("3"), "skus": l(s("sku-890"), s("sku-1")),
		"tags": &types.AttributeValueMemberSS{Value: []string{"gift", "b2b"}}, "address": m("city", s("Lyon"), "zip", n("69001")),
		"note": null, "ratio": n("0.1234567890123456789012"),
	}
	k := avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "order_id", S: aws.String("o-1")}}
	r, err := lay.Row(event("c", "1", nil, item), k, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"order_id": "o-1", "address": map[string]any{"city": "Lyon"}, "amount": big.NewInt(12990), "qty": int64(3),
		"ratio": nil, "skus": []any{"sku-890", "sku-1"}, "tags": []any{"b2b", "gift"},
		ColRescued: `{"address.zip":{"N":"69001"},"note":{"NULL":true},"ratio":{"N":"0.1234567890123456789012"}}`}
	for c, v := range want {
		if !reflect.DeepEqual(r[c], v) {
			t.Errorf("column %s = %#v, want %#v", c, r[c], v)
		}
	}
	var names []string
	for _, f := range lay.Schema().Fields[:8] {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, " "); got != "order_id address amount qty ratio skus tags "+ColRescued {
		t.Errorf("columns %s", got)
	}
}

// TestDeclaredColumnTypes: column types a writer declares in its schema (the enricher's
// projection) type the columns from the first event on, after the configured hints, which win.
func TestDeclaredColumnTypes(t *testing.T) {
	lay := typedLayout(t, Changelog, map[string]string{"qty": "int"})
	ev := event("c", "1", nil, map[string]types.AttributeValue{"id": s("o-1"), "amount": n("0.125")})
	ev.ColumnTypes = map[string]string{"amount": "decimal(12,2)", "qty": "long", "fee": "double"}
	r, err := lay.Row(ev, key, Origin{})
	if err != nil {
		t.Fatal(err)
	}
	after := lay.Schema().Field(ColAfter).Type.Struct
	for c, typ := range map[string]deltatype.DataType{"amount": deltatype.Decimal(12, 2), "qty": deltatype.Integer, "fee": deltatype.Double} {
		if f := after.Field(c); f == nil || !f.Type.Equal(typ) {
			t.Errorf("column %s: %+v, want %s", c, f, typ)
		}
	}
	if img := r[ColAfter].(map[string]any); img["amount"] != nil || img[ColRescued] != `{"amount":{"N":"0.125"}}` {
		t.Errorf("after image %v", img)
	}
	ev.ColumnTypes = map[string]string{"amount": "varchar"}
	if _, err := lay.Row(ev, key, Origin{}); err == nil || !strings.Contains(err.Error(), `declares attribute amount as unknown type "varchar"`) {
		t.Errorf("a bad declared type: %v", err)
	}
}

// TestMixedTypes: an attribute whose values have several DynamoDB types is reported once (the
// writer warns), its values stay exact in any order, and a json hint makes its column and rows
// independent of the order.
func TestMixedTypes(t *testing.T) {
	items := []map[string]types.AttributeValue{
		{"id": s("a"), "price": n("12.5")}, {"id": s("b"), "price": s("N/A")}, {"id": s("c"), "price": &types.AttributeValueMemberBOOL{Value: true}},
	}
	for _, hints := range []map[string]string{nil, {"price": "json"}} {
		var schemas []string
		var rows []map[string]any
		for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}} {
			lay := typedLayout(t, Mirror, hints)
			byID := map[string]any{}
			for _, i := range order {
				k := avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(fmt.Sprint("k", i))}}
				r, err := lay.Row(event("c", fmt.Sprint(i+1), nil, items[i]), k, Origin{})
				if err != nil {
					t.Fatal(err)
				}
				got, err := lay.Item(r)
				if err != nil {
					t.Fatal(err)
				}
				assertSameItem(t, got, items[i])
				byID[fmt.Sprint(i)] = withoutLineage(r)
			}
			mixed := lay.Mixed()
			if hints == nil && len(mixed) != 1 || hints != nil && len(mixed) != 0 || len(lay.Mixed()) != 0 {
				t.Errorf("hints %v: mixed %v", hints, mixed)
			}
			schemas = append(schemas, mustJSON(lay.Schema()))
			rows = append(rows, byID)
		}
		if same := schemas[0] == schemas[1] && reflect.DeepEqual(rows[0], rows[1]); same != (hints != nil) {
			t.Errorf("hints %v: order independent %v", hints, same)
		}
	}
}
