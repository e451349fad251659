package lease

// Taking leases: free and expired ones up to this replica's fair share, at most one stolen from the
// busiest replica per round, each take conditional on what the scan observed.

import (
	"context"
	"errors"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"golang.org/x/sync/errgroup"
)

// acquire takes free or expired leases up to this replica's fair share, then steals at most one.
// It returns how many it took.
func (c *Coordinator) acquire(ctx context.Context) (taken int) {
	now := c.now()
	c.mu.Lock()
	live := 0
	var leases []string
	count := map[string]int{}
	for k, o := range c.seen {
		if id, ok := strings.CutPrefix(k, workerPrefix); ok {
			if o.owner != "" && c.alive(id, now) {
				live++
			}
			continue
		}
		if o.finished || (c.accept != nil && !c.accept(k)) {
			continue
		}
		leases = append(leases, k)
		if o.owner != "" && c.alive(o.owner, now) {
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
		case o.owner == "" || !c.alive(o.owner, now):
			free = append(free, candidate{k, *o})
		case count[o.owner] > mine+1 && !c.pinned(k) && (victim == "" || count[o.owner] > count[c.seen[victim].owner]):
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

	// Expired and free leases in random order (after this replica's own), so that replicas
	// starting together do not all race for the same ones.
	rest := free[own:]
	mrand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	// Own leases all, then free ones up to the share, several at a time: a replica starting
	// among a thousand shards takes a hundred leases. A take that fails (another replica was
	// faster) is made up with the next candidate.
	var g errgroup.Group
	g.SetLimit(concurrency)
	var mu sync.Mutex
	inFlight := 0
	atShare := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return mine+inFlight >= share
	}
	for i, f := range free {
		if i >= own && atShare() {
			_ = g.Wait() // the takes in flight settle: failed ones leave room for more
			if atShare() {
				return taken
			}
		}
		mu.Lock()
		inFlight++
		mu.Unlock()
		g.Go(func() error {
			ok := c.take(ctx, f.key, f.obs)
			mu.Lock()
			defer mu.Unlock()
			inFlight--
			if ok {
				mine++
				taken++
			}
			return nil
		})
	}
	_ = g.Wait()
	if mine < share && victim != "" {
		if c.take(ctx, victim, victimObs) {
			taken++
			// Its previous owner learns of it at its next scan (a third of the duration
			// from now at most): until then both would read the shard (Streams allows two
			// readers, at five calls a second between them) and the previous owner could
			// still commit a page. Wait that long before using the lease.
			c.mu.Lock()
			c.usable[victim] = c.now().Add(c.cfg.Duration/3 + c.cfg.Duration/10)
			c.mu.Unlock()
			c.log.Info("took a lease from an over-loaded replica", "lease", victim, "from", victimObs.owner)
		}
	}
	return taken
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
	for _, ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	c.log.Info("lease taken", "lease", key, "previous_owner", o.owner)
	return true
}
