package capture

// The listing side of a table: the replica holding the table's lister lease follows its streams
// (oldest first, across disables and re-enables), lists their shards within DescribeStream's limit
// and offers the leases of the readable ones; every replica reads what it holds (capture.go).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"golang.org/x/sync/errgroup"

	"github.com/ddb2delta/ddb2delta/services/producer/internal/lease"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/publish"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

// listLoop lists the table's streams and shards every rescan while this replica holds the table's
// lister lease.
func (tc *tableCapture) listLoop(ctx context.Context, log *slog.Logger) {
	finished := map[string]bool{} // lease keys of shards read to their end, as the checkpoints say
	tick := time.NewTicker(tc.c.cfg.Rescan)
	defer tick.Stop()
	for {
		tc.c.leases.Offer([]string{tc.listerKey()})
		if tc.c.leases.Held(tc.listerKey()) {
			start := time.Now()
			tc.followStreams(ctx, finished, log)
			log.Debug("streams listed", "took_s", time.Since(start).Seconds())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// followStreams scans the table's streams, oldest first. A stream's shards are read only once
// every older stream of the table has been read to its end, so that per-key order holds across a
// disable and re-enable of the table's stream: a change on the new stream is published after
// every change of the old one. (Reading both at once, a delete on the new stream could overtake an
// update on the old one, and a mirror would resurrect the item.) A stream read to its end is
// recorded as drained in the checkpoint topic, so the order holds across restarts and replicas.
func (tc *tableCapture) followStreams(ctx context.Context, finished map[string]bool, log *slog.Logger) {
	arns, current, err := tc.tableStreams(ctx, log)
	if err != nil {
		log.Warn("looking up the table's streams; retrying", "error", err)
		return
	}
	olderDrained := true
	for i, arn := range arns {
		isCurrent := arn == current
		if !isCurrent && tc.cps.Drained(arn) {
			continue
		}
		mayOffer := olderDrained
		if mayOffer && i > 0 && tc.t.Snapshot != nil && tc.t.Snapshot.AfterGap {
			// Every older stream is read to its end: before this one is published, a snapshot
			// publishes the items' state, which holds the changes no stream captured.
			g, err := tc.cps.SetGapSnapshot(ctx, publish.GapSnapshot{StreamARN: arn, Table: tc.t.Name, ID: tc.gapSnapshotID(arn)})
			if err != nil {
				log.Warn("recording the snapshot after a stream gap; retrying", "stream", arn, "error", err)
				mayOffer = false
			} else if !tc.snapshotFinished(snapshotStream(tc.t.Name, g.ID)) {
				mayOffer = false
			}
		}
		more, gone, err := tc.scan(ctx, arn, isCurrent, mayOffer, finished, log)
		switch {
		case err != nil:
			log.Warn("listing shards; retrying", "stream", arn, "error", err)
			olderDrained = false
		case isCurrent:
		case more:
			if olderDrained && i+1 < len(arns) {
				log.Info("reading the table's older stream to its end before its newer ones", "stream", arn, "newer", arns[i+1])
			}
			olderDrained = false
		default:
			newer := ""
			if i+1 < len(arns) {
				newer = arns[i+1]
			}
			// A stream followed by another, or the table's latest stream while it is disabled:
			// changes made since its disabling are not in it.
			gap := newer != "" || (current == "" && !gone)
			tc.markDrained(ctx, arn, newer, gone, gap, log)
		}
	}
}

// tableStreams returns the table's streams to follow, oldest first, and the current (enabled)
// one, "" while the table has none. ListStreams (DynamoDB keeps a disabled stream listed and
// readable for 24 hours) is called when the table's current stream is first seen or changes, so
// that after a restart an older stream's unread tail is still found and read first; streams
// recorded as drained are skipped by the caller.
func (tc *tableCapture) tableStreams(ctx context.Context, log *slog.Logger) ([]string, string, error) {
	latest, enabled, err := tc.latestStream(ctx)
	if err != nil {
		return nil, "", err
	}
	current := ""
	if enabled {
		current = latest
	}
	if tc.t.StreamARN != "" {
		return []string{latest}, current, nil
	}
	if !tc.listed || latest != tc.latest {
		if l, ok := tc.c.api.(streams.Lister); ok {
			list, err := streams.List(ctx, l, tc.t.Name)
			if err != nil {
				return nil, "", err
			}
			for _, a := range list {
				if !slices.Contains(tc.known, a) && a != latest {
					tc.known = append(tc.known, a)
				}
			}
		}
		if tc.latest != "" && latest != tc.latest {
			log.Info("the table has a new stream; reading the older one to its end first", "stream", latest, "older", tc.latest)
		}
		if !enabled {
			log.Warn("the table's stream is disabled: changes made from now on are not captured until it is enabled again", "stream", latest)
		}
		tc.listed, tc.latest = true, latest
	}
	if !slices.Contains(tc.known, latest) {
		tc.known = append(tc.known, latest)
	}
	// The latest stream comes last (ListStreams' labels already order the others).
	out := append(slices.DeleteFunc(slices.Clone(tc.known), func(a string) bool { return a == latest }), latest)
	return out, current, nil
}

// markDrained records that a stream was read to its end (or is gone). Changes made while a
// table's stream was disabled are not in any stream: DynamoDB loses them. That is reported here,
// once, when the stream before the gap is drained.
func (tc *tableCapture) markDrained(ctx context.Context, arn, newer string, gone, gap bool, log *slog.Logger) {
	if err := tc.cps.MarkDrained(ctx, publish.Drained{StreamARN: arn, Table: tc.t.Name, Newer: newer, Gone: gone}); err != nil {
		log.Warn("recording that a stream was read to its end; retrying", "stream", arn, "error", err)
		return
	}
	if !gap {
		log.Info("stream read to its end", "stream", arn, "stream_gone", gone)
		return
	}
	tc.c.metrics.streamGaps.WithLabelValues(tc.t.Name).Inc()
	log.Error("DATA LOSS: the table's stream was disabled; DynamoDB captured no change made between its disabling and the next stream's enabling. "+
		"With tables[].snapshot.after_stream_gap a snapshot publishes the items' state before the next stream; else take one (a new snapshot id)",
		"stream", arn, "next_stream", newer, "stream_gone", gone)
}

// scan lists one stream's shards (in full now and then, otherwise only the children of shards
// finished since: streams.Discovery) and offers the leases of the readable ones, unless an older
// stream of the table is still being read (mayOffer false). It reports whether the stream still
// needs following (it is the current one, or has shards not read to their end) and whether it is
// gone.
func (tc *tableCapture) scan(ctx context.Context, arn string, current, mayOffer bool, finished map[string]bool, log *slog.Logger) (more, gone bool, err error) {
	isFinished := func(id string) bool {
		if cp, ok := tc.cps.Get(arn, id); ok && cp.End {
			finished[lease.Key(arn, id)] = true
		}
		return finished[lease.Key(arn, id)]
	}
	d, full, err := tc.c.discovery.Shards(ctx, arn, isFinished)
	if errors.Is(err, streams.ErrStreamGone) {
		log.Warn("stream is gone", "stream", arn)
		tc.forgetAgedOut(ctx, arn, nil, finished, log)
		return false, true, nil
	}
	if err != nil {
		return true, false, err
	}
	byID := make(map[string]bool, len(d.Shards))
	listed := make(map[string]bool, len(d.Shards))
	for _, s := range d.Shards {
		listed[s.ID] = true
		byID[s.ID] = isFinished(s.ID)
	}
	if full {
		tc.forgetAgedOut(ctx, d.ARN, listed, finished, log)
	}
	if err := checkViewType(tc.t.Name, d.ARN, d.ViewType); err != nil {
		// A stream enabled again with another view type: the table stops here, not ready.
		tc.c.stalls.failed(tc.t.Name, "stream", err)
		return true, false, err
	}
	tc.c.stalls.forget(tc.t.Name, "stream")
	readable := streams.Readable(d.Shards, byID)
	if !mayOffer {
		return true, false, nil // an older stream of the table is not read to its end yet
	}
	keys := make([]string, len(readable))
	for i, s := range readable {
		keys[i] = lease.Key(d.ARN, s.ID)
	}
	tc.c.leases.OfferSet("shards|"+d.ARN, keys)
	// A finished shard's lease is of no more use once its children are offered (they are, now:
	// a child is readable once its parent is finished), and no replica creates it again (it is
	// no longer offered): delete it, so that the lease table holds about the open shards, not
	// every shard of the last 24 hours.
	var done []string
	for _, s := range d.Shards {
		if key := lease.Key(d.ARN, s.ID); byID[s.ID] && tc.c.leases.Finished(key) {
			done = append(done, key)
		}
	}
	tc.deleteLeases(ctx, done, log)
	return current || len(readable) > 0, false, nil
}

// deleteLeases deletes finished leases, several at a time: at a thousand shards several finish
// every second, and one call after the other would hold the listing back. A lease whose deletion
// failed is deleted at the next listing.
func (tc *tableCapture) deleteLeases(ctx context.Context, keys []string, log *slog.Logger) {
	var g errgroup.Group
	g.SetLimit(deleteConcurrency)
	for _, key := range keys {
		g.Go(func() error { return tc.c.leases.Delete(ctx, key) })
	}
	if err := g.Wait(); err != nil {
		log.Warn("deleting finished leases; retried at the next listing", "error", err)
	}
}

// deleteConcurrency bounds the lister's concurrent lease deletions.
const deleteConcurrency = 8

// listerKey is the lease of the replica that lists the table's shards.
func (tc *tableCapture) listerKey() string { return "lister|" + tc.t.Name }

// ownsStream reports whether a stream ARN is one of this table's streams.
func (tc *tableCapture) ownsStream(arn string) bool {
	if tc.t.StreamARN != "" {
		return arn == tc.t.StreamARN
	}
	return strings.Contains(arn, ":table/"+tc.t.Name+"/stream/")
}

// forgetAgedOut deletes the checkpoints of a stream's finished shards that its complete listing
// no longer holds (they aged out after 24 hours, or the stream is gone: listed nil): no one can
// read them again, and the compacted checkpoint topic and this replica's memory would otherwise
// grow with every shard ever read.
func (tc *tableCapture) forgetAgedOut(ctx context.Context, arn string, listed map[string]bool, finished map[string]bool, log *slog.Logger) {
	for shard, cp := range tc.cps.Shards(arn) {
		if listed[shard] || (!cp.End && listed != nil) {
			continue
		}
		if err := tc.c.leases.Delete(ctx, lease.Key(arn, shard)); err != nil {
			log.Warn("deleting the lease of a shard that aged out", "stream", arn, "shard", shard, "error", err)
			return
		}
		if err := tc.cps.Forget(ctx, arn, shard); err != nil {
			log.Warn("deleting the checkpoint of a shard that aged out", "stream", arn, "shard", shard, "error", err)
			return
		}
		delete(finished, lease.Key(arn, shard))
		log.Debug("checkpoint of an aged-out shard deleted", "stream", arn, "shard", shard)
	}
}

// latestStream returns the table's latest stream (or the pinned one) and whether it is enabled. A
// table whose stream was disabled still names it: its unread tail is read to its end.
func (tc *tableCapture) latestStream(ctx context.Context) (string, bool, error) {
	if tc.t.StreamARN != "" {
		return tc.t.StreamARN, true, nil
	}
	out, err := tc.c.tables.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tc.t.Name)})
	if err != nil {
		return "", false, fmt.Errorf("describing table %s: %w", tc.t.Name, err)
	}
	arn := aws.ToString(out.Table.LatestStreamArn)
	if arn == "" {
		return "", false, fmt.Errorf("table %s has no stream: enable DynamoDB Streams on it", tc.t.Name)
	}
	spec := out.Table.StreamSpecification
	return arn, spec != nil && aws.ToBool(spec.StreamEnabled), nil
}
