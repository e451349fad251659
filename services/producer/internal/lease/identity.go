package lease

// One process per replica id: a process registers its incarnation in its worker item before it
// takes any lease, and heartbeats only while the item is still its own.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Fatal reports, once, that another process took this replica's id while it ran.
func (c *Coordinator) Fatal() <-chan error { return c.fatal }

// Register makes this process the one running under its replica id, before it takes any lease. A
// worker item left by an earlier process of the same id (a crash) is taken over once its counter
// has not moved for the lease duration; one whose counter moves belongs to a live process, and
// Register fails with ErrDuplicateReplica. A replica that stopped gracefully (its worker released)
// is taken over at once.
func (c *Coordinator) Register(ctx context.Context) error {
	key := workerPrefix + c.cfg.Owner
	var first *observed
	var firstInc string
	for {
		out, err := c.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(c.cfg.Table), Key: leaseKey(key), ConsistentRead: aws.Bool(true)})
		if err != nil {
			return fmt.Errorf("reading worker %s from lease table %s: %w", c.cfg.Owner, c.cfg.Table, err)
		}
		it := out.Item
		inc := ""
		if v, ok := it["incarnation"].(*types.AttributeValueMemberS); ok {
			inc = v.Value
		}
		owner := ""
		if v, ok := it["owner"].(*types.AttributeValueMemberS); ok {
			owner = v.Value
		}
		counter := numAttr(it["counter"])
		now := c.now()
		switch {
		case it == nil || owner == "":
			// No worker, or one released on shutdown: take it unless someone else does first.
		case first == nil:
			first, firstInc = &observed{counter: counter, changed: now}, inc
			c.log.Info("another process held this replica id; waiting one lease duration to see whether it is alive", "replica", c.cfg.Owner)
		case counter != first.counter || inc != firstInc:
			return fmt.Errorf("%w: replica_id %q is in use in lease table %s (its heartbeat moves); give each replica a unique replica_id",
				ErrDuplicateReplica, c.cfg.Owner, c.cfg.Table)
		case now.Sub(first.changed) < c.cfg.Duration:
		default:
			c.log.Info("the earlier process of this replica id is gone; taking over its worker", "replica", c.cfg.Owner)
		}
		if it != nil && owner != "" && (first == nil || c.now().Sub(first.changed) < c.cfg.Duration) {
			if err := c.sleep(ctx, c.cfg.Duration/5); err != nil {
				return err
			}
			continue
		}
		put := &dynamodb.PutItemInput{TableName: aws.String(c.cfg.Table),
			Item: map[string]types.AttributeValue{"lease_key": str(key), "counter": num(counter + 1), "owner": str(c.cfg.Owner),
				"incarnation": str(c.incarnation), "protocol": num(protocol)},
			ConditionExpression: aws.String("attribute_not_exists(lease_key)")}
		if it != nil {
			put.ConditionExpression = aws.String("#c = :seen")
			put.ExpressionAttributeNames = map[string]string{"#c": "counter"}
			put.ExpressionAttributeValues = map[string]types.AttributeValue{":seen": num(counter)}
		}
		_, err = c.api.PutItem(ctx, put)
		var cf *types.ConditionalCheckFailedException
		if errors.As(err, &cf) {
			first = nil // someone wrote it meanwhile: look again
			continue
		}
		if err != nil {
			return fmt.Errorf("registering worker %s in lease table %s: %w", c.cfg.Owner, c.cfg.Table, err)
		}
		c.counter = counter + 1
		return nil
	}
}

// heartbeat bumps this replica's worker counter, on condition that the worker item is still this
// process's (or has none: a test driving rounds without Register); the heartbeat keeps every lease
// this replica owns. It reports false once another process took the item (then this one holds
// nothing more and Fatal says why), and while heartbeats have been failing too long for this
// replica to use leases (then it takes none).
func (c *Coordinator) heartbeat(ctx context.Context) bool {
	c.mu.Lock()
	stolen := c.stolen
	c.mu.Unlock()
	if stolen {
		return false
	}
	c.counter++
	start := c.now()
	// A heartbeat that takes longer than a round is as good as failed.
	hctx, cancel := context.WithTimeout(ctx, c.cfg.Duration/3)
	defer cancel()
	_, err := c.api.UpdateItem(hctx, &dynamodb.UpdateItemInput{TableName: aws.String(c.cfg.Table), Key: leaseKey(workerPrefix + c.cfg.Owner),
		UpdateExpression:          aws.String("SET #c = :n, #o = :me, incarnation = :inc, protocol = :p"),
		ConditionExpression:       aws.String("attribute_not_exists(incarnation) OR incarnation = :inc"),
		ExpressionAttributeNames:  map[string]string{"#c": "counter", "#o": "owner"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":n": num(c.counter), ":me": str(c.cfg.Owner), ":inc": str(c.incarnation), ":p": num(protocol)}})
	var cf *types.ConditionalCheckFailedException
	switch {
	case errors.As(err, &cf):
		err := fmt.Errorf("%w: another process took replica_id %q in lease table %s; this one stops", ErrDuplicateReplica, c.cfg.Owner, c.cfg.Table)
		c.log.Error("replica id taken by another process; dropping every lease", "error", err)
		c.mu.Lock()
		c.stolen = true
		c.held = map[string]int64{}
		c.mu.Unlock()
		select {
		case c.fatal <- err:
		default:
		}
		return false
	case err != nil:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.now().Sub(c.beat) < c.cfg.Duration*2/3 {
			c.log.Warn("worker heartbeat failed", "error", err)
			return true
		}
		// Heartbeats keep failing: stop using the leases before others can see them expire, and
		// let them go, so that this replica does not claim the shards back from its successors.
		if len(c.held) > 0 {
			c.log.Warn("worker heartbeats failing; giving every lease up so that other replicas take them", "leases", len(c.held), "error", err)
		}
		c.held = map[string]int64{}
		c.usable = map[string]time.Time{}
		return false
	default:
		c.mu.Lock()
		c.beat = start // the heartbeat took effect at some instant after start: count from start
		c.mu.Unlock()
	}
	return true
}
