package streamsfake

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
)

// Limits are DynamoDB Streams' request limits. An Account enforces them on every call made
// through it or through one of its streams; a call over a limit fails at once with
// *types.LimitExceededException and is counted in Stats. A zero field means no limit.
//
// Rates are enforced with a sliding one-second window: a call is admitted when fewer than the
// limit were admitted in the second before it, (now-1s, now] on the Account's clock. Unlike a
// token bucket this never lets a burst through: no one-second interval ever holds more admitted
// calls than the limit, which is the strictest reading of AWS's "N calls per second". Refused calls
// do not count against the window.
type Limits struct {
	// DescribeStreamPerSecond bounds DescribeStream calls across the whole account, all streams
	// together. AWS: 10.
	DescribeStreamPerSecond int
	// ListStreamsPerSecond bounds ListStreams calls across the account. AWS: 5.
	ListStreamsPerSecond int
	// GetRecordsPerSecond bounds GetRecords calls on one shard. AWS: 5.
	GetRecordsPerSecond int
	// GetRecordsInFlight bounds the GetRecords calls on one shard being served at the same
	// time. AWS advises at most two readers per shard, beyond which calls are throttled. Only
	// meaningful with Options.GetRecordsLatency, since without latency a call is served at once.
	GetRecordsInFlight int
}

// AWSLimits returns the limits DynamoDB Streams documents.
func AWSLimits() Limits {
	return Limits{DescribeStreamPerSecond: 10, ListStreamsPerSecond: 5, GetRecordsPerSecond: 5, GetRecordsInFlight: 2}
}

// CallStats counts the calls of one API.
type CallStats struct {
	Calls     int64 // calls received, the throttled ones included
	Throttled int64 // calls refused with LimitExceededException (by Limits or by Stream.Throttle)
}

// Stats counts the calls an Account (or a Stream made by New) received.
type Stats struct {
	DescribeStream, ListStreams, GetShardIterator, GetRecords CallStats
	// DescribeStreamPeak is the most DescribeStream calls received, throttled ones included, in
	// any one-second interval of the clock (a sliding window, like the limiter's): the demand a
	// caller would have put on AWS's account-wide limit.
	DescribeStreamPeak int
}

// api names the calls counted and limited.
type api int

const (
	apiDescribeStream api = iota
	apiListStreams
	apiGetShardIterator
	apiGetRecords
	numAPIs
)

// env is what an Account shares with its streams: the clock, limits, simulated latency,
// retention and call counters. A Stream made by New has one of its own, without limits, so that
// both kinds of stream run the same code.
type env struct {
	now       func() time.Time
	limits    Limits
	latency   time.Duration
	sleep     func(context.Context, time.Duration) error
	retention time.Duration

	calls, throttled [numAPIs]atomic.Int64

	mu       sync.Mutex
	describe window    // DescribeStream calls admitted account-wide
	list     window    // ListStreams calls admitted account-wide
	recent   timeQueue // DescribeStream calls received in the last second, for the peak
	peak     int
}

func newEnv(o Options) *env {
	e := &env{now: o.Now, limits: o.Limits, latency: o.GetRecordsLatency, sleep: o.Sleep, retention: o.Retention}
	if e.now == nil {
		e.now = time.Now
	}
	if e.sleep == nil {
		e.sleep = backoff.Sleep
	}
	e.describe.n = o.Limits.DescribeStreamPerSecond
	e.list.n = o.Limits.ListStreamsPerSecond
	return e
}

// count counts a call of a. GetRecords' limits are per shard: the stream applies them.
func (e *env) count(a api) { e.calls[a].Add(1) }

// enter counts a call of DescribeStream or ListStreams and applies its account-wide rate limit.
func (e *env) enter(a api) error {
	e.count(a)
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	w := &e.list
	if a == apiDescribeStream {
		e.recent.push(now)
		e.recent.dropThrough(now.Add(-time.Second))
		e.peak = max(e.peak, e.recent.len())
		w = &e.describe
	}
	if !w.allow(now) {
		return e.refuse(a, "Rate exceeded for the account")
	}
	return nil
}

// refuse counts a throttled call of a and returns its error.
func (e *env) refuse(a api, msg string) error {
	e.throttled[a].Add(1)
	return &types.LimitExceededException{Message: aws.String(msg)}
}

func (e *env) stats() Stats {
	get := func(a api) CallStats { return CallStats{Calls: e.calls[a].Load(), Throttled: e.throttled[a].Load()} }
	e.mu.Lock()
	peak := e.peak
	e.mu.Unlock()
	return Stats{
		DescribeStream: get(apiDescribeStream), ListStreams: get(apiListStreams),
		GetShardIterator: get(apiGetShardIterator), GetRecords: get(apiGetRecords),
		DescribeStreamPeak: peak,
	}
}

// window is a sliding one-second window rate limiter: it admits an event when fewer than n events
// were admitted in (now-1s, now]. It keeps the times of the last n admitted events in a ring, so a
// check costs O(1) and n times of memory. n <= 0 admits everything. Not safe for concurrent use.
type window struct {
	n     int
	times []time.Time // the last n admitted times; once full, times[next] is the oldest
	next  int
}

func (w *window) allow(now time.Time) bool {
	switch {
	case w.n <= 0:
		return true
	case len(w.times) < w.n:
		w.times = append(w.times, now)
		return true
	case now.Sub(w.times[w.next]) < time.Second:
		return false
	}
	w.times[w.next] = now
	w.next = (w.next + 1) % w.n
	return true
}

// timeQueue is a FIFO of times, for counting the events of the last second.
type timeQueue struct {
	times []time.Time
	head  int
}

func (q *timeQueue) push(t time.Time) { q.times = append(q.times, t) }

func (q *timeQueue) len() int { return len(q.times) - q.head }

// dropThrough drops the times at or before t (times are pushed in order).
func (q *timeQueue) dropThrough(t time.Time) {
	for q.head < len(q.times) && !q.times[q.head].After(t) {
		q.head++
	}
	if q.head > 64 && q.head > len(q.times)/2 {
		q.times = append(q.times[:0], q.times[q.head:]...)
		q.head = 0
	}
}
