package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/fault"
)

// ErrFenced is returned (wrapped) when another writer has taken the shard over: this writer must
// stop, its open transaction was aborted by the broker.
var ErrFenced = errors.New("fenced by a newer writer of the shard")

// commitTimeout bounds one transaction's flush and commit. It is not tied to the service's
// shutdown: cancelling a commit half-way leaves its outcome unknown (franz-go's EndTransaction doc).
const commitTimeout = 15 * time.Second

// transactionTimeout is how long the broker lets a transaction stay open before aborting it. A
// writer that dies (or is abandoned) mid-transaction holds back the checkpoint topic's one
// partition for read_committed readers until then, which stalls every shard's claim: keep it
// short, but above commitTimeout so that a healthy commit is never cut off. (Seen once in a loaded
// CI run with the old 1-minute value: a claim waited 60 s during lease rebalancing.)
const transactionTimeout = 20 * time.Second

// ShardWriter publishes one shard's pages, each in one transaction with its checkpoint.
type ShardWriter struct {
	cl              *kgo.Client
	checkpointTopic string
	partition       int32 // the shard's partition of the checkpoint topic
	streamARN       string
	shard           string
	owner           string
}

// TransactionalID is the transactional id of a shard: stable for the shard's life, so that any
// writer of it fences every earlier one.
func TransactionalID(prefix, streamARN, shard string) string {
	return prefix + "-producer-" + streamARN + "-" + shard
}

// NewShardWriter creates the shard's transactional client; cps is the checkpoint topic's follower.
func NewShardWriter(opts []kgo.Opt, txnID string, cps *Checkpoints, streamARN, shard, owner string) (*ShardWriter, error) {
	cl, err := kgo.NewClient(append(opts, kgo.TransactionalID(txnID), kgo.TransactionTimeout(transactionTimeout),
		kgo.RecordPartitioner(partitioner{topic: cps.topic}))...)
	if err != nil {
		return nil, fmt.Errorf("creating transactional client for shard %s: %w", shard, err)
	}
	return &ShardWriter{cl: cl, checkpointTopic: cps.topic, partition: Partition(streamARN, shard, cps.partitions),
		streamARN: streamARN, shard: shard, owner: owner}, nil
}

// Close closes the client; an open transaction is aborted by the broker when it times out or when
// the next writer of the shard claims it.
func (w *ShardWriter) Close() { w.cl.Close() }

// Claim commits a claim and returns where it landed. Committing it proves this writer holds the
// shard's newest producer epoch: every earlier writer is fenced. Once the follower has read that
// position (Checkpoints.WaitRead), it has read every checkpoint committed before the claim: they
// precede it in the shard's partition. Recognising the claim by its offset, not by "the newest
// claim of the shard", holds even when a later claim follows it in the same fetch.
func (w *ShardWriter) Claim(ctx context.Context) (Position, error) {
	value, _ := json.Marshal(claim{Nonce: randomNonce(), Owner: w.owner})
	rec := &kgo.Record{Topic: w.checkpointTopic, Partition: w.partition, Key: []byte(claimKey(w.streamARN, w.shard)), Value: value}
	if err := w.transact(ctx, []*kgo.Record{rec}); err != nil {
		return Position{}, fmt.Errorf("claiming shard %s: %w", w.shard, err)
	}
	return Position{Partition: rec.Partition, Offset: rec.Offset}, nil
}

// Commit publishes records and the shard's new checkpoint in one transaction. On error nothing of
// it is visible to read_committed consumers; the caller discards this writer, creates a new one and
// resumes from the last committed checkpoint.
func (w *ShardWriter) Commit(ctx context.Context, records []*kgo.Record, after string, end bool) error {
	return w.commit(ctx, records, Checkpoint{After: after, End: end})
}

// CommitPlan records a snapshot's plan as the finished checkpoint of this writer's "shard". Only a
// writer that has claimed can commit it, so of two replicas racing to plan the same snapshot the
// later claim fences the other: one plan commits, and both then read it back.
func (w *ShardWriter) CommitPlan(ctx context.Context, p Plan) error {
	return w.commit(ctx, nil, Checkpoint{End: true, Plan: &p})
}

func (w *ShardWriter) commit(ctx context.Context, records []*kgo.Record, cp Checkpoint) error {
	cp.StreamARN, cp.Shard, cp.Owner, cp.At = w.streamARN, w.shard, w.owner, time.Now().UTC()
	after := cp.After
	value, _ := json.Marshal(cp)
	all := append(records[:len(records):len(records)],
		&kgo.Record{Topic: w.checkpointTopic, Partition: w.partition, Key: []byte(checkpointKey(w.streamARN, w.shard)), Value: value})
	if err := w.transact(ctx, all); err != nil {
		return fmt.Errorf("committing shard %s up to %s: %w", w.shard, after, err)
	}
	return nil
}

func (w *ShardWriter) transact(ctx context.Context, records []*kgo.Record) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if err := w.cl.BeginTransaction(); err != nil {
		return classify(err)
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	wg.Add(len(records))
	for _, r := range records {
		w.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	fault.Point(fault.ProducerInTransaction)
	commit := kgo.TryCommit
	if firstErr != nil {
		commit = kgo.TryAbort
	}
	if err := w.cl.EndTransaction(ctx, commit); err != nil {
		return classify(err)
	}
	if firstErr != nil {
		return classify(firstErr)
	}
	return nil
}

func classify(err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		return fmt.Errorf("%w: %v", ErrFenced, err)
	}
	return err
}
