// Package lease shares shards between producer replicas through a DynamoDB lease table.
//
// Each shard has a lease item (owner, heartbeat counter); each live replica has a worker item whose
// counter it bumps every renewal. A replica renews the leases it holds by bumping their counters
// under the condition that it is still the owner. A lease whose counter has not moved for the lease
// duration, as this replica observes it with its own clock (no clocks are compared across hosts),
// is expired and may be taken, conditionally on the counter observed, so two replicas cannot both
// take it. Replicas balance by taking free or expired leases up to their fair share
// (ceil(leases / live workers)), and by stealing at most one lease per round from the busiest
// replica when it holds at least two more leases than this one.
//
// Leases decide who should read a shard; they are not what keeps a shard from being published
// twice. That is Kafka's fencing (see package publish): a replica that lost its lease without
// noticing yet is fenced by the broker on its next commit.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// API is the part of DynamoDB the coordinator calls.
type API interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
}

// Config configures a coordinator.
type Config struct {
	Table    string        // the lease table, created when missing
	Owner    string        // this replica's id, unique among replicas
	Duration time.Duration // a lease whose counter does not move for this long is expired. Default: 10s.
}

const workerPrefix = "worker|"

type observed struct {
	owner    string
	counter  int64
	finished bool
	changed  time.Time // local time the counter (or owner) was last seen to change
}

// Coordinator holds this replica's leases. Run drives it; Offer, Held and Finish are safe to call
// from other goroutines.
type Coordinator struct {
	api API
	cfg Config
	log *slog.Logger
	now func() time.Time

	kick chan struct{} // Offer of a new key: run a round now

	mu      sync.Mutex
	offered map[string]bool      // lease keys of readable shards, from the capture
	held    map[string]int64     // lease key → our counter
	seen    map[string]*observed // every lease and worker item, as last scanned
	counter int64                // our worker heartbeat
}

// New returns a coordinator.
func New(api API, cfg Config, log *slog.Logger) *Coordinator {
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	return &Coordinator{api: api, cfg: cfg, log: log, now: time.Now, kick: make(chan struct{}, 1),
		offered: map[string]bool{}, held: map[string]int64{}, seen: map[string]*observed{}}
}

// Key is the lease key of a shard.
func Key(streamARN, shard string) string { return streamARN + "|" + shard }

// EnsureTable creates the lease table when it does not exist.
func (c *Coordinator) EnsureTable(ctx context.Context) error {
	_, err := c.api.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(c.cfg.Table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("lease_key"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("lease_key"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("creating lease table %s: %w", c.cfg.Table, err)
	}
	return nil
}

// Offer declares the lease keys of the shards that are readable now; the coordinator creates their
// leases and competes for them.
func (c *Coordinator) Offer(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	added := false
	for _, k := range keys {
		added = added || !c.offered[k]
		c.offered[k] = true
	}
	if added {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// Held reports whether this replica holds the lease of key.
func (c *Coordinator) Held(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.held[key]
	return ok
}

// Finish marks a shard's lease finished (its shard was read to the end) and releases it.
func (c *Coordinator) Finish(ctx context.Context, key string) error {
	_, err := c.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(c.cfg.Table), Key: leaseKey(key),
		UpdateExpression:          aws.String("SET finished = :t REMOVE #o"),
		ConditionExpression:       aws.String("#o = :me"),
		ExpressionAttributeNames:  map[string]string{"#o": "owner"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": &types.AttributeValueMemberBOOL{Value: true}, ":me": str(c.cfg.Owner)},
	})
	c.mu.Lock()
	delete(c.held, key)
	delete(c.offered, key)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("finishing lease %s: %w", key, err)
	}
	return nil
}

// Run renews, scans, creates, takes and steals leases every third of the lease duration until ctx
// is done; then it releases the leases it holds, so that other replicas take them at once.
func (c *Coordinator) Run(ctx context.Context) error {
	tick := time.NewTicker(c.cfg.Duration / 3)
	defer tick.Stop()
	for {
		if err := c.Round(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("lease round failed; retrying", "error", err)
		}
		select {
		case <-ctx.Done():
			c.releaseAll()
			return nil
		case <-tick.C:
		case <-c.kick:
		}
	}
}

// Round is one renew/scan/acquire pass (Run calls it; tests call it directly).
func (c *Coordinator) Round(ctx context.Context) error {
	c.heartbeat(ctx)
	c.renew(ctx)
	if err := c.scan(ctx); err != nil {
		return err
	}
	c.createMissing(ctx)
	c.acquire(ctx)
	return nil
}

func leaseKey(k string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"lease_key": str(k)}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func (c *Coordinator) heartbeat(ctx context.Context) {
	c.counter++
	_, err := c.api.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(c.cfg.Table), Item: map[string]types.AttributeValue{
		"lease_key": str(workerPrefix + c.cfg.Owner), "counter": num(c.counter), "owner": str(c.cfg.Owner)}})
	if err != nil {
		c.log.Warn("worker heartbeat failed", "error", err)
	}
}

// renew bumps the counter of every lease held, on condition that we still own it; a lease that
// fails the condition was taken by another replica and is dropped.
func (c *Coordinator) renew(ctx context.Context) {
	c.mu.Lock()
	keys := make([]string, 0, len(c.held))
	for k := range c.held {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	for _, k := range keys {
		out, err := c.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(c.cfg.Table), Key: leaseKey(k),
			UpdateExpression:          aws.String("SET #c = #c + :one"),
			ConditionExpression:       aws.String("#o = :me"),
			ExpressionAttributeNames:  map[string]string{"#c": "counter", "#o": "owner"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":one": num(1), ":me": str(c.cfg.Owner)},
			ReturnValues:              types.ReturnValueUpdatedNew,
		})
		var cond *types.ConditionalCheckFailedException
		switch {
		case errors.As(err, &cond):
			c.log.Info("lease lost to another replica", "lease", k)
			c.mu.Lock()
			delete(c.held, k)
			c.mu.Unlock()
		case err != nil:
			// Keep the lease: if renewals keep failing, another replica takes it after the lease
			// duration and Kafka fences this one.
			c.log.Warn("renewing lease", "lease", k, "error", err)
		default:
			c.mu.Lock()
			c.held[k] = numAttr(out.Attributes["counter"])
			c.mu.Unlock()
		}
	}
}

func numAttr(v types.AttributeValue) int64 {
	if n, ok := v.(*types.AttributeValueMemberN); ok {
		i, _ := strconv.ParseInt(n.Value, 10, 64)
		return i
	}
	return 0
}

func (c *Coordinator) scan(ctx context.Context) error {
	now := c.now()
	fresh := map[string]*observed{}
	var start map[string]types.AttributeValue
	for {
		out, err := c.api.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(c.cfg.Table), ExclusiveStartKey: start, ConsistentRead: aws.Bool(true)})
		if err != nil {
			return fmt.Errorf("scanning lease table %s: %w", c.cfg.Table, err)
		}
		for _, it := range out.Items {
			k, _ := it["lease_key"].(*types.AttributeValueMemberS)
			if k == nil {
				continue
			}
			o := &observed{counter: numAttr(it["counter"]), changed: now}
			if ow, ok := it["owner"].(*types.AttributeValueMemberS); ok {
				o.owner = ow.Value
			}
			if f, ok := it["finished"].(*types.AttributeValueMemberBOOL); ok {
				o.finished = f.Value
			}
			fresh[k.Value] = o
		}
		if start = out.LastEvaluatedKey; len(start) == 0 {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, o := range fresh {
		if prev, ok := c.seen[k]; ok && prev.counter == o.counter && prev.owner == o.owner {
			o.changed = prev.changed // unchanged since last seen: keep the time it last moved
		}
	}
	c.seen = fresh
	return nil
}

func (c *Coordinator) createMissing(ctx context.Context) {
	c.mu.Lock()
	var missing []string
	for k := range c.offered {
		if _, ok := c.seen[k]; !ok {
			missing = append(missing, k)
		}
	}
	c.mu.Unlock()
	for _, k := range missing {
		_, err := c.api.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(c.cfg.Table),
			Item:                map[string]types.AttributeValue{"lease_key": str(k), "counter": num(0)},
			ConditionExpression: aws.String("attribute_not_exists(lease_key)")})
		var cond *types.ConditionalCheckFailedException
		if err != nil && !errors.As(err, &cond) {
			c.log.Warn("creating lease", "lease", k, "error", err)
		}
	}
}

// acquire takes free or expired leases up to this replica's fair share, then steals at most one.
func (c *Coordinator) acquire(ctx context.Context) {
	now := c.now()
	c.mu.Lock()
	live := 0
	var leases []string
	count := map[string]int{}
	for k, o := range c.seen {
		if len(k) > len(workerPrefix) && k[:len(workerPrefix)] == workerPrefix {
			// A worker that released on shutdown has no owner: it is gone at once.
			if o.owner != "" && (now.Sub(o.changed) < c.cfg.Duration || o.owner == c.cfg.Owner) {
				live++
			}
			continue
		}
		if o.finished || !c.offered[k] {
			continue
		}
		leases = append(leases, k)
		if o.owner != "" && now.Sub(o.changed) < c.cfg.Duration {
			count[o.owner]++
		}
	}
	slices.Sort(leases)
	share := int(math.Ceil(float64(len(leases)) / float64(max(live, 1))))
	mine := len(c.held)
	type candidate struct {
		key string
		obs observed
	}
	var free []candidate
	var victim string
	own := 0
	for _, k := range leases {
		o := c.seen[k]
		if _, ok := c.held[k]; ok {
			continue
		}
		switch {
		case o.owner == c.cfg.Owner:
			// Held under our own id by an earlier incarnation of this replica (a restart after a
			// crash). Replica ids are unique, so no one else reads it: take it back whatever the
			// share, first.
			free = append([]candidate{{k, *o}}, free...)
			own++
		case o.owner == "" || now.Sub(o.changed) >= c.cfg.Duration:
			free = append(free, candidate{k, *o})
		case count[o.owner] > mine+1 && (victim == "" || count[o.owner] > count[c.seen[victim].owner]):
			// Steal only from a replica holding at least two more than this one: 2/2/0 becomes
			// 2/1/1, and a difference of one never makes two replicas trade a lease back and forth.
			victim = k
		}
	}
	var victimObs observed
	if victim != "" {
		victimObs = *c.seen[victim]
	}
	c.mu.Unlock()

	for i, f := range free {
		if mine >= share && i >= own {
			return
		}
		if c.take(ctx, f.key, f.obs) {
			mine++
		}
	}
	if mine < share && victim != "" {
		if c.take(ctx, victim, victimObs) {
			c.log.Info("took a lease from an over-loaded replica", "lease", victim, "from", victimObs.owner)
		}
	}
}

// take claims a lease on condition that it is as observed (same counter, same owner or none).
func (c *Coordinator) take(ctx context.Context, key string, o observed) bool {
	cond := "#c = :seen AND attribute_not_exists(#o)"
	values := map[string]types.AttributeValue{":seen": num(o.counter), ":me": str(c.cfg.Owner), ":one": num(1)}
	if o.owner != "" {
		cond = "#c = :seen AND #o = :prev"
		values[":prev"] = str(o.owner)
	}
	out, err := c.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(c.cfg.Table), Key: leaseKey(key),
		UpdateExpression:          aws.String("SET #o = :me, #c = #c + :one"),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  map[string]string{"#c": "counter", "#o": "owner"},
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueUpdatedNew,
	})
	if err != nil {
		var cf *types.ConditionalCheckFailedException
		if !errors.As(err, &cf) {
			c.log.Warn("taking lease", "lease", key, "error", err)
		}
		return false
	}
	c.mu.Lock()
	c.held[key] = numAttr(out.Attributes["counter"])
	c.mu.Unlock()
	c.log.Info("lease taken", "lease", key, "previous_owner", o.owner)
	return true
}

// releaseAll gives up every lease held (graceful shutdown), so other replicas take them at once
// instead of after the lease duration.
func (c *Coordinator) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.mu.Lock()
	keys := make([]string, 0, len(c.held))
	for k := range c.held {
		keys = append(keys, k)
	}
	c.held = map[string]int64{}
	c.mu.Unlock()
	for _, k := range keys {
		_, err := c.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(c.cfg.Table), Key: leaseKey(k),
			UpdateExpression:          aws.String("REMOVE #o SET #c = #c + :one"),
			ConditionExpression:       aws.String("#o = :me"),
			ExpressionAttributeNames:  map[string]string{"#o": "owner", "#c": "counter"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":me": str(c.cfg.Owner), ":one": num(1)},
		})
		if err != nil {
			c.log.Warn("releasing lease", "lease", k, "error", err)
		}
	}
	_, _ = c.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(c.cfg.Table), Key: leaseKey(workerPrefix + c.cfg.Owner),
		UpdateExpression: aws.String("REMOVE #o"), ExpressionAttributeNames: map[string]string{"#o": "owner"}})
}
