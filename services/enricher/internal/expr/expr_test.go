package expr

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/cel-go/cel"
	celtypes "github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/traits"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

var orders = &Schema{Attributes: []string{"id", "status", "amount", "tags", "customer", "address", "price"}}

func event() (*ddbavro.Event, avrov1.Key) {
	after := map[string]types.AttributeValue{
		"id": &types.AttributeValueMemberS{Value: "o-1"}, "status": &types.AttributeValueMemberS{Value: "paid"},
		"amount": &types.AttributeValueMemberN{Value: "120"}, "price": &types.AttributeValueMemberN{Value: "19.95"},
		"tags":     &types.AttributeValueMemberSS{Value: []string{"gift", "express"}},
		"customer": &types.AttributeValueMemberNULL{Value: true},
		"address":  &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"city": &types.AttributeValueMemberS{Value: "Lyon"}}},
	}
	ev := &ddbavro.Event{Op: "u", After: after, TsMs: time.UnixMilli(1795500000000), Source: avrov1.Source{
		Table: "orders", SequenceNumber: aws.String("42"), ApproximateCreationMs: time.UnixMilli(1795500000000), StreamViewType: "NEW_IMAGE"}}
	return ev, avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String("o-1")}}
}

func TestFiltersEvaluateOverDynamoDBValues(t *testing.T) {
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	vars, err := Vars(event())
	if err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]bool{
		`op == "u" && after.status == "paid"`:                         true,
		`after.amount > 100 && after.price < 20.0`:                    true,
		`"gift" in after.tags && after.tags.size() == 2`:              true,
		`after.address.city.lowerAscii() == "lyon"`:                   true,
		`after.customer == null`:                                      true,
		`has(before.status)`:                                          false,
		`!source.snapshot && source.sequence_number == "42"`:          true,
		`key.id.startsWith("o-") && !has(source.shard_id)`:            true,
		`sets.intersects(after.tags, ["express"])`:                    true,
		`after.exists(a, a == "price") && after.all(a, a.size() > 1)`: true,
	} {
		p, err := env.Compile("pipeline orders, filter", src, orders, cel.BoolType)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		got, err := p.Bool(vars)
		if err != nil || got != want {
			t.Errorf("%s = %v, %v; want %v", src, got, err, want)
		}
	}
}

func TestCompileErrorsNameThePipelineExpressionAndPosition(t *testing.T) {
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	for src, wants := range map[string][]string{
		`after.stauts == "paid"`:                   {"pipeline orders, filter", "1:6", "after.stauts", `no attribute "stauts"`},
		`op == "u" &&`:                             {"pipeline orders, filter", "1:13", "Syntax error"},
		`after.amount + 1`:                         {"pipeline orders, filter", "must be bool"},
		"op == \"u\" &&\n  before.colour == 'red'": {"2:9", "before.colour"},
		`source.shard == "x"`:                      {"1:7", "source.shard: no such field"},
		`undefined_var == 1`:                       {"undeclared reference to 'undefined_var'"},
	} {
		_, err := env.Compile("pipeline orders, filter", src, orders, cel.BoolType)
		if err == nil {
			t.Errorf("%q compiled", src)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error does not mention %q:\n%v", src, w, err)
			}
		}
	}
	// Without an item schema (document encoding), attribute names are not checked.
	if _, err := env.Compile("pipeline docs, filter", `after.anything == 1`, nil, cel.BoolType); err != nil {
		t.Fatal(err)
	}
}

func TestRuntimeErrorsNameTheExpression(t *testing.T) {
	env, _ := NewEnv()
	p, err := env.Compile("pipeline orders, filter", `after.address.zip == 1`, orders, cel.BoolType)
	if err != nil {
		t.Fatal(err)
	}
	vars, _ := Vars(event())
	if _, err := p.Bool(vars); err == nil || !strings.Contains(err.Error(), "pipeline orders, filter") || !strings.Contains(err.Error(), "zip") {
		t.Fatalf("missing nested key: %v", err)
	}
}

func TestNumbersKeepTheirKind(t *testing.T) {
	for in, want := range map[string]any{"7": int64(7), "-0.5": -0.5, "1E+3": int64(1000), "12345678901234567890123": 1.2345678901234568e22} {
		got, err := Value(&types.AttributeValueMemberN{Value: in})
		if err != nil || got != want {
			t.Errorf("%s → %#v, %v; want %#v", in, got, err, want)
		}
	}
	if _, err := Value(&types.AttributeValueMemberN{Value: "12abc"}); err == nil {
		t.Error("a malformed number was accepted")
	}
}

// get reads an attribute of an image variable as CEL would.
func get(v any, name string) any {
	switch m := v.(type) {
	case map[string]any:
		return m[name]
	case traits.Mapper:
		x, ok := m.Find(celtypes.String(name))
		if !ok {
			return nil
		}
		return x.Value()
	}
	return fmt.Sprintf("not a map: %T", v)
}

func size(v any) int64 {
	switch m := v.(type) {
	case map[string]any:
		return int64(len(m))
	case traits.Mapper:
		return int64(m.Size().(celtypes.Int))
	}
	return -1
}

func TestVarsForConvertsOnlyWhatIsRead(t *testing.T) {
	ev, key := event()
	ev.Op, ev.Before, ev.After = "d", ev.After, nil
	vars, err := VarsFor(ev, key, map[string]bool{"item": true})
	if err != nil {
		t.Fatal(err)
	}
	if get(vars["item"], "status") != "paid" {
		t.Fatalf("item of a delete is its before image: %v", vars["item"])
	}
	ev.Op, ev.After = "u", ev.Before
	vars, _ = VarsFor(ev, key, map[string]bool{"item": true})
	if size(vars["before"]) != 0 || get(vars["item"], "status") != "paid" {
		t.Fatalf("an update read through item converts after only: before %v", vars["before"])
	}
	vars, _ = VarsFor(ev, key, map[string]bool{"op": true})
	if size(vars["after"]) != 0 || vars["op"] != "u" || vars["key"].(map[string]any)["id"] != "o-1" {
		t.Fatalf("no image read, none converted: %v", vars)
	}
}

// TestAttributesConvertWhenRead: an attribute is converted when an expression reads it, so one
// that cannot be (a malformed number) fails only the expressions that read it.
func TestAttributesConvertWhenRead(t *testing.T) {
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	ev, key := event()
	ev.After = maps.Clone(ev.After)
	ev.After["bad"] = &types.AttributeValueMemberN{Value: "12abc"}
	vars, err := Vars(ev, key)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := must(env.Compile("pipeline p, filter", `after.status == "paid" && after.size() == 8`, nil, cel.BoolType)).Bool(vars)
	if err != nil || !ok {
		t.Fatalf("an expression not reading the bad value: %v %v", ok, err)
	}
	if _, err := must(env.Compile("pipeline p, filter", `after.bad > 1`, nil, cel.BoolType)).Bool(vars); err == nil || !strings.Contains(err.Error(), "12abc") {
		t.Fatalf("reading the bad value: %v", err)
	}
}

func must(p *Program, err error) *Program {
	if err != nil {
		panic(err)
	}
	return p
}
