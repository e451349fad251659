package pipeline

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/keys"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/lookup"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// mapSource is a join side held in memory.
type mapSource struct {
	names []string
	items map[string]map[string]types.AttributeValue
	asked int
}

func (m *mapSource) Resolve(_ context.Context, reqs []lookup.Request) (map[string]map[string]types.AttributeValue, map[string]error, error) {
	m.asked += len(reqs)
	out := map[string]map[string]types.AttributeValue{}
	for _, r := range reqs {
		if it, ok := m.items[string(r.Match)]; ok {
			out[string(r.Match)] = it
		}
	}
	return out, nil, nil
}
func (m *mapSource) KeyNames() []string                          { return m.names }
func (m *mapSource) Check(map[string]types.AttributeValue) error { return nil }

func (m *mapSource) put(t *testing.T, key map[string]types.AttributeValue, item map[string]types.AttributeValue) {
	t.Helper()
	k, err := keys.Encode(key)
	if err != nil {
		t.Fatal(err)
	}
	m.items[string(k)] = item
}

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

func registry(t testing.TB) *serde.Registry {
	t.Helper()
	f := srfake.New()
	t.Cleanup(f.Close)
	cl, err := sr.NewClient(sr.URLs(f.URL()))
	if err != nil {
		t.Fatal(err)
	}
	return serde.NewRegistry(cl, slog.New(slog.DiscardHandler))
}

const pipelineYAML = `
global_tables: [{name: customers, topic: cdc.customers}]
lookups: [{name: products, table: products}]
pipelines:
  - name: big_orders
    inputs: [cdc.orders]
    filter: 'op == "d" || item.amount >= 100'
    joins:
      - {as: customer, global_table: customers, on: {id: item.customer_id}, type: inner}
      - {as: product, lookup: products, on: {sku: item.sku}}
    projection:
      - {name: order_id, expr: key.id}
      - {name: amount, expr: item.amount}
      - {name: double_amount, expr: 'double(item.amount) * 2.0', type: "decimal(12,2)"}
      - {name: tier, expr: customer.tier}
      - {name: category, expr: 'product.?category.orValue("unknown")'}
      - {name: name_upper, expr: customer.name.upperAscii()}
      - {name: tags, expr: '["a", "b", "a"]', type: string_set}
  - name: by_customer
    inputs: [cdc.orders]
    filter: 'customer.?tier.orValue("") == "gold"'
    joins:
      - {as: customer, global_table: customers, on: {id: item.customer_id}}
    key: [{name: customer_id, expr: item.customer_id}]
`

func load(t *testing.T, body string) *settings.Settings {
	t.Helper()
	st := settings.Defaults()
	if err := loadString(body, st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestEngineFiltersJoinsAndProjects(t *testing.T) {
	ctx := context.Background()
	reg := registry(t)
	st := load(t, pipelineYAML)
	customers := &mapSource{names: []string{"id"}, items: map[string]map[string]types.AttributeValue{}}
	customers.put(t, map[string]types.AttributeValue{"id": s("c1")}, map[string]types.AttributeValue{"id": s("c1"), "tier": s("gold"), "name": s("Ada")})
	customers.put(t, map[string]types.AttributeValue{"id": s("c2")}, map[string]types.AttributeValue{"id": s("c2"), "tier": s("silver"), "name": s("Bob")})
	products := &mapSource{names: []string{"sku"}, items: map[string]map[string]types.AttributeValue{}}
	products.put(t, map[string]types.AttributeValue{"sku": s("p1")}, map[string]types.AttributeValue{"sku": s("p1"), "category": s("books")})
	dlq, err := serde.NewDeadLetterEncoder(ctx, reg, st.DeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(ctx, st, Sources{Global: map[string]Source{"customers": customers}, Lookups: map[string]Source{"products": products}},
		reg, dlq, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := serde.NewTableEncoder(ctx, reg, "cdc.orders", "orders", ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	add := func(op, id string, before, after map[string]types.AttributeValue) {
		ev := &ddbavro.Event{Op: op, Before: before, After: after, TsMs: time.UnixMilli(1795500000000).UTC(),
			Source: avrov1.Source{Table: "orders", SequenceNumber: aws.String("1" + id[1:]), ApproximateCreationMs: time.UnixMilli(1795500000000).UTC(), StreamViewType: "NEW_AND_OLD_IMAGES"}}
		k, v, err := enc.Encode(ctx, avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(id)}}, ev)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: "cdc.orders", Partition: 0, Offset: int64(len(recs)), Key: k, Value: v})
	}
	const big = "12345678901234567890.123456789012345678" // 38 digits: copied, never through a double
	add("c", "o1", nil, map[string]types.AttributeValue{"customer_id": s("c1"), "amount": n(big), "sku": s("p1")})
	add("c", "o2", nil, map[string]types.AttributeValue{"customer_id": s("c2"), "amount": n("150"), "sku": s("nope")})
	add("c", "o3", nil, map[string]types.AttributeValue{"customer_id": s("c1"), "amount": n("5"), "sku": s("p1")})    // filtered
	add("c", "o4", nil, map[string]types.AttributeValue{"customer_id": s("zz"), "amount": n("500"), "sku": s("p1")})  // inner miss
	add("u", "o5", nil, map[string]types.AttributeValue{"customer_id": s("c1"), "amount": s("oops"), "sku": s("p1")}) // bad type
	add("d", "o6", map[string]types.AttributeValue{"customer_id": s("c1"), "amount": n("200"), "sku": s("p1")}, nil)  // delete
	add("d", "o7", nil, nil)                                                                                          // bare delete
	recs = append(recs, &kgo.Record{Topic: "cdc.orders", Offset: 99, Key: recs[0].Key, Value: []byte("not avro")})    // undecodable

	out, err := e.Process(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	dec := serde.NewDecoder(reg)
	type got struct {
		topic, key, op string
		ev             *ddbavro.Event
	}
	var outs []got
	var dead []*avrov1.DeadLetter
	for _, r := range out {
		if r.Topic == st.DeadLetters {
			_, payload, _ := serde.SplitHeader(r.Value)
			dl, err := serde.DecodeDeadLetter(r.Value)
			if err != nil {
				t.Fatal(err, payload)
			}
			dead = append(dead, dl)
			continue
		}
		ev, _, err := dec.Decode(ctx, r.Value)
		if err != nil {
			t.Fatalf("%s: %v", r.Topic, err)
		}
		k, err := dec.DecodeKey(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		kv := ""
		if k.PartitionKey.S != nil {
			kv = k.PartitionKey.Name + "=" + *k.PartitionKey.S
		}
		outs = append(outs, got{r.Topic, kv, ev.Op, ev})
	}
	want := []string{
		"big_orders id=o1 c", "by_customer customer_id=c1 c",
		"big_orders id=o2 c",
		"by_customer customer_id=c1 c", // o3: filtered out of big_orders only
		"by_customer customer_id=c1 u", // o5: fails big_orders' filter only
		"big_orders id=o6 d", "by_customer customer_id=c1 d",
		"big_orders id=o7 d", // the bare delete passes big_orders; by_customer's key needs the item
	}
	var have []string
	for _, g := range outs {
		have = append(have, strings.TrimPrefix(g.topic, "ddb2delta.enriched.")+" "+g.key+" "+g.op)
	}
	if strings.Join(have, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outputs:\n%s\nwant:\n%s", strings.Join(have, "\n"), strings.Join(want, "\n"))
	}
	o1 := outs[0].ev.After
	checkAttr(t, o1, "order_id", s("o1"))
	checkAttr(t, o1, "amount", n(big))
	checkAttr(t, o1, "tier", s("gold"))
	checkAttr(t, o1, "category", s("books"))
	checkAttr(t, o1, "name_upper", s("ADA"))
	if ss, ok := o1["tags"].(*types.AttributeValueMemberSS); !ok || strings.Join(ss.Value, ",") != "a,b" {
		t.Errorf("tags = %#v, want the string set a,b", o1["tags"])
	}
	checkAttr(t, outs[2].ev.After, "category", s("unknown")) // left join miss
	checkAttr(t, outs[2].ev.After, "double_amount", n("300"))
	// The declared column type travels in the output's schema, to every event decoded.
	if got := outs[2].ev.ColumnTypes; len(got) != 1 || got["double_amount"] != "decimal(12,2)" {
		t.Errorf("declared column types %v, want double_amount decimal(12,2)", got)
	}
	if outs[5].ev.After != nil || outs[5].ev.Before["amount"] == nil {
		t.Errorf("a delete carries the projection of the removed image as before: %+v", outs[5].ev)
	}
	if outs[7].ev.Before != nil || outs[7].ev.After != nil {
		t.Errorf("a bare delete has no images: %+v", outs[7].ev)
	}
	if outs[0].ev.Source.SequenceNumber == nil || *outs[0].ev.Source.SequenceNumber != "11" {
		t.Errorf("the source (sequence number) is kept: %+v", outs[0].ev.Source)
	}
	// o5 fails big_orders' filter (a string compared with a number), o7 by_customer's key (no item
	// to key by), the last record everywhere: one dead letter each, with the original bytes.
	if len(dead) != 3 {
		for _, d := range dead {
			t.Log(d.Reason)
		}
		t.Fatalf("%d dead letters, want 3", len(dead))
	}
	for i, want := range []string{"pipeline big_orders, filter", "pipeline by_customer, key customer_id", "not Confluent wire format"} {
		if !strings.Contains(dead[i].Reason, want) {
			t.Errorf("dead letter %d: %q does not mention %q", i, dead[i].Reason, want)
		}
	}
	if *dead[2].Offset != 99 || string(*dead[2].Value) != "not avro" {
		t.Errorf("the dead letter keeps the origin and bytes: %+v", dead[2])
	}
	// Both pipelines joined customers for o1..o6; the lookup was asked only for big_orders' events
	// past the filter and the inner join.
	if products.asked == 0 || products.asked > 4 {
		t.Errorf("products asked %d keys", products.asked)
	}
}

func checkAttr(t *testing.T, item map[string]types.AttributeValue, name string, want types.AttributeValue) {
	t.Helper()
	got, ok := item[name]
	if !ok {
		t.Errorf("%s missing from %v", name, item)
		return
	}
	gs, _ := ddbavro.MarshalDynamoJSON(&types.AttributeValueMemberL{Value: []types.AttributeValue{got}})
	ws, _ := ddbavro.MarshalDynamoJSON(&types.AttributeValueMemberL{Value: []types.AttributeValue{want}})
	if gs != ws {
		t.Errorf("%s = %s, want %s", name, gs, ws)
	}
}

func TestValidateNamesPipelineExpressionAndPosition(t *testing.T) {
	for body, want := range map[string]string{
		`pipelines: [{name: p, inputs: [t], filter: 'item.amount +'}]`:                                                                                            "pipeline p, filter: ERROR: 1:14: Syntax error",
		`pipelines: [{name: p, inputs: [t], filter: '1 + 2'}]`:                                                                                                    "pipeline p, filter: \"1 + 2\" is int, it must be bool",
		`pipelines: [{name: p, inputs: [t], filter: 'nosuch.x == 1'}]`:                                                                                            "undeclared reference to 'nosuch'",
		`pipelines: [{name: p, inputs: [t], projection: [{name: a, expr: source.nope}]}]`:                                                                         "source.nope: no such field",
		`pipelines: [{name: p, inputs: [t], projection: [{name: a, expr: '1', type: string}]}]`:                                                                   "pipeline p, projection a: \"1\" is a int",
		`pipelines: [{name: p, inputs: [t], key: [{name: a, expr: '[1]'}]}]`:                                                                                      "pipeline p, key a: a key attribute",
		`pipelines: [{name: p, inputs: [t], projection: [{name: a, expr: '"x"', type: long}]}]`:                                                                   "pipeline p, projection a: \"\\\"x\\\"\" is a string, but the field declares long",
		`pipelines: [{name: p, inputs: [t], projection: [{name: a, expr: item.a, type: varchar}]}]`:                                                               "is not one of [string number bool bytes list map string_set number_set any] nor a column type: unknown type \"varchar\"",
		`pipelines: [{name: p, inputs: [t], projection: [{name: a, expr: item.a, type: "set<binary>"}]}]`:                                                         "the enricher makes string and number sets, not binary ones",
		"lookups: [{name: l, table: tab}]\npipelines: [{name: p, inputs: [t], joins: [{as: a, lookup: l, on: {id: b.x}}, {as: b, lookup: l, on: {id: item.x}}]}]": "join a, on id: uses b, which is not joined yet",
	} {
		st := settings.Defaults()
		err := loadString(body, st)
		if err == nil {
			err = Validate(st)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %q", body, err, want)
		}
	}
}

func loadString(body string, st *settings.Settings) error {
	f, err := os.CreateTemp("", "enricher-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(body); err != nil {
		return err
	}
	f.Close()
	return config.LoadEnviron(f.Name(), settings.EnvPrefix, nil, st)
}

func TestSampleConfigCompiles(t *testing.T) {
	st := settings.Defaults()
	if err := config.LoadEnviron("../../../../deploy/config/enricher.yaml", settings.EnvPrefix, nil, st); err != nil {
		t.Fatal(err)
	}
	if err := Validate(st); err != nil {
		t.Fatalf("deploy/config/enricher.yaml: %v", err)
	}
}

// TestReadmeExamplesCompile loads every YAML example of the README and compiles its pipelines.
func TestReadmeExamplesCompile(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(raw), "```yaml\n")[1:]
	if len(blocks) < 2 {
		t.Fatalf("%d YAML examples in the README", len(blocks))
	}
	for i, b := range blocks {
		body := b[:strings.Index(b, "```")]
		st := settings.Defaults()
		if err := loadString(body, st); err != nil {
			t.Errorf("example %d: %v", i+1, err)
			continue
		}
		if err := Validate(st); err != nil {
			t.Errorf("example %d: %v", i+1, err)
		}
	}
}
