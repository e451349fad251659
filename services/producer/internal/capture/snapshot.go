package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/producer/internal/changes"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/lease"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/publish"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/snapshot"
)

// Snapshot configures a table's snapshots (package snapshot): the initial load, and the ones taken
// after a stream gap.
type Snapshot struct {
	Initial          bool // load the table's items before its stream
	AfterGap         bool // take a snapshot before publishing a stream that follows a gap
	ID               string
	Segments         int
	PageSize         int32
	CapacityShare    float64
	OnDemandCapacity float64
	Consistent       bool
}

// planShard is the pseudo-shard under which a snapshot's plan is leased and checkpointed.
const planShard = "plan"

// snapshotState is a table loop's view of its snapshot.
type snapshotState struct {
	stream string        // pseudo stream ARN of the snapshot's checkpoints, leases and transactional ids
	plan   *publish.Plan // nil until the plan is read back
	table  changes.Table // what conversion needs, from DescribeTable
	budget float64       // read units per second for the whole snapshot
	done   bool
}

// snapshotStream names a snapshot in checkpoint keys, lease keys and transactional ids.
func snapshotStream(table, id string) string { return "snapshot/" + table + "/" + id }

// snapshotStep advances the table's snapshot: it gets the plan made (by whichever replica holds
// the plan's lease), then offers the unfinished segments as leases and starts a runner for each one
// this replica holds. Runners report to the table loop through done, like shard readers.
func (tc *tableCapture) snapshotStep(ctx context.Context, running map[string]shardRun, finished map[string]bool, done chan shardDone, wg *sync.WaitGroup, log *slog.Logger) {
	st := tc.snap
	if st == nil || st.done {
		return
	}
	if st.plan == nil {
		if cp, ok := tc.cps.Get(st.stream, planShard); ok && cp.Plan != nil {
			st.plan = cp.Plan
			log.Info("snapshot planned", "snapshot", st.stream, "position", st.plan.Position, "segments", st.plan.Segments, "stream", st.plan.StreamARN)
		} else {
			key := lease.Key(st.stream, planShard)
			if finished[key] {
				return // planned; the checkpoint follower has not read the plan yet
			}
			tc.c.leases.Offer([]string{key})
			if _, ok := running[key]; !ok && tc.c.leases.Held(key) {
				tc.start(ctx, key, planShard, running, done, wg, func(ctx context.Context) (bool, error) { return tc.makePlan(ctx, log) })
			}
			return
		}
	}
	if st.table.Name == "" {
		if err := tc.describeForSnapshot(ctx); err != nil {
			log.Warn("describing the table for its snapshot; retrying", "error", err)
			return
		}
	}
	var offer []string
	var indexes []int
	for i := range st.plan.Segments {
		seg := snapshot.SegmentName(i)
		key := lease.Key(st.stream, seg)
		if cp, ok := tc.cps.Get(st.stream, seg); ok && cp.End {
			finished[key] = true
		}
		if !finished[key] {
			offer, indexes = append(offer, key), append(indexes, i)
		}
	}
	tc.c.metrics.snapshotRemaining.WithLabelValues(tc.t.Name).Set(float64(len(offer)))
	if len(offer) == 0 {
		st.done = true
		log.Info("snapshot finished", "snapshot", st.stream)
		return
	}
	tc.c.leases.Offer(offer)
	for j, key := range offer {
		if _, ok := running[key]; ok || !tc.c.leases.Held(key) {
			continue
		}
		index := indexes[j]
		segLog := log.With("segment", snapshot.SegmentName(index))
		tc.start(ctx, key, snapshot.SegmentName(index), running, done, wg, func(ctx context.Context) (bool, error) { return tc.runSegment(ctx, index, segLog) })
	}
}

// start runs fn for the lease key in its own goroutine, reporting its end to the table loop.
// name is the shard (or segment) in logs, metrics and the readiness check: a run that fails is
// recorded as such, and the shard is stalled when its failures last (see stalls).
func (tc *tableCapture) start(ctx context.Context, key, name string, running map[string]shardRun, done chan shardDone, wg *sync.WaitGroup, fn func(context.Context) (bool, error)) {
	if !tc.c.stalls.mayStart(tc.t.Name, name) {
		return // backing off after a failure; a later scan starts it
	}
	sctx, cancel := context.WithCancel(ctx)
	tc.runs++
	run := tc.runs
	running[key] = shardRun{cancel: cancel, run: run}
	wg.Add(1)
	go func() {
		defer wg.Done()
		fin, err := fn(sctx)
		switch {
		case err != nil && sctx.Err() == nil:
			if errors.Is(err, kerr.MessageTooLarge) {
				// The broker refused a record the size check let through: a topic's
				// max.message.bytes was lowered. Read it again before the retry.
				tc.c.limits.forget(tc.topic, tc.c.cfg.DeadLetterTopic)
			}
			tc.c.stalls.failed(tc.t.Name, name, err)
		case fin || err == nil || sctx.Err() != nil:
			// Finished, or stopped because its lease went elsewhere (the table loop
			// cancelled it, or the run saw it first and returned): this replica no longer
			// reads it. (Forgetting only cancelled runs left a shard whose run saw the lease
			// lost between reading and publishing pending forever: stalled, and /readyz
			// failing, on a replica that no longer read it.)
			tc.c.stalls.forget(tc.t.Name, name)
			tc.c.metrics.releaseShard(tc.t.Name, name)
		}
		select {
		case done <- shardDone{key: key, run: run, finished: fin, err: err}:
		case <-ctx.Done():
		}
	}()
}

// makePlan fixes the snapshot's stream position and segment count, once for all replicas: it
// claims the plan's pseudo-shard (fencing any other replica planning at the same time), reads the
// checkpoint topic up to its claim, and commits a plan only if none was committed before.
func (tc *tableCapture) makePlan(ctx context.Context, log *slog.Logger) (bool, error) {
	st, cfg := tc.snap, tc.c.cfg
	w, err := publish.NewShardWriter(tc.c.kafka, publish.TransactionalID(cfg.TopicPrefix, st.stream, planShard), tc.cps, st.stream, planShard, cfg.ReplicaID)
	if err != nil {
		return false, err
	}
	defer w.Close()
	if _, _, err := tc.claim(ctx, w, st.stream, planShard); err != nil {
		return false, err
	}
	if cp, ok := tc.cps.Get(st.stream, planShard); ok && cp.Plan != nil {
		return true, nil
	}
	arn, err := tc.streamARN(ctx)
	if err != nil {
		return false, err
	}
	d, err := tc.c.discovery.Describe(ctx, arn)
	if err != nil {
		return false, err
	}
	pos, err := snapshot.Position(d.Shards)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", arn, err)
	}
	plan := publish.Plan{StreamARN: arn, Position: pos, Segments: tc.t.Snapshot.Segments, StartedAt: time.Now().UTC()}
	if err := w.CommitPlan(ctx, plan); err != nil {
		return false, err
	}
	log.Info("snapshot plan committed", "snapshot", st.stream, "position", pos, "segments", plan.Segments)
	return true, nil
}

// claim claims a shard (or a snapshot's pseudo-shard) and waits until the checkpoint follower has
// read the claim back, so that Get returns the last checkpoint committed before it (package
// publish). The wait is bounded: if the follower is stuck, the shard is given back (the table loop
// restarts it) rather than held without reading.
func (tc *tableCapture) claim(ctx context.Context, w *publish.ShardWriter, stream, shard string) (claimed, readBack time.Duration, err error) {
	start := time.Now()
	pos, err := w.Claim(ctx)
	if err != nil {
		return 0, 0, err
	}
	claimed = time.Since(start)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = tc.cps.WaitRead(wctx, pos)
	return claimed, time.Since(start) - claimed, err
}

// describeForSnapshot reads the table's key schema and capacity.
func (tc *tableCapture) describeForSnapshot(ctx context.Context) error {
	st, cfg := tc.snap, tc.t.Snapshot
	out, err := tc.c.tables.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tc.t.Name)})
	if err != nil {
		return fmt.Errorf("describing table %s: %w", tc.t.Name, err)
	}
	t := tableSchema(out.Table)
	t.StreamARN = st.plan.StreamARN
	st.budget = snapshot.Budget(out.Table, cfg.CapacityShare, cfg.OnDemandCapacity)
	st.table = t
	return nil
}

// runSegment claims a snapshot segment and publishes it page by page from its checkpoint: each
// Scan page's rows and the segment's new position (the page's LastEvaluatedKey) in one Kafka
// transaction, exactly as a shard's pages. Each segment gets an equal part of the read budget, so
// the total holds however the segments are spread over replicas.
func (tc *tableCapture) runSegment(ctx context.Context, index int, log *slog.Logger) (bool, error) {
	st, cfg, scfg := tc.snap, tc.c.cfg, tc.t.Snapshot
	seg := snapshot.SegmentName(index)
	w, err := publish.NewShardWriter(tc.c.kafka, publish.TransactionalID(cfg.TopicPrefix, st.stream, seg), tc.cps, st.stream, seg, cfg.ReplicaID)
	if err != nil {
		return false, err
	}
	defer w.Close()
	if _, _, err := tc.claim(ctx, w, st.stream, seg); err != nil {
		return false, err
	}
	cp, _ := tc.cps.Get(st.stream, seg)
	if cp.End {
		return true, nil
	}
	m := tc.c.metrics
	reader := &snapshot.Segment{
		API: tc.c.tables, Table: tc.t.Name, Index: index, Total: st.plan.Segments, PageSize: scfg.PageSize,
		Consistent: scfg.Consistent, Pacer: snapshot.NewPacer(st.budget / float64(st.plan.Segments)),
		Throttled: func() { m.throttles.WithLabelValues(tc.t.Name).Inc() },
	}
	if err := reader.Resume(cp.After); err != nil {
		return false, err
	}
	log.Info("scanning snapshot segment", "after", cp.After)
	for {
		page, err := reader.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
		m.snapshotUnits.WithLabelValues(tc.t.Name).Add(page.Units)
		if !tc.c.leases.Held(lease.Key(st.stream, seg)) {
			log.Info("lease no longer held; stopping before publishing")
			return false, nil
		}
		tc.c.stalls.read(tc.t.Name, seg, len(page.Items))
		records, bytes, err := tc.convertSnapshot(ctx, seg, page)
		if err != nil {
			return false, err
		}
		start := time.Now()
		if err := w.Commit(ctx, records, page.After, page.End); err != nil {
			return false, err
		}
		m.commit.WithLabelValues(tc.t.Name).Observe(time.Since(start).Seconds())
		m.snapshotRows.WithLabelValues(tc.t.Name).Add(float64(len(page.Items)))
		m.bytes.WithLabelValues(tc.t.Name).Add(float64(bytes))
		tc.c.stalls.progressed(tc.t.Name, seg)
		if page.End {
			log.Info("snapshot segment finished")
			return true, nil
		}
	}
}

// convertSnapshot encodes a Scan page as op=r events; an item that cannot be encoded becomes a
// dead letter, as a stream record does.
func (tc *tableCapture) convertSnapshot(ctx context.Context, seg string, page snapshot.Page) ([]*kgo.Record, int, error) {
	now := time.Now()
	out := make([]*kgo.Record, 0, len(page.Items))
	bytes := 0
	tc.encMu.Lock()
	defer tc.encMu.Unlock()
	st := tc.snap
	for _, item := range page.Items {
		ev, key, err := changes.SnapshotRead(st.table, item, st.plan.Position, now, now)
		rec, n, err := tc.encode(ctx, ev, key, err, now, origin{
			where: st.stream + "/" + seg,
			keys:  func() ([]byte, error) { return changes.ItemJSON(st.table.KeyAttributes(item)) },
			whole: func() ([]byte, error) { return changes.ItemJSON(item) },
		})
		if err != nil {
			return nil, 0, err
		}
		out = append(out, rec)
		bytes += n
	}
	return out, bytes, nil
}

// snapshotFinished reports whether a snapshot's plan and every one of its segments are committed
// as finished (read from the checkpoint topic).
func (tc *tableCapture) snapshotFinished(stream string) bool {
	cp, ok := tc.cps.Get(stream, planShard)
	if !ok || cp.Plan == nil {
		return false
	}
	for i := range cp.Plan.Segments {
		if seg, ok := tc.cps.Get(stream, snapshot.SegmentName(i)); !ok || !seg.End {
			return false
		}
	}
	return true
}

// gapSnapshotID names the snapshot taken before a stream that follows a gap: the configured id
// and the stream's label (its creation time), so that each gap gets its own.
func (tc *tableCapture) gapSnapshotID(streamARN string) string {
	label := streamARN[strings.LastIndex(streamARN, "/")+1:]
	return tc.t.Snapshot.ID + "-gap-" + strings.NewReplacer(":", "", ".", "", "T", "-").Replace(label)
}

// nextSnapshot returns the table's next snapshot to run, if any: the initial one, then the gap
// snapshots recorded for the table (by any replica's lister) that are not finished, oldest first.
func (tc *tableCapture) nextSnapshot() *snapshotState {
	if tc.snap != nil && !tc.snap.done {
		return tc.snap
	}
	if tc.t.Snapshot == nil || !tc.t.Snapshot.AfterGap {
		return tc.snap
	}
	gaps := tc.cps.GapSnapshots(tc.t.Name)
	for _, arn := range slices.Sorted(maps.Keys(gaps)) {
		stream := snapshotStream(tc.t.Name, gaps[arn].ID)
		if tc.snapsDone[stream] || tc.snapshotFinished(stream) {
			tc.snapsDone[stream] = true
			continue
		}
		if tc.snap == nil || tc.snap.stream != stream {
			tc.snap = &snapshotState{stream: stream}
		}
		return tc.snap
	}
	return tc.snap
}
