// Package publish writes change events to Kafka exactly once per shard.
//
// How: every shard has its own Kafka transactional id. One GetRecords page becomes one Kafka
// transaction holding the page's change events and the shard's checkpoint (the last sequence
// number, and whether the shard is finished), written to a compacted checkpoint topic. So the
// records and the position they bring the shard to commit together or not at all: a crash at any
// instant leaves the topic, as a read_committed consumer sees it, with every record of committed
// pages and nothing of the others, and the checkpoint pointing exactly after the last committed
// page.
//
// Taking a shard over is fenced by Kafka itself: a new writer for the shard initialises its
// transactional id, which bumps the producer epoch and aborts the previous writer's open
// transaction; any later produce or commit of the previous writer fails. The new writer then
// commits a claim record to the checkpoint topic and reads the topic until it has read the claim's
// offset: every checkpoint of the shard committed before the takeover precedes the claim in the
// shard's partition of the topic (a shard's claims and checkpoints always go to one partition,
// chosen from the shard's name), so the writer has seen the last one, and resumes right after it.
//
// The topic has several partitions so that one transaction left open (a writer that died
// mid-commit holds back read_committed readers of its partition until the broker aborts it)
// delays only the claims of the shards in that partition. The partition count must never change:
// it is recorded in the topic when first used, and the producer refuses to start if it differs.
package publish

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
)

// Checkpoint is the committed position of one shard.
type Checkpoint struct {
	StreamARN string    `json:"stream_arn"`
	Shard     string    `json:"shard_id"`
	After     string    `json:"sequence_number"` // last sequence number published; "" = none yet
	End       bool      `json:"shard_end"`       // the shard is closed and every record was published
	Owner     string    `json:"owner"`
	At        time.Time `json:"at"`
	Plan      *Plan     `json:"snapshot_plan,omitempty"` // set on a snapshot's plan record
}

// Plan fixes a snapshot's parameters when it starts, so that every replica and every restart
// scans the same segments and labels rows with the same stream position.
type Plan struct {
	StreamARN string    `json:"stream_arn"` // the stream whose position was taken
	Position  string    `json:"position"`   // the sequence number snapshot rows carry
	Segments  int       `json:"segments"`
	StartedAt time.Time `json:"started_at"`
}

type claim struct {
	Nonce string `json:"nonce"`
	Owner string `json:"owner"`
}

// meta is the record that fixes the topic's partition count (key metaKey, partition 0).
type meta struct {
	Partitions int32 `json:"partitions"`
}

const metaKey = "meta/partitions"

// Drained records that a stream of a table has been read to its end (or is gone): its table's
// newer streams may be published. It is written once, by whichever replica sees it first.
type Drained struct {
	StreamARN string    `json:"stream_arn"`
	Table     string    `json:"table"`
	Newer     string    `json:"newer_stream_arn"` // the table's next stream
	Gone      bool      `json:"gone"`             // the stream had disappeared (aged out or deleted)
	Owner     string    `json:"owner"`
	At        time.Time `json:"at"`
}

func drainedKey(streamARN string) string { return "drained/" + streamARN }

func originKey(table string) string { return "origin/" + table }

func gapKey(streamARN string) string { return "gap-snapshot/" + streamARN }

// GapSnapshot names the snapshot a table takes before its stream StreamARN is published, because
// an older stream of the table came before it: the changes made while no stream was enabled are
// in neither, and the snapshot publishes the items' state instead.
type GapSnapshot struct {
	StreamARN string    `json:"stream_arn"`
	Table     string    `json:"table"`
	ID        string    `json:"snapshot_id"`
	Owner     string    `json:"owner"`
	At        time.Time `json:"at"`
}

// origin is when a table with start position latest was first captured.
type origin struct {
	Table string    `json:"table"`
	At    time.Time `json:"at"`
	Owner string    `json:"owner"`
}

// ErrPartitionsChanged is returned when the checkpoint topic's partition count differs from the
// one recorded when it was first used.
var ErrPartitionsChanged = errors.New("the checkpoint topic's partition count changed")

func checkpointKey(streamARN, shard string) string { return "cp/" + streamARN + "/" + shard }
func claimKey(streamARN, shard string) string      { return "claim/" + streamARN + "/" + shard }

// Partition is the checkpoint topic's partition holding a shard's claims and checkpoints.
func Partition(streamARN, shard string, partitions int32) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(streamARN + "/" + shard))
	return int32(h.Sum32() % uint32(partitions))
}

// partitioner places checkpoint-topic records in the partition their producer chose (Partition),
// and every other record by its key, as Kafka's default partitioner does.
type partitioner struct{ topic string }

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.topic {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic)
}

// EnsureCheckpointTopic creates the checkpoint topic when missing (compacted: only the newest
// record of each key matters) and returns its partition count.
func EnsureCheckpointTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, replication int16) (int32, error) {
	cleanup := "compact"
	resp, err := adm.CreateTopic(ctx, partitions, replication, map[string]*string{"cleanup.policy": &cleanup}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return 0, fmt.Errorf("creating checkpoint topic %s: %w", topic, err)
	}
	// A topic just created may take a moment to appear in the brokers' metadata.
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			td, ok := md.Topics[topic]
			switch {
			case ok && td.Err == nil && len(td.Partitions) > 0:
				return int32(len(td.Partitions)), nil
			case !ok:
				err = kerr.UnknownTopicOrPartition
			default:
				err = td.Err
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("reading the metadata of checkpoint topic %s: %w", topic, err)
		}
		if err := backoff.Sleep(ctx, b.Next()); err != nil {
			return 0, err
		}
	}
}

// Checkpoints follows the checkpoint topic (read_committed) and answers what the last committed
// checkpoint of a shard is.
type Checkpoints struct {
	cl         *kgo.Client // read_committed consumer
	prod       *kgo.Client // non-transactional: sync marks, tombstones, the partition count
	topic      string
	partitions int32
	owner      string
	log        *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever something was read
	cps     map[string]Checkpoint
	drained map[string]Drained     // by stream ARN
	origins map[string]origin      // by table: the first recorded
	gaps    map[string]GapSnapshot // by stream ARN: the first recorded
	read    map[int32]int64        // partition → highest offset read
	meta    *meta                  // the recorded partition count, once read
}

// NewCheckpoints returns a follower of topic, which has partitions partitions; run it with Run.
// owner names this replica in the records it writes.
func NewCheckpoints(opts []kgo.Opt, topic string, partitions int32, owner string, log *slog.Logger) (*Checkpoints, error) {
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating checkpoint consumer: %w", err)
	}
	prod, err := kgo.NewClient(append(opts, kgo.RecordPartitioner(partitioner{topic: topic}))...)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("creating checkpoint producer: %w", err)
	}
	return &Checkpoints{cl: cl, prod: prod, topic: topic, partitions: partitions, owner: owner, log: log,
		changed: make(chan struct{}), cps: map[string]Checkpoint{}, drained: map[string]Drained{}, origins: map[string]origin{}, gaps: map[string]GapSnapshot{}, read: map[int32]int64{}}, nil
}

// Partitions is the topic's partition count.
func (c *Checkpoints) Partitions() int32 { return c.partitions }

// Run follows the topic until ctx is done, then closes the clients.
func (c *Checkpoints) Run(ctx context.Context) error {
	defer c.cl.Close()
	defer c.prod.Close()
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			c.log.Warn("reading the checkpoint topic", "topic", t, "partition", p, "error", err)
		})
		c.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			c.read[r.Partition] = max(c.read[r.Partition], r.Offset)
			key := string(r.Key)
			switch {
			case strings.HasPrefix(key, "cp/") && r.Value == nil:
				delete(c.cps, key) // tombstone of a shard that aged out
			case strings.HasPrefix(key, "cp/"):
				var cp Checkpoint
				if err := json.Unmarshal(r.Value, &cp); err != nil {
					c.log.Error("ignoring a malformed checkpoint", "key", key, "partition", r.Partition, "offset", r.Offset, "error", err)
					return
				}
				c.cps[key] = cp
			case strings.HasPrefix(key, "drained/") && r.Value != nil:
				var d Drained
				if err := json.Unmarshal(r.Value, &d); err == nil {
					c.drained[d.StreamARN] = d
				}
			case strings.HasPrefix(key, "gap-snapshot/") && r.Value != nil:
				var g GapSnapshot
				if err := json.Unmarshal(r.Value, &g); err == nil {
					if _, ok := c.gaps[g.StreamARN]; !ok {
						c.gaps[g.StreamARN] = g // the first one recorded wins
					}
				}
			case strings.HasPrefix(key, "origin/") && r.Value != nil:
				var o origin
				if err := json.Unmarshal(r.Value, &o); err == nil {
					if _, ok := c.origins[o.Table]; !ok {
						c.origins[o.Table] = o // the first one recorded wins
					}
				}
			case key == metaKey && r.Value != nil:
				var m meta
				if err := json.Unmarshal(r.Value, &m); err == nil && c.meta == nil {
					c.meta = &m // the first one recorded wins
				}
			}
		})
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// Position is where a record landed in the checkpoint topic.
type Position struct {
	Partition int32
	Offset    int64
}

// WaitRead blocks until the record at pos has been read (or a later one of its partition), so
// that Get returns every checkpoint committed before it in that partition.
func (c *Checkpoints) WaitRead(ctx context.Context, pos Position) error {
	for {
		c.mu.Lock()
		off, ok := c.read[pos.Partition]
		seen, changed := ok && off >= pos.Offset, c.changed
		c.mu.Unlock()
		if seen {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting to read offset %d of partition %d of %s back: %w", pos.Offset, pos.Partition, c.topic, ctx.Err())
		case <-changed:
		}
	}
}

// Sync writes a mark to partition p and waits until it is read back: everything committed to p
// before the call has then been read.
func (c *Checkpoints) Sync(ctx context.Context, p int32) error {
	pos, err := c.produce(ctx, &kgo.Record{Key: []byte("sync/" + c.owner), Value: []byte(randomNonce()), Partition: p})
	if err != nil {
		return err
	}
	return c.WaitRead(ctx, pos)
}

// CheckPartitions reads the partition count recorded in the topic (recording it when none is) and
// fails when the topic has another count: partitions were added, which would move shards'
// checkpoints to other partitions and break the claim's ordering argument.
func (c *Checkpoints) CheckPartitions(ctx context.Context) error {
	if err := c.Sync(ctx, 0); err != nil {
		return err
	}
	c.mu.Lock()
	m := c.meta
	c.mu.Unlock()
	if m == nil {
		value, _ := json.Marshal(meta{Partitions: c.partitions})
		pos, err := c.produce(ctx, &kgo.Record{Key: []byte(metaKey), Value: value, Partition: 0})
		if err != nil {
			return err
		}
		if err := c.WaitRead(ctx, pos); err != nil {
			return err
		}
		c.mu.Lock()
		m = c.meta
		c.mu.Unlock()
	}
	if m.Partitions != c.partitions {
		return fmt.Errorf("%w: topic %s has %d partitions but was first used with %d; partitions must not be added to it "+
			"(shards' checkpoints would move to other partitions)", ErrPartitionsChanged, c.topic, c.partitions, m.Partitions)
	}
	return nil
}

// Forget deletes (tombstones) the checkpoint and claim of a shard that aged out of its stream, so
// that the compacted topic does not grow with every shard ever read.
func (c *Checkpoints) Forget(ctx context.Context, streamARN, shard string) error {
	p := Partition(streamARN, shard, c.partitions)
	for _, key := range []string{checkpointKey(streamARN, shard), claimKey(streamARN, shard)} {
		if _, err := c.produce(ctx, &kgo.Record{Key: []byte(key), Partition: p}); err != nil {
			return err
		}
	}
	return nil
}

// Drained reports whether a stream was recorded as read to its end.
func (c *Checkpoints) Drained(streamARN string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.drained[streamARN]
	return ok
}

// MarkDrained records that a stream was read to its end and waits until the record is read back.
func (c *Checkpoints) MarkDrained(ctx context.Context, d Drained) error {
	d.Owner, d.At = c.owner, time.Now().UTC()
	value, _ := json.Marshal(d)
	pos, err := c.produce(ctx, &kgo.Record{Key: []byte(drainedKey(d.StreamARN)), Value: value, Partition: Partition(d.StreamARN, "", c.partitions)})
	if err != nil {
		return err
	}
	return c.WaitRead(ctx, pos)
}

// SetOrigin returns when table was first captured with start position latest, recording at when
// no time is recorded yet. Of replicas racing to record one, the first record in the topic wins
// for all of them.
func (c *Checkpoints) SetOrigin(ctx context.Context, table string, at time.Time) (time.Time, error) {
	p := Partition(originKey(table), "", c.partitions)
	if err := c.Sync(ctx, p); err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	o, ok := c.origins[table]
	c.mu.Unlock()
	if ok {
		return o.At, nil
	}
	value, _ := json.Marshal(origin{Table: table, At: at.UTC(), Owner: c.owner})
	pos, err := c.produce(ctx, &kgo.Record{Key: []byte(originKey(table)), Value: value, Partition: p})
	if err != nil {
		return time.Time{}, err
	}
	if err := c.WaitRead(ctx, pos); err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.origins[table].At, nil
}

// GapSnapshots returns the gap snapshots recorded for a table, by stream ARN.
func (c *Checkpoints) GapSnapshots(table string) map[string]GapSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]GapSnapshot{}
	for arn, g := range c.gaps {
		if g.Table == table {
			out[arn] = g
		}
	}
	return out
}

// SetGapSnapshot records that g.ID is to be taken before g.StreamARN is published, unless one is
// recorded already, and returns the one recorded first.
func (c *Checkpoints) SetGapSnapshot(ctx context.Context, g GapSnapshot) (GapSnapshot, error) {
	p := Partition(gapKey(g.StreamARN), "", c.partitions)
	if err := c.Sync(ctx, p); err != nil {
		return GapSnapshot{}, err
	}
	c.mu.Lock()
	first, ok := c.gaps[g.StreamARN]
	c.mu.Unlock()
	if ok {
		return first, nil
	}
	g.Owner, g.At = c.owner, time.Now().UTC()
	value, _ := json.Marshal(g)
	pos, err := c.produce(ctx, &kgo.Record{Key: []byte(gapKey(g.StreamARN)), Value: value, Partition: p})
	if err != nil {
		return GapSnapshot{}, err
	}
	if err := c.WaitRead(ctx, pos); err != nil {
		return GapSnapshot{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gaps[g.StreamARN], nil
}

// Shards returns the shards of a stream that have a checkpoint.
func (c *Checkpoints) Shards(streamARN string) map[string]Checkpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]Checkpoint{}
	prefix := checkpointKey(streamARN, "")
	for k, cp := range c.cps {
		if strings.HasPrefix(k, prefix) {
			out[cp.Shard] = cp
		}
	}
	return out
}

func (c *Checkpoints) produce(ctx context.Context, r *kgo.Record) (Position, error) {
	r.Topic = c.topic
	res := c.prod.ProduceSync(ctx, r)
	if err := res.FirstErr(); err != nil {
		return Position{}, fmt.Errorf("writing %s to %s: %w", r.Key, c.topic, err)
	}
	return Position{Partition: res[0].Record.Partition, Offset: res[0].Record.Offset}, nil
}

func randomNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Get returns the last committed checkpoint of a shard read so far.
func (c *Checkpoints) Get(streamARN, shard string) (Checkpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp, ok := c.cps[checkpointKey(streamARN, shard)]
	return cp, ok
}
