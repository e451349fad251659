//go:build integration

package proc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

func str(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func num(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

// enrichedOrdersConfig is the pipeline of the enricher tests: orders of 100 or more, joined with
// their customer (a global table over the customers' cdc topic, inner) and their product (a
// DynamoDB lookup, left), projected.
func enrichedOrdersConfig(prefix, products string) string {
	return fmt.Sprintf(`
topic_prefix: %[1]s
consumer_group: %[1]s-enricher
topics: {partitions: 3, replication_factor: 1}
transaction_timeout: 10s
max_poll_records: 200
global_tables: [{name: customers, topic: %[1]s.cdc.customers}]
lookups: [{name: products, table: %[2]s, cache: {ttl: 1m, negative_ttl: 2s}, rate_limit: 20}]
pipelines:
  - name: big_orders
    inputs: [%[1]s.cdc.orders]
    filter: 'op != "d" && item.amount >= 100'
    joins:
      - {as: customer, global_table: customers, on: {id: item.customer_id}, type: inner}
      - {as: product, lookup: products, on: {sku: item.sku}, type: left}
    projection:
      - {name: order_id, expr: key.id}
      - {name: amount, expr: item.amount}
      - {name: customer_name, expr: customer.name}
      - {name: tier, expr: customer.tier}
      - {name: is_gold, expr: 'customer.tier == "gold"'}
      - {name: category, expr: 'product.?category.orValue("unknown")'}
      - {name: with_fee, expr: 'double(item.amount) * 1.5', type: number}
`, prefix, products)
}

func createProducts(t *testing.T, ctx context.Context, ddb *dynamodb.Client, table string, items map[string]string) {
	t.Helper()
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table), BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("sku"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("sku"), KeyType: types.KeyTypeHash}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	for sku, cat := range items {
		if _, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table),
			Item: map[string]types.AttributeValue{"sku": str(sku), "category": str(cat)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEnricherJoinsOrdersWithCustomersAndProducts runs the enricher binary on orders joined with
// customers (a compacted topic, restored before the first order is processed, then kept current)
// and products (a DynamoDB Local table); a registry-aware Python consumer with no ddb2delta code
// reads the output, checked field by field; a record that is not an event lands in the dead
// letters with its bytes.
func TestEnricherJoinsOrdersWithCustomersAndProducts(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 4*time.Minute)
	prefix := fmt.Sprintf("enrich%d", time.Now().UnixNano())
	reg := testRegistry(t, s)
	ddb := dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	products := prefix + "_products"
	createProducts(t, ctx, ddb, products, map[string]string{"p1": "books", "p2": "games"})

	customers := newChangeFeed(t, ctx, s, reg, prefix+".cdc.customers", "customers", 2, true)
	orders := newChangeFeed(t, ctx, s, reg, prefix+".cdc.orders", "orders", 3, false)
	customer := func(id, name, tier string) map[string]types.AttributeValue {
		return map[string]types.AttributeValue{"id": str(id), "name": str(name), "tier": str(tier)}
	}
	customers.put(ctx, "c", "c1", nil, customer("c1", "Ada", "silver"))
	customers.put(ctx, "u", "c1", customer("c1", "Ada", "silver"), customer("c1", "Ada", "gold")) // the newest wins
	customers.put(ctx, "c", "c2", nil, customer("c2", "Bob", "silver"))
	customers.put(ctx, "c", "c3", nil, customer("c3", "Cy", "gold"))
	customers.put(ctx, "d", "c3", customer("c3", "Cy", "gold"), nil) // gone: its orders miss the inner join

	type order struct{ id, customer, sku, amount string }
	var all []order
	for i := range 40 {
		o := order{id: fmt.Sprintf("o%02d", i), customer: []string{"c1", "c2", "c3", "c9"}[i%4],
			sku: []string{"p1", "p2", "p3"}[i%3], amount: strconv.Itoa(50 + 7*i)}
		all = append(all, o)
	}
	put := func(o order) {
		orders.put(ctx, "c", o.id, nil, map[string]types.AttributeValue{"id": str(o.id), "customer_id": str(o.customer), "sku": str(o.sku), "amount": num(o.amount)})
	}
	for _, o := range all {
		put(o)
	}
	orders.raw(ctx, []byte("key"), []byte("not a change event"))

	run := newEnricherRun(t, s, enrichedOrdersConfig(prefix, products))
	p := run.start("e1")
	// c9 arrives after the enricher restored customers and processed the 41 records above (their
	// c9 orders missed the inner join): an order placed once the table holds c9 is joined with it.
	run.committed(p, float64(len(all)))
	if n := metricSum(t, run.addrs[p], "ddb2delta_enricher_state_entries"); n != 2 {
		t.Fatalf("%g customers in the store, want 2 (c1, c2)", n)
	}
	customers.put(ctx, "c", "c9", nil, customer("c9", "Late", "gold"))
	stacktest.Eventually(t, time.Minute, "c9 in the store", func() error {
		if n := metricSum(t, run.addrs[p], "ddb2delta_enricher_state_entries"); n != 3 {
			return fmt.Errorf("%g customers in the store", n)
		}
		return nil
	})
	late := order{id: "late", customer: "c9", sku: "p2", amount: "300"}
	put(late)

	want := map[string]map[string]any{}
	tiers := map[string]string{"c1": "gold", "c2": "silver"}
	names := map[string]string{"c1": "Ada", "c2": "Bob", "c9": "Late"}
	for _, o := range all {
		amount, _ := strconv.Atoi(o.amount)
		if amount < 100 || (o.customer != "c1" && o.customer != "c2") {
			continue // filtered, or no such customer (c3 deleted; c9 not there yet when these were processed)
		}
		want[o.id] = expectedOrder(o.id, amount, names[o.customer], tiers[o.customer], o.sku)
	}
	want["late"] = expectedOrder("late", 300, "Late", "gold", "p2")

	recs := s.ForeignConsume(t, prefix+".enriched.big_orders", len(want))
	for _, r := range recs {
		key := r["key"].(map[string]any)["partition_key"].(map[string]any)
		value := r["value"].(map[string]any)
		after := value["after"].(map[string]any)
		id := after["order_id"].(string)
		if key["name"] != "id" || key["s"] != id {
			t.Errorf("order %s has key %v; the input's key is kept", id, key)
		}
		if value["op"] != "c" || value["before"] != nil {
			t.Errorf("order %s: op %v, before %v", id, value["op"], value["before"])
		}
		src := value["source"].(map[string]any)
		if src["table"] != "orders" || src["sequence_number"] == nil {
			t.Errorf("order %s: the source is the input's: %v", id, src)
		}
		exp, ok := want[id]
		if !ok {
			t.Errorf("order %s should not be in the output: %v", id, after)
			continue
		}
		delete(want, id)
		for field, w := range exp {
			if got := fmt.Sprint(after[field]); got != fmt.Sprint(w) {
				t.Errorf("order %s: %s = %s, want %v", id, field, got, w)
			}
		}
		if len(after) != len(exp) {
			t.Errorf("order %s: fields %v, want exactly %v", id, after, exp)
		}
	}
	if len(want) > 0 {
		t.Errorf("missing from the output: %v", want)
	}

	// The record that is no event: a dead letter with the reason and the original bytes.
	dl := kafkaClient(t, s, kgo.ConsumeTopics(prefix+".dlq.enricher"), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	stacktest.Eventually(t, time.Minute, "the dead letter", func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var found error = fmt.Errorf("no dead letter yet")
		dl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			d, err := serde.DecodeDeadLetter(r.Value)
			if err != nil {
				t.Fatalf("dead letter: %v", err)
			}
			if d.Service != "enricher" || d.ErrorClass != "decode" || d.Value == nil || string(*d.Value) != "not a change event" ||
				*d.Topic != prefix+".cdc.orders" || !strings.Contains(d.Reason, "wire format") {
				t.Fatalf("dead letter %+v", d)
			}
			found = nil
		})
		return found
	})
	if code, err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit %d, %v\n%s", code, err, p.Output())
	}
}

// expectedOrder is an output order as the Python consumer prints it.
func expectedOrder(id string, amount int, name, tier, sku string) map[string]any {
	category := map[string]string{"p1": "books", "p2": "games"}[sku]
	if category == "" {
		category = "unknown"
	}
	fee := strconv.FormatFloat(float64(amount)*1.5, 'f', -1, 64)
	return map[string]any{"order_id": id, "amount": amount, "customer_name": name, "tier": tier,
		"is_gold": tier == "gold", "category": category, "with_fee": map[string]any{"$decimal": fee}}
}
