// Package lookup joins events with items of a DynamoDB table read by primary key: the keys a
// batch of events needs are collected, answered from a bounded cache where it can, and the rest
// fetched with BatchGetItem (100 keys a call, unprocessed keys retried with backoff), at most
// rate_limit calls a second. Found items are cached for the TTL, missing keys for the negative
// TTL, so reference data changed in DynamoDB is seen within the TTL.
package lookup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/expr"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/keys"
	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
)

// API is the part of the DynamoDB client a lookup uses.
type API interface {
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
}

// Config is one lookup.
type Config struct {
	Name           string
	Table          string
	ConsistentRead bool
	MaxEntries     int
	TTL            time.Duration
	NegativeTTL    time.Duration
	RateLimit      float64 // BatchGetItem calls per second
}

// Lookup answers key lookups against one table. Not safe for concurrent use (the enricher
// processes one batch at a time).
type Lookup struct {
	cfg     Config
	api     API
	cache   *cache
	limiter *rate.Limiter
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time

	// KeyNames are the table's key attributes, sorted; KeyTypes their types (S, N or B).
	KeyNames []string
	KeyTypes map[string]string
}

// New describes the table to learn its key; an unreachable DynamoDB is an error the caller
// retries.
func New(ctx context.Context, cfg Config, api API, m *Metrics, log *slog.Logger) (*Lookup, error) {
	out, err := api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(cfg.Table)})
	if err != nil {
		return nil, fmt.Errorf("lookup %s: describing table %s: %w", cfg.Name, cfg.Table, err)
	}
	l := &Lookup{cfg: cfg, api: api, cache: newCache(cfg.MaxEntries), metrics: m, log: log.With("lookup", cfg.Name),
		limiter: rate.NewLimiter(rate.Limit(cfg.RateLimit), max(1, int(cfg.RateLimit))), now: time.Now, KeyTypes: map[string]string{}}
	for _, k := range out.Table.KeySchema {
		l.KeyNames = append(l.KeyNames, aws.ToString(k.AttributeName))
	}
	slices.Sort(l.KeyNames)
	for _, d := range out.Table.AttributeDefinitions {
		l.KeyTypes[aws.ToString(d.AttributeName)] = string(d.AttributeType)
	}
	m.init(cfg.Name)
	return l, nil
}

// Request is one key to look up.
type Request struct {
	Key   map[string]types.AttributeValue
	Match []byte // keys.Encode(Key)
}

// Resolve answers every request: found maps a request's Match to its item, absent when the
// table has no such item; bad holds the requests DynamoDB refused as invalid (a dead letter each,
// not a retry). An error means DynamoDB could not answer: the caller retries the batch. Check
// catches most invalid keys before they get here.
func (l *Lookup) Resolve(ctx context.Context, reqs []Request) (found map[string]map[string]types.AttributeValue, bad map[string]error, err error) {
	now := l.now()
	out := map[string]map[string]types.AttributeValue{}
	var missing []Request
	seen := map[string]bool{}
	for _, r := range reqs {
		m := string(r.Match)
		if seen[m] {
			continue
		}
		seen[m] = true
		item, found, fresh := l.cache.get(m, now)
		if fresh {
			l.metrics.cache.WithLabelValues(l.cfg.Name, "hit").Inc()
			if found {
				out[m] = item
			}
			continue
		}
		l.metrics.cache.WithLabelValues(l.cfg.Name, "miss").Inc()
		missing = append(missing, r)
	}
	bad = map[string]error{}
	for chunk := range slices.Chunk(missing, 100) {
		got, err := l.batchGet(ctx, chunk)
		var api smithy.APIError
		if errors.As(err, &api) && api.ErrorCode() == "ValidationException" {
			// One bad key fails the whole call: ask for each key alone to find it.
			got = map[string]map[string]types.AttributeValue{}
			for _, r := range chunk {
				one, err := l.batchGet(ctx, []Request{r})
				if errors.As(err, &api) && api.ErrorCode() == "ValidationException" {
					bad[string(r.Match)] = err
					continue
				}
				if err != nil {
					return nil, nil, err
				}
				maps.Copy(got, one)
			}
		} else if err != nil {
			return nil, nil, err
		}
		now = l.now()
		for _, r := range chunk {
			m := string(r.Match)
			if bad[m] != nil {
				continue
			}
			if item, ok := got[m]; ok {
				out[m] = item
				l.cache.put(m, item, now, l.cfg.TTL)
			} else {
				l.cache.put(m, nil, now, l.cfg.NegativeTTL)
			}
		}
	}
	l.metrics.cacheEntries.WithLabelValues(l.cfg.Name).Set(float64(l.cache.len()))
	return out, bad, nil
}

// Check returns an error naming the problem when key does not fit the table's key schema.
func (l *Lookup) Check(key map[string]types.AttributeValue) error {
	names := keys.Names(key)
	if !slices.Equal(names, l.KeyNames) {
		return fmt.Errorf("lookup %s: table %s's key is %v, the join gives %v", l.cfg.Name, l.cfg.Table, l.KeyNames, names)
	}
	for n, v := range key {
		if want, got := l.KeyTypes[n], expr.Kind(v); want != "" && got != want {
			return fmt.Errorf("lookup %s: key attribute %s of table %s is of type %s, the join gives %s", l.cfg.Name, n, l.cfg.Table, want, got)
		}
		// DynamoDB refuses such keys with a ValidationException for the whole call.
		size := 0
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			size = len(v.Value)
		case *types.AttributeValueMemberB:
			size = len(v.Value)
		case *types.AttributeValueMemberN:
			size = 1
		}
		if size == 0 {
			return fmt.Errorf("lookup %s: key attribute %s is empty; DynamoDB keys cannot be", l.cfg.Name, n)
		}
		if size > 2048 {
			return fmt.Errorf("lookup %s: key attribute %s is %d bytes; DynamoDB keys have at most 2048", l.cfg.Name, n, size)
		}
	}
	return nil
}

// batchGet fetches up to 100 keys, retrying unprocessed keys and throttling with backoff until
// ctx ends.
func (l *Lookup) batchGet(ctx context.Context, reqs []Request) (map[string]map[string]types.AttributeValue, error) {
	pending := make([]map[string]types.AttributeValue, len(reqs))
	for i, r := range reqs {
		pending[i] = r.Key
	}
	got := map[string]map[string]types.AttributeValue{}
	b := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for len(pending) > 0 {
		if err := l.limiter.Wait(ctx); err != nil {
			return nil, err
		}
		start := time.Now()
		out, err := l.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
			l.cfg.Table: {Keys: pending, ConsistentRead: aws.Bool(l.cfg.ConsistentRead)}}})
		l.metrics.latency.WithLabelValues(l.cfg.Name).Observe(time.Since(start).Seconds())
		var throttled *types.ProvisionedThroughputExceededException
		switch {
		case errors.As(err, &throttled):
			l.metrics.requests.WithLabelValues(l.cfg.Name, "throttled").Inc()
			if err := backoff.Sleep(ctx, b.Next()); err != nil {
				return nil, err
			}
			continue
		case err != nil:
			l.metrics.requests.WithLabelValues(l.cfg.Name, "error").Inc()
			return nil, fmt.Errorf("lookup %s: BatchGetItem on %s: %w", l.cfg.Name, l.cfg.Table, err)
		}
		l.metrics.requests.WithLabelValues(l.cfg.Name, "ok").Inc()
		for _, item := range out.Responses[l.cfg.Table] {
			key := map[string]types.AttributeValue{}
			for _, n := range l.KeyNames {
				key[n] = item[n]
			}
			m, err := keys.Encode(key)
			if err != nil {
				return nil, fmt.Errorf("lookup %s: an item of %s: %w", l.cfg.Name, l.cfg.Table, err)
			}
			got[string(m)] = item
		}
		pending = out.UnprocessedKeys[l.cfg.Table].Keys
		if len(pending) > 0 {
			l.metrics.requests.WithLabelValues(l.cfg.Name, "unprocessed").Inc()
			if err := backoff.Sleep(ctx, b.Next()); err != nil {
				return nil, err
			}
		}
	}
	return got, nil
}

// Metrics are the lookups' metrics.
type Metrics struct {
	requests     *prometheus.CounterVec
	cache        *prometheus.CounterVec
	cacheEntries *prometheus.GaugeVec
	latency      *prometheus.HistogramVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_enricher_lookup_requests_total",
			Help: "BatchGetItem calls by result: ok, throttled, unprocessed (some keys left for a retry), error."}, []string{"lookup", "result"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_enricher_lookup_cache_total",
			Help: "Lookup keys answered from the cache (hit) or read from DynamoDB (miss)."}, []string{"lookup", "result"}),
		cacheEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ddb2delta_enricher_lookup_cache_entries",
			Help: "Answers held by a lookup's cache."}, []string{"lookup"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ddb2delta_enricher_lookup_request_seconds",
			Help: "BatchGetItem latency.", Buckets: prometheus.ExponentialBuckets(0.002, 2, 12)}, []string{"lookup"}),
	}
	reg.MustRegister(m.requests, m.cache, m.cacheEntries, m.latency)
	return m
}

// init creates a lookup's series at zero: a dashboard shows it from the start, and increase()
// sees a counter's first event (a series born at 1 has no increase).
func (m *Metrics) init(lookup string) {
	for _, r := range []string{"ok", "throttled", "unprocessed", "error"} {
		m.requests.WithLabelValues(lookup, r)
	}
	m.cache.WithLabelValues(lookup, "hit")
	m.cache.WithLabelValues(lookup, "miss")
	m.cacheEntries.WithLabelValues(lookup) // the cache starts empty
	m.latency.WithLabelValues(lookup)
}
