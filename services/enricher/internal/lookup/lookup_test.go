package lookup

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/keys"
)

// fakeTable answers BatchGetItem from a map: at most `limit` keys per call are processed (the
// rest come back unprocessed), the first `throttle` calls are throttled, and a key "bad" fails the
// whole call with a ValidationException, as DynamoDB does.
type fakeTable struct {
	items    map[string]map[string]types.AttributeValue
	limit    int
	throttle int
	calls    int
	asked    []int
}

func (f *fakeTable) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return &dynamodb.DescribeTableOutput{Table: &types.TableDescription{
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("sku"), KeyType: types.KeyTypeHash}},
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("sku"), AttributeType: types.ScalarAttributeTypeS}}}}, nil
}

func (f *fakeTable) BatchGetItem(_ context.Context, in *dynamodb.BatchGetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	f.calls++
	if f.throttle > 0 {
		f.throttle--
		return nil, &types.ProvisionedThroughputExceededException{Message: aws.String("slow down")}
	}
	ka := in.RequestItems["products"]
	f.asked = append(f.asked, len(ka.Keys))
	if len(ka.Keys) > 100 {
		return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: "too many keys"}
	}
	out := &dynamodb.BatchGetItemOutput{Responses: map[string][]map[string]types.AttributeValue{}, UnprocessedKeys: map[string]types.KeysAndAttributes{}}
	for i, k := range ka.Keys {
		sku := k["sku"].(*types.AttributeValueMemberS).Value
		if sku == "bad" {
			return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: "bad key"}
		}
		if f.limit > 0 && i >= f.limit {
			u := out.UnprocessedKeys["products"]
			u.Keys = append(u.Keys, k)
			out.UnprocessedKeys["products"] = u
			continue
		}
		if it, ok := f.items[sku]; ok {
			out.Responses["products"] = append(out.Responses["products"], it)
		}
	}
	return out, nil
}

func req(t *testing.T, sku string) Request {
	k := map[string]types.AttributeValue{"sku": &types.AttributeValueMemberS{Value: sku}}
	m, err := keys.Encode(k)
	if err != nil {
		t.Fatal(err)
	}
	return Request{Key: k, Match: m}
}

func TestLookupBatchesCachesAndRetries(t *testing.T) {
	f := &fakeTable{items: map[string]map[string]types.AttributeValue{}, limit: 60, throttle: 1}
	for _, sku := range []string{"a", "b", "c"} {
		f.items[sku] = map[string]types.AttributeValue{"sku": &types.AttributeValueMemberS{Value: sku}, "category": &types.AttributeValueMemberS{Value: "cat-" + sku}}
	}
	ctx := context.Background()
	l, err := New(ctx, Config{Name: "products", Table: "products", MaxEntries: 1000, TTL: time.Minute, NegativeTTL: time.Second, RateLimit: 1000},
		f, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	var reqs []Request
	for _, sku := range []string{"a", "b", "c", "a"} { // a twice: asked once
		reqs = append(reqs, req(t, sku))
	}
	for i := range 250 {
		reqs = append(reqs, req(t, "missing-"+string(rune('A'+i%26))+string(rune('a'+i/26))))
	}
	found, bad, err := l.Resolve(ctx, reqs)
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	if len(found) != 3 || found[string(req(t, "b").Match)]["category"].(*types.AttributeValueMemberS).Value != "cat-b" {
		t.Fatalf("found %v", found)
	}
	for _, n := range f.asked {
		if n > 100 {
			t.Fatalf("a call asked %d keys", n)
		}
	}
	calls := f.calls
	// Everything is cached now: found items and misses alike.
	if _, _, err := l.Resolve(ctx, reqs); err != nil || f.calls != calls {
		t.Fatalf("cached answers made %d calls (%v)", f.calls-calls, err)
	}
	// Misses expire after the negative TTL, found items after the TTL.
	now = now.Add(2 * time.Second)
	f.items["missing-Aa"] = map[string]types.AttributeValue{"sku": &types.AttributeValueMemberS{Value: "missing-Aa"}}
	found, _, err = l.Resolve(ctx, []Request{req(t, "a"), req(t, "missing-Aa")})
	if err != nil || len(found) != 2 || f.calls != calls+1 || f.asked[len(f.asked)-1] != 1 {
		t.Fatalf("after the negative TTL: found %d, %d calls, last asked %d (%v)", len(found), f.calls-calls, f.asked[len(f.asked)-1], err)
	}
	// One invalid key is singled out; the others are answered.
	found, bad, err = l.Resolve(ctx, []Request{req(t, "bad"), req(t, "c"), req(t, "new")})
	if err != nil || len(bad) != 1 || bad[string(req(t, "bad").Match)] == nil || len(found) != 1 {
		t.Fatalf("found %v, bad %v, err %v", found, bad, err)
	}
}

func TestLookupCheck(t *testing.T) {
	l, err := New(context.Background(), Config{Name: "products", Table: "products", MaxEntries: 10, TTL: time.Minute, RateLimit: 1},
		&fakeTable{}, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]map[string]types.AttributeValue{
		"key is [sku], the join gives [id]": {"id": &types.AttributeValueMemberS{Value: "x"}},
		"of type S, the join gives N":       {"sku": &types.AttributeValueMemberN{Value: "1"}},
		"is empty":                          {"sku": &types.AttributeValueMemberS{Value: ""}},
		"at most 2048":                      {"sku": &types.AttributeValueMemberS{Value: strings.Repeat("x", 2049)}},
	} {
		if err := l.Check(want); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Check(%v) = %v, want %q", want, err, key)
		}
	}
	if err := l.Check(map[string]types.AttributeValue{"sku": &types.AttributeValueMemberS{Value: "ok"}}); err != nil {
		t.Error(err)
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c := newCache(2)
	now := time.Unix(0, 0)
	item := map[string]types.AttributeValue{}
	c.put("a", item, now, time.Minute)
	c.put("b", item, now, time.Minute)
	c.get("a", now)
	c.put("c", item, now, time.Minute) // evicts b, the least recently used
	if _, _, fresh := c.get("b", now); fresh {
		t.Error("b survived")
	}
	if _, found, fresh := c.get("a", now); !fresh || !found {
		t.Error("a was evicted")
	}
	if _, _, fresh := c.get("a", now.Add(time.Minute)); fresh {
		t.Error("a outlived its TTL")
	}
}

// TestLookupMetricsExistBeforeTheFirstCall: a lookup's series are exported at zero once it is
// created, every request result included, so an increase() alert sees the first error.
func TestLookupMetricsExistBeforeTheFirstCall(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if _, err := New(context.Background(), Config{Name: "products", Table: "products", MaxEntries: 10, TTL: time.Minute, RateLimit: 1},
		&fakeTable{}, NewMetrics(reg), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{
		"ddb2delta_enricher_lookup_requests_total": 4, "ddb2delta_enricher_lookup_cache_total": 2,
		"ddb2delta_enricher_lookup_cache_entries": 1, "ddb2delta_enricher_lookup_request_seconds": 1,
	} {
		if got := testutil.CollectAndCount(reg, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
}
