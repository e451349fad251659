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
// commits a claim record (a random nonce) to the checkpoint topic and reads the topic until it sees
// its own claim: every checkpoint committed before the takeover precedes the claim in the one
// partition of the topic, so the writer has seen the last one, and resumes right after it.
package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
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

func checkpointKey(streamARN, shard string) string { return "cp/" + streamARN + "/" + shard }
func claimKey(streamARN, shard string) string      { return "claim/" + streamARN + "/" + shard }

// EnsureCheckpointTopic creates the checkpoint topic when missing: one partition (claims and
// checkpoints must be totally ordered), compacted (only the newest record of each key matters).
func EnsureCheckpointTopic(ctx context.Context, adm *kadm.Client, topic string, replication int16) error {
	cleanup := "compact"
	resp, err := adm.CreateTopic(ctx, 1, replication, map[string]*string{"cleanup.policy": &cleanup}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating checkpoint topic %s: %w", topic, err)
	}
	return nil
}

// Checkpoints follows the checkpoint topic (read_committed) and answers what the last committed
// checkpoint of a shard is.
type Checkpoints struct {
	cl    *kgo.Client
	topic string
	log   *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the maps change
	cps     map[string]Checkpoint
	claims  map[string]string // key → newest committed nonce
}

// NewCheckpoints returns a follower of topic; run it with Run.
func NewCheckpoints(opts []kgo.Opt, topic string, log *slog.Logger) (*Checkpoints, error) {
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating checkpoint consumer: %w", err)
	}
	return &Checkpoints{cl: cl, topic: topic, log: log, changed: make(chan struct{}),
		cps: map[string]Checkpoint{}, claims: map[string]string{}}, nil
}

// Run follows the topic until ctx is done, then closes the consumer.
func (c *Checkpoints) Run(ctx context.Context) error {
	defer c.cl.Close()
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
			key := string(r.Key)
			switch {
			case len(key) > 3 && key[:3] == "cp/":
				var cp Checkpoint
				if err := json.Unmarshal(r.Value, &cp); err != nil {
					c.log.Error("ignoring a malformed checkpoint", "key", key, "offset", r.Offset, "error", err)
					return
				}
				c.cps[key] = cp
			case len(key) > 6 && key[:6] == "claim/":
				var cl claim
				if err := json.Unmarshal(r.Value, &cl); err == nil {
					c.claims[key] = cl.Nonce
				}
			}
		})
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// WaitClaim blocks until the claim with nonce of shard has been read from the topic, so that Get
// then returns the last checkpoint committed before it.
func (c *Checkpoints) WaitClaim(ctx context.Context, streamARN, shard, nonce string) error {
	key := claimKey(streamARN, shard)
	for {
		c.mu.Lock()
		seen, changed := c.claims[key] == nonce, c.changed
		c.mu.Unlock()
		if seen {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the claim of shard %s to be read back: %w", shard, ctx.Err())
		case <-changed:
		}
	}
}

// Get returns the last committed checkpoint of a shard read so far.
func (c *Checkpoints) Get(streamARN, shard string) (Checkpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp, ok := c.cps[checkpointKey(streamARN, shard)]
	return cp, ok
}
