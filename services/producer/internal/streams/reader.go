package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
)

// ErrShardGone is returned (wrapped) when the shard is no longer in the stream: it aged out, or the
// stream was deleted. The caller re-describes the stream.
var ErrShardGone = errors.New("shard no longer exists")

// Polling bounds GetRecords calls on one shard. DynamoDB Streams allows about five calls per
// second per shard; an idle shard is polled less and less often, down to MaxIdle.
type Polling struct {
	// MinInterval separates two calls on one shard. Default: 200ms.
	MinInterval time.Duration
	// MaxIdle is the longest wait between calls while the shard has no new records. Default: 1s.
	MaxIdle time.Duration
	// PageLimit is GetRecords' Limit. Default: 1000, the API's maximum.
	PageLimit int32
}

func (p Polling) withDefaults() Polling {
	if p.MinInterval <= 0 {
		p.MinInterval = 200 * time.Millisecond
	}
	if p.MaxIdle < p.MinInterval {
		p.MaxIdle = max(time.Second, p.MinInterval)
	}
	if p.PageLimit <= 0 {
		p.PageLimit = 1000
	}
	return p
}

// Events a reader reports, for metrics and logs.
type Events struct {
	// DataLoss is called when records the reader had not read yet were trimmed from the stream
	// (older than 24 hours): they are gone. Reading continues from the oldest record left.
	DataLoss func(shard, after string)
	// Throttled is called for each throttled call.
	Throttled func(shard string)
	// Call is called after every GetRecords call with its latency and page size.
	Call func(shard string, latency time.Duration, records int)
}

// Page is one GetRecords page.
type Page struct {
	Records []types.Record
	// End is true when the shard is closed and every record has been returned: the shard is done.
	End bool
}

// Reader reads one shard page by page. It is not safe for concurrent use.
type Reader struct {
	api    API
	arn    string
	shard  string
	poll   Polling
	events Events
	log    *slog.Logger

	after   string  // last sequence number returned; "" = from the shard's oldest record
	iter    *string // current shard iterator; nil = get one
	trimmed *string // the position a TrimmedDataAccessException was last answered for
	idle    time.Duration
	lastRun time.Time
	retry   backoff.Backoff
}

// NewReader returns a reader of shard that starts after sequence number after ("" = from the
// oldest record still in the stream).
func NewReader(api API, arn, shard, after string, poll Polling, events Events, log *slog.Logger) *Reader {
	return &Reader{api: api, arn: arn, shard: shard, after: after, poll: poll.withDefaults(), events: events, log: log,
		retry: backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}}
}

// After is the sequence number of the last record returned.
func (r *Reader) After() string { return r.after }

// Next returns the next page of records. It waits as polling dictates, retries throttling and
// transient errors with backoff, and recovers from expired iterators and trimmed data by itself. It
// returns an error only when ctx is done or the shard is gone (ErrShardGone).
func (r *Reader) Next(ctx context.Context) (Page, error) {
	for {
		if err := r.pace(ctx); err != nil {
			return Page{}, err
		}
		page, err := r.call(ctx)
		if err == nil {
			r.retry.Reset()
			return page, nil
		}
		if errors.Is(err, ErrShardGone) || ctx.Err() != nil {
			return Page{}, err
		}
		r.log.Warn("reading shard; retrying", "shard", r.shard, "error", err)
		if err := backoff.Sleep(ctx, r.retry.Next()); err != nil {
			return Page{}, err
		}
	}
}

// pace waits before the next call: at least MinInterval after the last one, and longer while the
// shard is idle.
func (r *Reader) pace(ctx context.Context) error {
	wait := r.poll.MinInterval
	if r.idle > wait {
		wait = r.idle
	}
	if r.lastRun.IsZero() {
		return nil
	}
	if d := time.Until(r.lastRun.Add(wait)); d > 0 {
		return backoff.Sleep(ctx, d)
	}
	return nil
}

func (r *Reader) call(ctx context.Context) (Page, error) {
	if r.iter == nil {
		if err := r.newIterator(ctx); err != nil {
			return Page{}, err
		}
	}
	start := time.Now()
	out, err := r.api.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: r.iter, Limit: aws.Int32(r.poll.PageLimit)}, withFastRecords)
	r.lastRun = time.Now()
	if err != nil {
		return Page{}, r.recover(err)
	}
	fastRecords(out)
	if r.events.Call != nil {
		r.events.Call(r.shard, time.Since(start), len(out.Records))
	}
	page := Page{Records: out.Records, End: out.NextShardIterator == nil}
	r.iter = out.NextShardIterator
	if n := len(out.Records); n > 0 {
		r.after = aws.ToString(out.Records[n-1].Dynamodb.SequenceNumber)
		r.idle = 0
	} else {
		// Back off while idle: twice the last wait, up to MaxIdle.
		r.idle = min(max(2*r.idle, r.poll.MinInterval), r.poll.MaxIdle)
	}
	return page, nil
}

func (r *Reader) newIterator(ctx context.Context) error {
	in := &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(r.arn), ShardId: aws.String(r.shard)}
	if r.after == "" {
		in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
	} else {
		in.ShardIteratorType = types.ShardIteratorTypeAfterSequenceNumber
		in.SequenceNumber = aws.String(r.after)
	}
	out, err := r.api.GetShardIterator(ctx, in)
	if err != nil {
		return r.recover(err)
	}
	r.iter = out.ShardIterator
	if r.iter == nil {
		return fmt.Errorf("shard %s: GetShardIterator returned no iterator", r.shard)
	}
	return nil
}

// recover classifies a failed call and prepares the next one. It returns the error to report: the
// caller retries everything but ErrShardGone.
func (r *Reader) recover(err error) error {
	var (
		expired  *types.ExpiredIteratorException
		trimmed  *types.TrimmedDataAccessException
		notFound *types.ResourceNotFoundException
		limit    *types.LimitExceededException
		api      smithy.APIError
	)
	switch {
	case errors.As(err, &expired):
		// Iterators expire after 15 minutes; start again where we were.
		r.iter = nil
		return fmt.Errorf("shard %s: iterator expired: %w", r.shard, err)
	case errors.As(err, &trimmed):
		// The position we asked for is older than the stream's 24-hour retention. DynamoDB Local
		// also answers this spuriously now and then, so first retry once from where we are; only a
		// repeated answer for the same position is data loss.
		r.iter = nil
		if r.after == "" {
			return fmt.Errorf("shard %s: %w", r.shard, err)
		}
		if r.trimmed == nil || *r.trimmed != r.after {
			at := r.after
			r.trimmed = &at
			return fmt.Errorf("shard %s: trimmed data at %s, retrying once: %w", r.shard, at, err)
		}
		r.trimmed = nil
		if r.events.DataLoss != nil {
			r.events.DataLoss(r.shard, r.after)
		}
		r.log.Error("DATA LOSS: records of this shard expired from the stream before they were read; continuing from the oldest record left",
			"shard", r.shard, "after_sequence_number", r.after)
		r.after = ""
		return fmt.Errorf("shard %s: trimmed: %w", r.shard, err)
	case errors.As(err, &notFound):
		r.iter = nil
		return fmt.Errorf("shard %s: %w: %v", r.shard, ErrShardGone, err)
	case errors.As(err, &limit):
		if r.events.Throttled != nil {
			r.events.Throttled(r.shard)
		}
		return fmt.Errorf("shard %s: throttled: %w", r.shard, err)
	case errors.As(err, &api) && strings.Contains(api.ErrorMessage(), "Invalid ShardId in ShardIterator"):
		// DynamoDB Local invalidates iterators across restarts with this message: get a new one.
		r.iter = nil
		return fmt.Errorf("shard %s: iterator rejected: %w", r.shard, err)
	case errors.As(err, &api) && (api.ErrorCode() == "ThrottlingException" || api.ErrorCode() == "ProvisionedThroughputExceededException"):
		if r.events.Throttled != nil {
			r.events.Throttled(r.shard)
		}
		return fmt.Errorf("shard %s: throttled: %w", r.shard, err)
	}
	return fmt.Errorf("shard %s: %w", r.shard, err)
}
