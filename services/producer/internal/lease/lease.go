// Package lease shares shards between producer replicas through a DynamoDB lease table.
//
// Each shard has a lease item (owner, counter); each live replica has a worker item whose counter it
// bumps every round (a third of the lease duration): its heartbeat. A replica's heartbeat keeps
// every lease it owns: leases are not renewed one by one, so the lease table's writes do not grow
// with the number of shards (at 1,000 shards and 10 replicas, one write per replica per round
// instead of a thousand). A lease is expired when its owner's heartbeat has not moved for the lease
// duration, as this replica observes it with its own clock (no clocks are compared across hosts),
// or its owner released it or its worker; it may then be taken, conditionally on the lease's
// counter and owner observed, so two replicas cannot both take it. Replicas balance by taking free
// or expired leases up to their fair share (ceil(leases / live workers)), and by stealing at most
// one lease per round from the busiest replica when it holds at least two more leases than this
// one. A replica learns that a lease was taken from it from its next scan of the table.
//
// A replica whose heartbeats fail (it lost DynamoDB but may still reach Kafka) stops reading its
// shards before other replicas can see its leases expire: Held turns false once no heartbeat has
// succeeded for two thirds of the lease duration. Otherwise the replica would keep claiming the
// shards its successor took, and the two would fence each other in turns.
//
// Two processes must not share a replica id (they would both think they hold its leases):
// Register refuses to start a second one, and a running one that finds its worker item taken by
// another process reports it on Fatal.
//
// Leases decide who should read a shard; they are not what keeps a shard from being published
// twice. That is Kafka's fencing (see package publish): a replica that lost its lease without
// noticing yet is fenced by the broker on its next commit.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"

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
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
}

// ErrDuplicateReplica is returned when another live process uses this replica's id.
var ErrDuplicateReplica = errors.New("another process is running with this replica_id")

// concurrency bounds the lease-table calls in flight at once (creating and taking leases).
const concurrency = 16

// protocol is the lease protocol this package speaks, written in its worker item: 2, liveness by
// the worker's heartbeat. Replicas of protocol 1 (every lease renewed on its own, no protocol
// attribute) would take protocol 2's leases as expired: all replicas must run one protocol.
const protocol = 2

// Config configures a coordinator.
type Config struct {
	Table    string        // the lease table, created when missing
	Owner    string        // this replica's id, unique among replicas
	Duration time.Duration // a lease whose owner's heartbeat does not move for this long is expired. Default: 10s.
}

const workerPrefix = "worker|"

type observed struct {
	owner    string
	counter  int64
	finished bool
	changed  time.Time // local time the counter (or owner) was last seen to change
	protocol int64     // worker items: the owner's lease protocol (0: protocol 1)
}

// Coordinator holds this replica's leases. Run drives it; Offer, Held and Finish are safe to call
// from other goroutines.
type Coordinator struct {
	api   API
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	kick        chan struct{} // Offer of a new key: run a round now
	fatal       chan error    // another process took this replica's id
	incarnation string        // this process, in the worker item

	mu      sync.Mutex
	offered map[string]bool      // lease keys of readable shards, from the capture
	held    map[string]int64     // lease key → the counter we took it at
	beat    time.Time            // local time our last successful heartbeat started
	usable  map[string]time.Time // lease key → when a lease taken from a live replica may be used
	warned  map[string]bool      // replicas reported as speaking another lease protocol
	seen    map[string]*observed // every lease and worker item, as last scanned
	scanned bool                 // seen holds a scan
	counter int64                // our worker heartbeat
	stolen  bool                 // the worker item was taken by another process: hold nothing
	accept  func(key string) bool
	pin     func(key string) bool // leases never stolen for balance
	subs    []chan struct{}       // told when a lease is taken
	groups  map[string][]string
}

// Subscribe returns a channel that receives (without blocking the coordinator; signals merge)
// whenever this replica takes a lease, so that its reader starts at once.
func (c *Coordinator) Subscribe() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{}, 1)
	c.subs = append(c.subs, ch)
	return ch
}

// SetAccept restricts the leases this replica takes to those accept approves (the leases of the
// tables it captures); by default it takes any. Leases are created by whoever offers them (the
// replica listing a table's shards) and taken by any replica: a replica need not list a stream to
// read its shards.
func (c *Coordinator) SetAccept(accept func(key string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.accept = accept
}

// SetPinned marks leases that are never stolen to balance replicas (a table's lister: moving it
// costs a new full listing and a pause in discovery). They still move when their holder stops.
func (c *Coordinator) SetPinned(pin func(key string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pin = pin
}

// pinned reports whether key must not be stolen. The caller holds mu.
func (c *Coordinator) pinned(key string) bool { return c.pin != nil && c.pin(key) }

// HeldKeys returns the keys of the leases this replica holds and may use, sorted.
func (c *Coordinator) HeldKeys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.held {
		if c.fresh(k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// New returns a coordinator.
func New(api API, cfg Config, log *slog.Logger) *Coordinator {
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Coordinator{api: api, cfg: cfg, log: log, now: time.Now, sleep: backoff.Sleep, kick: make(chan struct{}, 1), fatal: make(chan error, 1),
		incarnation: hex.EncodeToString(b[:]), offered: map[string]bool{}, held: map[string]int64{}, usable: map[string]time.Time{},
		seen: map[string]*observed{}, warned: map[string]bool{}}
}

// Delete removes the lease of a finished shard that aged out of its stream, so that the lease
// table holds only live shards.
func (c *Coordinator) Delete(ctx context.Context, key string) error {
	_, err := c.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(c.cfg.Table), Key: leaseKey(key),
		ConditionExpression:       aws.String("attribute_not_exists(lease_key) OR finished = :t"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": &types.AttributeValueMemberBOOL{Value: true}}})
	var cf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &cf) {
		return fmt.Errorf("deleting lease %s: %w", key, err)
	}
	c.mu.Lock()
	delete(c.seen, key)
	delete(c.offered, key)
	c.mu.Unlock()
	return nil
}

// Key is the lease key of a shard.
func Key(streamARN, shard string) string { return streamARN + "|" + shard }

// Split returns the stream ARN and shard of a lease key.
func Split(key string) (streamARN, shard string, ok bool) {
	i := strings.LastIndexByte(key, '|')
	if i < 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

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
		c.kickRound()
	}
}

// kickRound asks for a round now (keys were offered).
func (c *Coordinator) kickRound() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// OfferSet declares the keys of one group (a stream's readable shards) that are readable now,
// replacing the group's earlier offer: a key dropped from it (its shard finished) is no longer
// created, so its lease can be deleted.
func (c *Coordinator) OfferSet(group string, keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groups == nil {
		c.groups = map[string][]string{}
	}
	now := make(map[string]bool, len(keys))
	for _, k := range keys {
		now[k] = true
	}
	for _, k := range c.groups[group] {
		if !now[k] {
			delete(c.offered, k)
		}
	}
	c.groups[group] = slices.Clone(keys)
	added := false
	for _, k := range keys {
		if !c.offered[k] {
			added = true
			c.log.Debug("lease offered", "lease", k)
		}
		c.offered[k] = true
	}
	if added {
		c.kickRound()
	}
}

// Finished reports whether the lease of key was marked finished, as last scanned.
func (c *Coordinator) Finished(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.seen[key]
	return ok && o.finished
}

// Held reports whether this replica holds the lease of key.
func (c *Coordinator) Held(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.held[key]
	return ok && c.fresh(key)
}

// fresh reports whether a held lease may be used: this replica's heartbeat succeeded within two
// thirds of the lease duration, so that it stops using its leases before any other replica can
// see them expire (others wait the whole duration after they last saw the heartbeat move), and a
// lease taken from a live replica has waited for that replica to learn it. The caller holds mu.
func (c *Coordinator) fresh(key string) bool {
	now := c.now()
	return now.Sub(c.beat) < c.cfg.Duration*2/3 && !now.Before(c.usable[key])
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
	delete(c.usable, key)
	delete(c.offered, key)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("finishing lease %s: %w", key, err)
	}
	return nil
}

// Run heartbeats, scans, creates, takes and steals leases every third of the lease duration until
// ctx is done; then it releases the leases it holds, so that other replicas take them at once.
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

// Round is one heartbeat/scan/acquire pass (Run calls it; tests call it directly).
func (c *Coordinator) Round(ctx context.Context) error {
	start := c.now()
	if !c.heartbeat(ctx) {
		return nil
	}
	beat := c.now()
	// Leases offered since the last scan are created before it, so that this round's scan sees
	// them and this replica may take them in this round. (Before the first scan every offered key
	// looks missing: create after it.)
	created := 0
	scannedBefore := c.scanned
	if scannedBefore {
		created = c.createMissing(ctx)
	}
	if err := c.scan(ctx); err != nil {
		return err
	}
	if !scannedBefore {
		created = c.createMissing(ctx)
	}
	scanned := c.now()
	c.dropLost()
	taken := c.acquire(ctx)
	c.log.Debug("lease round", "heartbeat_s", beat.Sub(start).Seconds(), "scan_s", scanned.Sub(beat).Seconds(),
		"total_s", c.now().Sub(start).Seconds(), "created", created, "taken", taken)
	return nil
}

func leaseKey(k string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"lease_key": str(k)}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

// dropLost forgets the held leases the last scan shows owned by another replica (taken for balance,
// or after this replica's heartbeat stalled) or gone.
func (c *Coordinator) dropLost() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.held {
		if o, ok := c.seen[k]; !ok || o.owner != c.cfg.Owner {
			c.log.Info("lease lost to another replica", "lease", k)
			delete(c.held, k)
			delete(c.usable, k)
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
			o.protocol = numAttr(it["protocol"])
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
	c.scanned = true
	for k, o := range fresh {
		if id, ok := strings.CutPrefix(k, workerPrefix); ok && o.owner != "" && o.protocol != protocol && !c.warned[id] {
			c.warned[id] = true
			c.log.Error("a replica speaks another lease protocol: run every replica of this lease table on one ddb2delta version "+
				"(replicas of lease protocol 1 take the leases of protocol 2 as expired, and the other way round)",
				"replica", id, "its_protocol", max(o.protocol, 1), "this_protocol", protocol)
		}
	}
	return nil
}

// alive reports whether a lease owner's heartbeat moved within the lease duration, as last
// observed; this replica is alive to itself. A worker released on shutdown (no owner) is gone at
// once. The caller holds mu.
func (c *Coordinator) alive(owner string, now time.Time) bool {
	if owner == c.cfg.Owner {
		return true
	}
	w, ok := c.seen[workerPrefix+owner]
	return ok && w.owner != "" && now.Sub(w.changed) < c.cfg.Duration
}

// createMissing creates the leases offered but not seen in the lease table, and returns how many
// it created.
func (c *Coordinator) createMissing(ctx context.Context) int {
	c.mu.Lock()
	var missing []string
	for k := range c.offered {
		if _, ok := c.seen[k]; !ok {
			missing = append(missing, k)
		}
	}
	c.mu.Unlock()
	var created atomic.Int64
	var g errgroup.Group
	g.SetLimit(concurrency)
	for _, k := range missing {
		g.Go(func() error {
			_, err := c.api.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(c.cfg.Table),
				Item:                map[string]types.AttributeValue{"lease_key": str(k), "counter": num(0)},
				ConditionExpression: aws.String("attribute_not_exists(lease_key)")})
			var cond *types.ConditionalCheckFailedException
			switch {
			case err == nil:
				created.Add(1)
				c.log.Debug("lease created", "lease", k)
			case !errors.As(err, &cond):
				c.log.Warn("creating lease", "lease", k, "error", err)
			}
			return nil
		})
	}
	_ = g.Wait()
	return int(created.Load())
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
	stolen := c.stolen
	c.mu.Unlock()
	if stolen {
		return // the worker and its leases are another process's now
	}
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
		UpdateExpression: aws.String("REMOVE #o"), ConditionExpression: aws.String("incarnation = :inc"),
		ExpressionAttributeNames: map[string]string{"#o": "owner"}, ExpressionAttributeValues: map[string]types.AttributeValue{":inc": str(c.incarnation)}})
}
