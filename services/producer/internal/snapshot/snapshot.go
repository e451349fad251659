// Package snapshot reads a DynamoDB table's existing items for the producer's initial load: a
// parallel Scan, paced to a share of the table's read capacity, resumable page by page.
//
// Ordering against the stream. The producer publishes a table's stream only once its snapshot is
// complete, so in every Kafka partition an item's snapshot row precedes its stream changes; and
// snapshot rows carry, as their sequence number, a stream position P taken before the scan
// starts: one less than the smallest starting sequence number among the stream's open shards.
// Sequence numbers grow along a shard's lineage (a record is after its shard's start, a child
// shard starts after its parent), so:
//   - every change made after the scan started is in a shard open at that time or in one of its
//     descendants, so its sequence number is greater than P;
//   - hence every change with a sequence number at or below P was made before the scan started,
//     and a (strongly consistent) Scan reflects it.
//
// A consumer that keeps the change with the greatest (sequence number, stream-before-snapshot)
// per key, as the sink's mirror mode does, ends with the item's true latest state: if any change
// of the key above P is published, every later change of the key is published too (the stream is
// read without gaps from its trim horizon or the last checkpoint), so the newest one wins; if none
// is, the item has not changed since before the scan and the snapshot row is its state. Stream
// changes at or below P, published after the snapshot row, rank below it and are ignored. A
// consumer applying changes in partition order without comparing sequence numbers gets the same
// final state, except that it briefly shows those older changes.
package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

// API is the DynamoDB call a snapshot makes. *dynamodb.Client implements it.
type API interface {
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// Position returns the sequence number snapshot rows carry (see the package comment): one less
// than the smallest starting sequence number of the stream's open shards, and not below zero.
func Position(shards []streams.Shard) (string, error) {
	var least *big.Int
	for _, s := range shards {
		if s.Closed {
			continue
		}
		n, ok := new(big.Int).SetString(s.Start, 10)
		if !ok || n.Sign() < 0 {
			return "", fmt.Errorf("open shard %s has no valid starting sequence number (%q)", s.ID, s.Start)
		}
		if least == nil || n.Cmp(least) < 0 {
			least = n
		}
	}
	if least == nil {
		return "", errors.New("the stream has no open shard: it is being disabled; the snapshot waits for an enabled stream")
	}
	if least.Sign() > 0 {
		least.Sub(least, big.NewInt(1))
	}
	return least.String(), nil
}

// Budget returns the read capacity units per second the whole snapshot may consume: share of the
// table's provisioned read capacity, of its on-demand maximum when one is set, or of onDemand.
func Budget(t *types.TableDescription, share, onDemand float64) float64 {
	capacity := onDemand
	if t != nil {
		if p := t.ProvisionedThroughput; p != nil && aws.ToInt64(p.ReadCapacityUnits) > 0 {
			capacity = float64(aws.ToInt64(p.ReadCapacityUnits))
		} else if o := t.OnDemandThroughput; o != nil && aws.ToInt64(o.MaxReadRequestUnits) > 0 {
			capacity = float64(aws.ToInt64(o.MaxReadRequestUnits))
		}
	}
	return share * capacity
}

// Pacer spaces requests so that the capacity they consume averages at most Rate units per second.
// The cost of a request is known only after it returns, so a request may overdraw: the next one
// waits until the overdraft is paid back.
type Pacer struct {
	Rate  float64 // units per second; <= 0 means unlimited
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
	next  time.Time // when the next request may start
}

// NewPacer returns a pacer of rate units per second.
func NewPacer(rate float64) *Pacer {
	return &Pacer{Rate: rate, now: time.Now, sleep: backoff.Sleep}
}

// Wait blocks until the next request may start.
func (p *Pacer) Wait(ctx context.Context) error {
	if d := p.next.Sub(p.now()); d > 0 {
		return p.sleep(ctx, d)
	}
	return ctx.Err()
}

// Spent charges units consumed by the request that just returned.
func (p *Pacer) Spent(units float64) {
	if p.Rate <= 0 || units <= 0 {
		return
	}
	base := p.now()
	if p.next.After(base) {
		base = p.next
	}
	p.next = base.Add(time.Duration(units / p.Rate * float64(time.Second)))
}

// keyAttr is one key attribute in a checkpoint: key attributes are strings, numbers or binary.
type keyAttr struct {
	S *string `json:"S,omitempty"`
	N *string `json:"N,omitempty"`
	B []byte  `json:"B,omitempty"`
}

// EncodeKey renders a Scan's LastEvaluatedKey as checkpoint text ("" for none).
func EncodeKey(k map[string]types.AttributeValue) (string, error) {
	if len(k) == 0 {
		return "", nil
	}
	out := make(map[string]keyAttr, len(k))
	for name, v := range k {
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			out[name] = keyAttr{S: aws.String(v.Value)}
		case *types.AttributeValueMemberN:
			out[name] = keyAttr{N: aws.String(v.Value)}
		case *types.AttributeValueMemberB:
			out[name] = keyAttr{B: v.Value}
		default:
			return "", fmt.Errorf("key attribute %s has type %T, not S, N or B", name, v)
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// DecodeKey parses checkpoint text back into an ExclusiveStartKey (nil for "").
func DecodeKey(s string) (map[string]types.AttributeValue, error) {
	if s == "" {
		return nil, nil
	}
	var in map[string]keyAttr
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("snapshot checkpoint %q is not a scan key: %w", s, err)
	}
	out := make(map[string]types.AttributeValue, len(in))
	for name, v := range in {
		switch {
		case v.S != nil:
			out[name] = &types.AttributeValueMemberS{Value: *v.S}
		case v.N != nil:
			out[name] = &types.AttributeValueMemberN{Value: *v.N}
		case v.B != nil:
			out[name] = &types.AttributeValueMemberB{Value: v.B}
		default:
			return nil, fmt.Errorf("snapshot checkpoint %q: attribute %s has no value", s, name)
		}
	}
	return out, nil
}

// Page is one Scan page of a segment.
type Page struct {
	Items []map[string]types.AttributeValue
	After string  // checkpoint text of the page's LastEvaluatedKey; "" at the end
	End   bool    // the segment is finished
	Units float64 // read capacity the page consumed
}

// Segment reads one segment of a parallel Scan.
type Segment struct {
	API        API
	Table      string
	Index      int
	Total      int
	PageSize   int32
	Consistent bool
	Pacer      *Pacer
	Throttled  func() // called for each throttled call

	start map[string]types.AttributeValue
	done  bool
}

// Resume positions the segment after the key recorded in a checkpoint ("" starts at its
// beginning).
func (s *Segment) Resume(after string) error {
	k, err := DecodeKey(after)
	s.start = k
	return err
}

// Next returns the segment's next page, waiting for the pacer first and retrying throttled calls
// with backoff.
func (s *Segment) Next(ctx context.Context) (Page, error) {
	if s.done {
		return Page{End: true}, nil
	}
	b := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for {
		if err := s.Pacer.Wait(ctx); err != nil {
			return Page{}, err
		}
		out, err := s.API.Scan(ctx, &dynamodb.ScanInput{
			TableName: aws.String(s.Table), Segment: aws.Int32(int32(s.Index)), TotalSegments: aws.Int32(int32(s.Total)),
			Limit: aws.Int32(s.PageSize), ConsistentRead: aws.Bool(s.Consistent), ExclusiveStartKey: s.start,
			ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
		})
		if throttled(err) {
			if s.Throttled != nil {
				s.Throttled()
			}
			if err := backoff.Sleep(ctx, b.Next()); err != nil {
				return Page{}, err
			}
			continue
		}
		if err != nil {
			return Page{}, fmt.Errorf("scanning table %s segment %d/%d: %w", s.Table, s.Index, s.Total, err)
		}
		units := 0.0
		if out.ConsumedCapacity != nil && out.ConsumedCapacity.CapacityUnits != nil {
			units = *out.ConsumedCapacity.CapacityUnits
		} else {
			units = estimateUnits(out.Items, s.Consistent)
		}
		s.Pacer.Spent(units)
		after, err := EncodeKey(out.LastEvaluatedKey)
		if err != nil {
			return Page{}, fmt.Errorf("table %s segment %d: %w", s.Table, s.Index, err)
		}
		s.start = out.LastEvaluatedKey
		s.done = len(out.LastEvaluatedKey) == 0
		return Page{Items: out.Items, After: after, End: s.done, Units: units}, nil
	}
}

func throttled(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode() {
	case "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded":
		return true
	}
	return false
}

// estimateUnits approximates a page's read cost when DynamoDB does not report it: one unit per 4
// KB read (half for eventually consistent reads), from a rough size of the items.
func estimateUnits(items []map[string]types.AttributeValue, consistent bool) float64 {
	size := 0
	for _, it := range items {
		size += itemSize(it)
	}
	units := float64((size + 4095) / 4096)
	if !consistent {
		units /= 2
	}
	return max(units, 0.5)
}

func itemSize(it map[string]types.AttributeValue) int {
	n := 0
	for k, v := range it {
		n += len(k) + valueSize(v)
	}
	return n
}

func valueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return len(v.Value)/2 + 1
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberSS:
		return sumLen(v.Value)
	case *types.AttributeValueMemberNS:
		return sumLen(v.Value)
	case *types.AttributeValueMemberBS:
		n := 0
		for _, b := range v.Value {
			n += len(b)
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, x := range v.Value {
			n += 1 + valueSize(x)
		}
		return n
	case *types.AttributeValueMemberM:
		return 3 + itemSize(v.Value)
	}
	return 1
}

func sumLen(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	return n
}

// Segments returns the lease keys' segment names, in order: segment-0 … segment-(n-1).
func Segments(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = SegmentName(i)
	}
	return out
}

// SegmentName names segment i in lease and checkpoint keys.
func SegmentName(i int) string { return fmt.Sprintf("segment-%d", i) }
