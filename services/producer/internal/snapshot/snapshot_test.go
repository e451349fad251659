package snapshot

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

func TestPosition(t *testing.T) {
	tests := []struct {
		name   string
		shards []streams.Shard
		want   string
		err    string
	}{
		{"least open start minus one; closed shards ignored", []streams.Shard{
			{ID: "a", Start: "100", Closed: true},
			{ID: "b", Start: "49000000000000000000000000000000000000500"},
			{ID: "c", Start: "49000000000000000000000000000000000000300"},
		}, "49000000000000000000000000000000000000299", ""},
		{"zero stays zero", []streams.Shard{{ID: "a", Start: "000000000000000000000"}}, "0", ""},
		{"no open shard", []streams.Shard{{ID: "a", Start: "5", Closed: true}}, "", "no open shard"},
		{"missing start", []streams.Shard{{ID: "a"}}, "", "open shard a has no valid starting sequence number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Position(tt.shards)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Position = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestBudget(t *testing.T) {
	provisioned := &types.TableDescription{ProvisionedThroughput: &types.ProvisionedThroughputDescription{ReadCapacityUnits: aws.Int64(1000)}}
	onDemandMax := &types.TableDescription{ProvisionedThroughput: &types.ProvisionedThroughputDescription{ReadCapacityUnits: aws.Int64(0)},
		OnDemandThroughput: &types.OnDemandThroughput{MaxReadRequestUnits: aws.Int64(200)}}
	onDemand := &types.TableDescription{ProvisionedThroughput: &types.ProvisionedThroughputDescription{ReadCapacityUnits: aws.Int64(0)}}
	for _, c := range []struct {
		t    *types.TableDescription
		want float64
	}{{provisioned, 250}, {onDemandMax, 50}, {onDemand, 1000}, {nil, 1000}} {
		if got := Budget(c.t, 0.25, 4000); got != c.want {
			t.Errorf("Budget = %g, want %g", got, c.want)
		}
	}
}

// fakeClock lets the pacer's waits be checked without waiting.
type fakeClock struct {
	now   time.Time
	slept []time.Duration
}

func (c *fakeClock) pacer(rate float64) *Pacer {
	return &Pacer{Rate: rate, now: func() time.Time { return c.now }, sleep: func(_ context.Context, d time.Duration) error {
		c.slept = append(c.slept, d)
		c.now = c.now.Add(d)
		return nil
	}}
}

func TestPacerHoldsTheRate(t *testing.T) {
	c := &fakeClock{now: time.Unix(1000, 0)}
	p := c.pacer(50)
	ctx := context.Background()
	// 20 requests of 10 units each, instant to serve: 200 units at 50/s take 4 s minus the last
	// request's repayment, which has not been waited for yet.
	start := c.now
	for range 20 {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		p.Spent(10)
	}
	if got, want := c.now.Sub(start), 3800*time.Millisecond; got != want {
		t.Fatalf("20 requests took %s, want %s", got, want)
	}
	// Requests slower than the budget are not delayed further.
	c.slept = nil
	c.now = c.now.Add(time.Hour)
	for range 5 {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		p.Spent(1)
		c.now = c.now.Add(time.Second) // each request takes 1 s, costing only 1/50 s of budget
	}
	if len(c.slept) != 0 {
		t.Fatalf("slow requests were delayed: %v", c.slept)
	}
	// Unlimited.
	u := c.pacer(0)
	u.Spent(1e9)
	if err := u.Wait(ctx); err != nil || len(c.slept) != 0 {
		t.Fatalf("unlimited pacer waited: %v %v", err, c.slept)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	k := map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "ünïcode \"quoted\""},
		"sk": &types.AttributeValueMemberN{Value: "12345678901234567890123456789012345678"},
		"b":  &types.AttributeValueMemberB{Value: []byte{0, 1, 2, 255}},
	}
	s, err := EncodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeKey(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, k) {
		t.Fatalf("round trip: %#v != %#v", back, k)
	}
	if s, err := EncodeKey(nil); s != "" || err != nil {
		t.Fatalf("nil key = %q, %v", s, err)
	}
	if _, err := EncodeKey(map[string]types.AttributeValue{"x": &types.AttributeValueMemberBOOL{Value: true}}); err == nil {
		t.Fatal("a BOOL key attribute was accepted")
	}
	if _, err := DecodeKey("{not json"); err == nil || !strings.Contains(err.Error(), "{not json") {
		t.Fatalf("bad checkpoint: %v", err)
	}
}

// scanFake serves a table of n items split into segments by item index modulo total, pageSize at
// a time, throttling every call listed in throttle.
type scanFake struct {
	n        int
	throttle map[int]bool
	calls    int
	inputs   []dynamodb.ScanInput
	units    *float64
}

func (f *scanFake) Scan(_ context.Context, in *dynamodb.ScanInput, _ ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	f.calls++
	f.inputs = append(f.inputs, *in)
	if f.throttle[f.calls] {
		return nil, &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException", Message: "slow down"}
	}
	from := 0
	if in.ExclusiveStartKey != nil {
		n := in.ExclusiveStartKey["id"].(*types.AttributeValueMemberN).Value
		from = atoi(n) + 1
	}
	out := &dynamodb.ScanOutput{ConsumedCapacity: &types.ConsumedCapacity{CapacityUnits: f.units}}
	last := -1
	for i := from; i < f.n && len(out.Items) < int(*in.Limit); i++ {
		if i%int(*in.TotalSegments) != int(*in.Segment) {
			continue
		}
		out.Items = append(out.Items, map[string]types.AttributeValue{"id": &types.AttributeValueMemberN{Value: itoa(i)},
			"pad": &types.AttributeValueMemberS{Value: strings.Repeat("x", 5000)}})
		last = i
	}
	more := false
	for i := last + 1; i < f.n && last >= 0; i++ {
		if i%int(*in.TotalSegments) == int(*in.Segment) {
			more = true
			break
		}
	}
	if more {
		out.LastEvaluatedKey = map[string]types.AttributeValue{"id": &types.AttributeValueMemberN{Value: itoa(last)}}
	}
	return out, nil
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestSegmentReadsResumesAndRetriesThrottles(t *testing.T) {
	ctx := context.Background()
	f := &scanFake{n: 23, throttle: map[int]bool{2: true, 3: true}}
	throttles := 0
	seg := &Segment{API: f, Table: "t", Index: 1, Total: 2, PageSize: 4, Consistent: true, Pacer: NewPacer(0),
		Throttled: func() { throttles++ }}
	var ids []string
	var checkpoints []string
	for {
		p, err := seg.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			ids = append(ids, it["id"].(*types.AttributeValueMemberN).Value)
		}
		if p.Units <= 0 {
			t.Fatalf("page without a cost estimate: %+v", p)
		}
		if p.End {
			if p.After != "" {
				t.Fatalf("last page has a position %q", p.After)
			}
			break
		}
		checkpoints = append(checkpoints, p.After)
	}
	if want := "1 3 5 7 9 11 13 15 17 19 21"; strings.Join(ids, " ") != want {
		t.Fatalf("segment 1/2 read %v, want %s", ids, want)
	}
	if throttles != 2 {
		t.Fatalf("%d throttles reported, want 2", throttles)
	}
	for _, in := range f.inputs {
		if !aws.ToBool(in.ConsistentRead) || in.ReturnConsumedCapacity != types.ReturnConsumedCapacityTotal || aws.ToInt32(in.Segment) != 1 {
			t.Fatalf("scan input %+v", in)
		}
	}
	// A new reader resuming after the second page's checkpoint reads exactly the rest.
	resumed := &Segment{API: f, Table: "t", Index: 1, Total: 2, PageSize: 4, Consistent: true, Pacer: NewPacer(0)}
	if err := resumed.Resume(checkpoints[1]); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for {
		p, err := resumed.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			rest = append(rest, it["id"].(*types.AttributeValueMemberN).Value)
		}
		if p.End {
			break
		}
	}
	if want := "17 19 21"; strings.Join(rest, " ") != want {
		t.Fatalf("resumed segment read %v, want %s", rest, want)
	}
	// A finished segment stays finished without calling DynamoDB.
	calls := f.calls
	if p, err := resumed.Next(ctx); err != nil || !p.End || f.calls != calls {
		t.Fatalf("after the end: %+v %v, %d calls", p, err, f.calls-calls)
	}
}

func TestSegmentReportsOtherErrorsWithTheSegment(t *testing.T) {
	f := &failingScan{}
	seg := &Segment{API: f, Table: "orders", Index: 2, Total: 4, PageSize: 10, Pacer: NewPacer(0)}
	_, err := seg.Next(context.Background())
	if err == nil || !strings.Contains(err.Error(), "orders segment 2/4") || !errors.Is(err, errBoom) {
		t.Fatalf("error %v", err)
	}
}

var errBoom = errors.New("boom")

type failingScan struct{}

func (failingScan) Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	return nil, errBoom
}

func TestReportedUnitsArePaced(t *testing.T) {
	c := &fakeClock{now: time.Unix(0, 0)}
	f := &scanFake{n: 40, units: aws.Float64(8)}
	seg := &Segment{API: f, Table: "t", Index: 0, Total: 1, PageSize: 10, Pacer: c.pacer(4)}
	for {
		p, err := seg.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if p.Units != 8 {
			t.Fatalf("units %g, want the reported 8", p.Units)
		}
		if p.End {
			break
		}
	}
	// Four pages of 8 units at 4 units/s: three waits of 2 s before the second to fourth pages.
	if want := []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second}; !reflect.DeepEqual(c.slept, want) {
		t.Fatalf("waits %v, want %v", c.slept, want)
	}
}
