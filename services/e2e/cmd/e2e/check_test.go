package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// TestItemOfRebuildsEveryKind reads a row as delta-rs prints it back into the item it came from,
// and diffItems tells it apart from an item that differs in one nested digit.
func TestItemOfRebuildsEveryKind(t *testing.T) {
	var schema deltaSchema
	if err := json.Unmarshal([]byte(`{"fields": [
		{"name": "id", "type": "string", "metadata": {"ddb.attr": "id", "ddb.kind": "s"}},
		{"name": "qty", "type": "long", "metadata": {"ddb.attr": "qty", "ddb.kind": "n"}},
		{"name": "amount__decimal", "type": "decimal(38,18)", "metadata": {"ddb.attr": "amount", "ddb.kind": "decimal"}},
		{"name": "big", "type": "string", "metadata": {"ddb.attr": "big", "ddb.kind": "number"}},
		{"name": "payload", "type": "binary", "metadata": {"ddb.attr": "payload", "ddb.kind": "b"}},
		{"name": "gift", "type": "boolean", "metadata": {"ddb.attr": "gift", "ddb.kind": "bool"}},
		{"name": "nothing", "type": "boolean", "metadata": {"ddb.attr": "nothing", "ddb.kind": "null"}},
		{"name": "tags", "type": {"type": "array"}, "metadata": {"ddb.attr": "tags", "ddb.kind": "ss"}},
		{"name": "history", "type": "string", "metadata": {"ddb.attr": "history", "ddb.kind": "l"}},
		{"name": "address", "type": {"type": "struct", "fields": [
			{"name": "zip", "type": "string", "metadata": {"ddb.attr": "zip", "ddb.kind": "s"}}]},
			"metadata": {"ddb.attr": "address", "ddb.kind": "m"}},
		{"name": "_op", "type": "string", "metadata": {}}]}`), &schema); err != nil {
		t.Fatal(err)
	}
	var row map[string]any
	d := json.NewDecoder(strings.NewReader(`{"id": "o1", "qty": 3, "amount__decimal": "12.500000000000000000",
		"big": "99999999999999999999999999999999999999", "payload": "AAEC", "gift": true, "nothing": true,
		"tags": ["b", "a"], "history": "{\"L\":[{\"S\":\"x\"},{\"N\":\"7\"}]}", "address": {"zip": "69001"}, "_op": "u"}`))
	d.UseNumber()
	if err := d.Decode(&row); err != nil {
		t.Fatal(err)
	}
	got, err := itemOf(schema.Fields, row)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]types.AttributeValue{
		"id": s("o1"), "qty": n("3"), "amount": n("12.5"), "big": n("99999999999999999999999999999999999999"),
		"payload": &types.AttributeValueMemberB{Value: []byte{0, 1, 2}}, "gift": &types.AttributeValueMemberBOOL{Value: true},
		"nothing": &types.AttributeValueMemberNULL{Value: true}, "tags": &types.AttributeValueMemberSS{Value: []string{"a", "b"}},
		"history": &types.AttributeValueMemberL{Value: []types.AttributeValue{s("x"), n("7")}},
		"address": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"zip": s("69001")}},
	}
	diffs, err := diffItems("t", map[string]map[string]types.AttributeValue{"o1": want}, map[string]map[string]types.AttributeValue{"o1": got}, 10)
	if err != nil || len(diffs) != 0 {
		t.Fatalf("the row does not read back as its item: %v %v", diffs, err)
	}
	want["address"] = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"zip": s("69002")}}
	diffs, _ = diffItems("t", map[string]map[string]types.AttributeValue{"o1": want, "o2": want}, map[string]map[string]types.AttributeValue{"o1": got}, 10)
	if len(diffs) != 2 || !strings.Contains(diffs[0], "key o1 differs") || !strings.Contains(diffs[1], "key o2 missing") {
		t.Fatalf("diffs: %v", diffs)
	}
}

// TestItemOfTypedRow: a typed table's row (one column per attribute, by ddb.type) with its
// _rescued_data folded in reads back as its item.
func TestItemOfTypedRow(t *testing.T) {
	var schema deltaSchema
	if err := json.Unmarshal([]byte(`{"fields": [
		{"name": "id", "type": "string", "metadata": {"ddb.attr": "id", "ddb.type": "string", "ddb.key": "hash"}},
		{"name": "amount", "type": "decimal(38,18)", "metadata": {"ddb.attr": "amount", "ddb.type": "decimal(38,18)"}},
		{"name": "qty", "type": "long", "metadata": {"ddb.attr": "qty", "ddb.type": "long"}},
		{"name": "score", "type": "double", "metadata": {"ddb.attr": "score", "ddb.type": "double"}},
		{"name": "payload", "type": "binary", "metadata": {"ddb.attr": "payload", "ddb.type": "binary"}},
		{"name": "tags", "type": {"type": "array"}, "metadata": {"ddb.attr": "tags", "ddb.type": "set<string>"}},
		{"name": "scores", "type": {"type": "array"}, "metadata": {"ddb.attr": "scores", "ddb.type": "set<decimal(38,18)>"}},
		{"name": "skus", "type": {"type": "array"}, "metadata": {"ddb.attr": "skus", "ddb.type": "array<string>"}},
		{"name": "history", "type": "string", "metadata": {"ddb.attr": "history", "ddb.type": "json"}},
		{"name": "odd_name", "type": "string", "metadata": {"ddb.attr": "odd name", "ddb.type": "string"}},
		{"name": "address", "type": {"type": "struct", "fields": [
			{"name": "zip", "type": "string", "metadata": {"ddb.attr": "zip", "ddb.type": "string"}}]},
			"metadata": {"ddb.attr": "address", "ddb.type": "struct"}},
		{"name": "_rescued_data", "type": "string", "metadata": {"ddb.rescued": true}},
		{"name": "_op", "type": "string", "metadata": {}}]}`), &schema); err != nil {
		t.Fatal(err)
	}
	var row map[string]any
	d := json.NewDecoder(strings.NewReader(`{"id": "o1", "amount": "12.500000000000000000", "qty": 3, "score": 0.1,
		"payload": "AAEC", "tags": ["a", "b"], "scores": ["1.500000000000000000", "10.000000000000000000"], "skus": ["s1", "s2"],
		"history": "[\"x\",7,null,{\"k\":true}]", "odd_name": "v", "address": {"zip": null},
		"_rescued_data": "{\"address.zip\":{\"N\":\"69001\"},\"gone\":{\"NULL\":true},\"huge\":{\"N\":\"1E+100\"}}", "_op": "u"}`))
	d.UseNumber()
	if err := d.Decode(&row); err != nil {
		t.Fatal(err)
	}
	got, err := itemOf(schema.Fields, row)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]types.AttributeValue{
		"id": s("o1"), "amount": n("12.5"), "qty": n("3"), "score": n("0.1"), "payload": &types.AttributeValueMemberB{Value: []byte{0, 1, 2}},
		"tags": &types.AttributeValueMemberSS{Value: []string{"b", "a"}}, "scores": &types.AttributeValueMemberNS{Value: []string{"10", "1.5"}},
		"skus":     &types.AttributeValueMemberL{Value: []types.AttributeValue{s("s1"), s("s2")}},
		"history":  &types.AttributeValueMemberL{Value: []types.AttributeValue{s("x"), n("7"), &types.AttributeValueMemberNULL{Value: true}, &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"k": &types.AttributeValueMemberBOOL{Value: true}}}}},
		"odd name": s("v"), "address": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"zip": n("69001")}},
		"gone": &types.AttributeValueMemberNULL{Value: true}, "huge": n("1E+100"),
	}
	diffs, err := diffItems("t", map[string]map[string]types.AttributeValue{"o1": want}, map[string]map[string]types.AttributeValue{"o1": got}, 10)
	if err != nil || len(diffs) != 0 {
		t.Fatalf("the typed row does not read back as its item: %v %v", diffs, err)
	}
}
