package streams

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"golang.org/x/time/rate"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
)

// Discovery finds a stream's shards within DescribeStream's limit (about 10 calls per second,
// shared by the whole account): it lists a stream in full only every FullEvery, and in between
// asks only for the children of the shards that finished since (ShardFilter CHILD_SHARDS), which
// is where new shards appear. Every call goes through one pacer, and a failed page is retried in
// place instead of failing the listing. One Discovery serves one replica; only the replica
// holding a table's lister lease uses it, so the account sees one lister per table.
type Discovery struct {
	api       API
	pace      *rate.Limiter
	fullEvery time.Duration
	now       func() time.Time
	// Calls counts DescribeStream calls made, and Throttled those answered LimitExceeded.
	Calls, Throttled func()

	mu      sync.Mutex
	streams map[string]*known
}

type known struct {
	desc     Description // header only
	shards   map[string]Shard
	children map[string]bool // finished shards whose children were found
	full     time.Time       // last full listing
}

// NewDiscovery returns a discovery that makes at most perSecond DescribeStream calls per second
// (bursts of one) and lists a stream in full every fullEvery.
func NewDiscovery(api API, perSecond float64, fullEvery time.Duration) *Discovery {
	return &Discovery{api: api, pace: rate.NewLimiter(rate.Limit(perSecond), 1), fullEvery: fullEvery, now: time.Now,
		Calls: func() {}, Throttled: func() {}, streams: map[string]*known{}}
}

// pageAttempts bounds the tries of one DescribeStream page.
const pageAttempts = 5

// page makes one paced DescribeStream call, retrying it with backoff when it fails for another
// reason than the stream being gone.
func (d *Discovery) page(ctx context.Context, in *dynamodbstreams.DescribeStreamInput) (*dynamodbstreams.DescribeStreamOutput, error) {
	b := backoff.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		if err := d.pace.Wait(ctx); err != nil {
			return nil, err
		}
		d.Calls()
		out, err := d.api.DescribeStream(ctx, in)
		if err == nil {
			return out, nil
		}
		var nf *types.ResourceNotFoundException
		if errors.As(err, &nf) || attempt == pageAttempts || ctx.Err() != nil {
			return nil, err
		}
		var le *types.LimitExceededException
		if errors.As(err, &le) {
			d.Throttled()
		}
		if err := backoff.Sleep(ctx, b.Next()); err != nil {
			return nil, err
		}
	}
}

// Describe lists every shard of a stream, paced and with each page retried in place.
func (d *Discovery) Describe(ctx context.Context, arn string) (*Description, error) {
	return describe(ctx, arn, d.page)
}

// Shards returns a stream's description with its known shards: a full listing when none was made
// for FullEvery (full is then true: shards missing from it have aged out), else the shards known
// plus the children of shards finished since the last call. finished reports whether a shard was
// read to its end.
func (d *Discovery) Shards(ctx context.Context, arn string, finished func(id string) bool) (desc *Description, full bool, err error) {
	d.mu.Lock()
	k := d.streams[arn]
	d.mu.Unlock()
	var pending []string // finished shards whose children are not known yet
	if k != nil && k.desc.Status != string(types.StreamStatusDisabled) {
		for _, id := range slices.Sorted(maps.Keys(k.shards)) {
			if !k.children[id] && finished(id) {
				pending = append(pending, id)
			}
		}
	}
	// One call per finished shard, or a full listing (a page per 100 shards): whichever is fewer.
	pages := (len(k.shardsOrNil()) + 99) / 100
	if k == nil || d.now().Sub(k.full) >= d.fullEvery || len(pending) > pages {
		listed, err := d.Describe(ctx, arn)
		if err != nil {
			if errors.Is(err, ErrStreamGone) {
				d.Forget(arn)
			}
			return nil, false, err
		}
		k = &known{desc: *listed, shards: make(map[string]Shard, len(listed.Shards)), children: map[string]bool{}, full: d.now()}
		k.desc.Shards = nil
		for _, s := range listed.Shards {
			k.shards[s.ID] = s
		}
		for _, s := range listed.Shards {
			if s.Parent != "" {
				k.children[s.Parent] = true
			}
		}
		d.mu.Lock()
		d.streams[arn] = k
		d.mu.Unlock()
		full = true
	} else {
		// A closed shard's children appear with its closing; a disabled stream gets none.
		for _, id := range pending {
			children, err := d.children(ctx, arn, id)
			if err != nil {
				return nil, false, err
			}
			for _, c := range children {
				k.shards[c.ID] = c
			}
			if len(children) > 0 {
				k.children[id] = true
			}
		}
	}
	out := k.desc
	out.Shards = slices.Collect(maps.Values(k.shards))
	slices.SortFunc(out.Shards, func(a, b Shard) int { return compareIDs(a.ID, b.ID) })
	return &out, full, nil
}

func (k *known) shardsOrNil() map[string]Shard {
	if k == nil {
		return nil
	}
	return k.shards
}

func compareIDs(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// children lists the children of a shard (ShardFilter CHILD_SHARDS), following pages.
func (d *Discovery) children(ctx context.Context, arn, parent string) ([]Shard, error) {
	var out []Shard
	var start *string
	for {
		page, err := d.page(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), ExclusiveStartShardId: start,
			ShardFilter: &types.ShardFilter{Type: types.ShardFilterTypeChildShards, ShardId: aws.String(parent)}})
		if err != nil {
			return nil, fmt.Errorf("listing the children of shard %s: %w", parent, describeErr(arn, err))
		}
		sd := page.StreamDescription
		if sd == nil {
			return out, nil
		}
		for _, s := range sd.Shards {
			out = append(out, shardOf(s))
		}
		if sd.LastEvaluatedShardId == nil {
			return out, nil
		}
		start = sd.LastEvaluatedShardId
	}
}

// Header returns a stream's description without its shards (one paced call for one shard).
func (d *Discovery) Header(ctx context.Context, arn string) (*Description, error) {
	out, err := d.page(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), Limit: aws.Int32(1)})
	if err != nil {
		return nil, describeErr(arn, err)
	}
	if out.StreamDescription == nil {
		return nil, fmt.Errorf("describing stream %s: empty description", arn)
	}
	desc := &Description{ARN: arn}
	desc.setHeader(out.StreamDescription)
	return desc, nil
}

// Forget drops what is known of a stream (it is gone, or drained).
func (d *Discovery) Forget(arn string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.streams, arn)
}
