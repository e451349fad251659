package streamsfake

import (
	"context"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// Options configure an Account. The zero value is an account without limits, on the real clock.
type Options struct {
	// Limits are enforced on every call to the account and its streams.
	Limits Limits
	// Now is the clock for rate limits, record and shard times, and retention. Default: time.Now.
	Now func() time.Time
	// GetRecordsLatency is how long every admitted GetRecords call takes, during which it counts
	// as in flight (Limits.GetRecordsInFlight). Default: 0.
	GetRecordsLatency time.Duration
	// Sleep waits out GetRecordsLatency; it must return early with ctx's error when ctx is done.
	// Tests can inject one that blocks until released, to hold calls in flight deterministically.
	// Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Retention is how long records, closed shards and disabled streams last (AWS: 24 hours). It
	// is applied by Roll and Expire. 0: for ever.
	Retention time.Duration
}

// Account is a fake DynamoDB Streams endpoint holding many streams. It implements the producer's
// streams.API, and ListStreams, dispatching on the stream ARN (GetRecords on the stream its
// iterator names). Streams it makes share its clock, limits, latency, retention and counters,
// whichever way they are called. Its methods are safe for concurrent use.
type Account struct {
	env *env

	mu        sync.Mutex
	streams   []*Stream // in creation order, gone ones included
	byARN     map[string]int
	lastLabel time.Time
}

// NewAccount returns an account without streams.
func NewAccount(o Options) *Account {
	return &Account{env: newEnv(o), byARN: map[string]int{}}
}

// NewStream enables a new stream on table, with one open shard "shard-0000", and returns it. Like
// AWS, a table has at most one enabled stream: the table's current stream, if any, is disabled
// first (see Stream.Disable), so it stays readable, with its own ARN, until the retention passes.
// The new stream's label, and so its ARN, is its creation time on the account's clock, made
// unique.
func (a *Account) NewStream(table string) *Stream {
	return a.add(table, func(s *Stream, now time.Time) { s.addShard("shard-0000", "", now) })
}

// NewStreamWithShards is NewStream for a simulation: the stream starts with n open shards
// (without parents) splitting the key space evenly, rolls them over as sim says when Roll or Drive
// is called, and takes PutRandom's writes.
func (a *Account) NewStreamWithShards(table string, n int, sim Sim) *Stream {
	if n < 1 {
		panic("streamsfake: a stream needs at least one shard")
	}
	return a.add(table, func(s *Stream, now time.Time) {
		m := newSim(s.ARN, n, sim)
		s.sim = m
		shards := make([]*shard, n)
		for i := range shards {
			shards[i] = s.addShard(m.newID(), "", now)
		}
		m.own(shards, 0, math.MaxUint64, now, true)
	})
}

// add makes a stream on table, lets init give it shards, and lists it after disabling the table's
// previous stream.
func (a *Account) add(table string, init func(*Stream, time.Time)) *Stream {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.env.now()
	created := now.UTC().Truncate(time.Millisecond)
	if !created.After(a.lastLabel) {
		created = a.lastLabel.Add(time.Millisecond)
	}
	a.lastLabel = created
	for _, old := range a.streams {
		if old.Table == table {
			old.Disable()
		}
	}
	s := newStream(table, created.Format("2006-01-02T15:04:05.000"), created, a.env)
	init(s, now)
	a.byARN[s.ARN] = len(a.streams)
	a.streams = append(a.streams, s)
	return s
}

// Stream returns the account's stream arn, or nil.
func (a *Account) Stream(arn string) *Stream {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i, ok := a.byARN[arn]; ok {
		return a.streams[i]
	}
	return nil
}

// Stats returns the calls the account and its streams received.
func (a *Account) Stats() Stats { return a.env.stats() }

// Roll calls Roll on every stream of the account and returns the shards closed and opened.
func (a *Account) Roll(now time.Time) (closed, opened int) {
	a.mu.Lock()
	streams := a.streams[:len(a.streams):len(a.streams)]
	a.mu.Unlock()
	for _, s := range streams {
		c, o := s.Roll(now)
		closed += c
		opened += o
	}
	return closed, opened
}

func notFound(arn string) error {
	return &types.ResourceNotFoundException{Message: aws.String("Requested resource not found: Stream: " + arn + " not found")}
}

// ListStreams lists the account's streams that are not gone (disabled ones included, until the
// retention passes), oldest first as AWS does, only table's when TableName is set. It pages by
// Limit (default and maximum 100) and ExclusiveStartStreamArn, and sets LastEvaluatedStreamArn
// while more remain.
func (a *Account) ListStreams(_ context.Context, in *dynamodbstreams.ListStreamsInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.ListStreamsOutput, error) {
	if err := a.env.enter(apiListStreams); err != nil {
		return nil, err
	}
	limit, err := pageLimit(in.Limit)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	start := 0
	if x := in.ExclusiveStartStreamArn; x != nil {
		i, ok := a.byARN[*x]
		if !ok {
			return nil, validation("ExclusiveStartStreamArn %s is not a stream of this account", *x)
		}
		start = i + 1
	}
	out := &dynamodbstreams.ListStreamsOutput{}
	for _, s := range a.streams[start:] {
		if in.TableName != nil && s.Table != *in.TableName || s.isGone() {
			continue
		}
		if len(out.Streams) == limit {
			out.LastEvaluatedStreamArn = out.Streams[limit-1].StreamArn
			break
		}
		out.Streams = append(out.Streams, types.Stream{StreamArn: aws.String(s.ARN), StreamLabel: aws.String(s.label), TableName: aws.String(s.Table)})
	}
	return out, nil
}

// DescribeStream implements streams.API: Stream.DescribeStream on the stream in.StreamArn.
func (a *Account) DescribeStream(_ context.Context, in *dynamodbstreams.DescribeStreamInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error) {
	if err := a.env.enter(apiDescribeStream); err != nil {
		return nil, err
	}
	s := a.Stream(aws.ToString(in.StreamArn))
	if s == nil {
		return nil, notFound(aws.ToString(in.StreamArn))
	}
	return s.describe(in)
}

// GetShardIterator implements streams.API: Stream.GetShardIterator on the stream in.StreamArn.
// The iterator names the stream, for GetRecords.
func (a *Account) GetShardIterator(_ context.Context, in *dynamodbstreams.GetShardIteratorInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetShardIteratorOutput, error) {
	a.env.count(apiGetShardIterator)
	s := a.Stream(aws.ToString(in.StreamArn))
	if s == nil {
		return nil, notFound(aws.ToString(in.StreamArn))
	}
	return s.shardIterator(in)
}

// GetRecords implements streams.API: Stream.GetRecords on the stream the iterator names.
func (a *Account) GetRecords(ctx context.Context, in *dynamodbstreams.GetRecordsInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error) {
	a.env.count(apiGetRecords)
	arn, _, ok := strings.Cut(aws.ToString(in.ShardIterator), "|")
	if !ok {
		return nil, validation("Invalid ShardIterator: %q", aws.ToString(in.ShardIterator))
	}
	s := a.Stream(arn)
	if s == nil {
		return nil, notFound(arn)
	}
	return s.getRecords(ctx, in)
}
