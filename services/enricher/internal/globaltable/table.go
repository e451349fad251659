package globaltable

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/keys"
	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// Table is one global table: a topic of change events folded into key → newest item.
type Table struct {
	Name, Topic string

	store   *Store
	opts    []kgo.Opt
	adm     *kadm.Client
	dec     *serde.Decoder
	metrics *Metrics
	log     *slog.Logger

	restored chan struct{}
	once     sync.Once

	mu       sync.Mutex
	keyNames []string // the key attributes of the topic's records, once one was seen
}

// New returns the global table name over topic; run it with Run.
func New(name, topic string, store *Store, opts []kgo.Opt, adm *kadm.Client, dec *serde.Decoder, m *Metrics, log *slog.Logger) *Table {
	// The counters start at zero, so increase() sees their first event; the gauges are set as
	// soon as the restore begins (a zero would claim an empty or restored table meanwhile).
	m.applied.WithLabelValues(name)
	m.skipped.WithLabelValues(name)
	return &Table{Name: name, Topic: topic, store: store, opts: opts, adm: adm, dec: dec, metrics: m,
		log: log.With("global_table", name, "topic", topic), restored: make(chan struct{})}
}

// Restored is closed once the table holds everything its topic held when Run started.
func (t *Table) Restored() <-chan struct{} { return t.restored }

// KeyNames returns the sorted key attribute names of the topic's items (nil while none was seen).
func (t *Table) KeyNames() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keyNames
}

// Get returns the item stored under a join key.
func (t *Table) Get(key []byte) (map[string]types.AttributeValue, bool, error) {
	v, ok, err := t.store.get(itemKey(t.Name, key))
	if err != nil || !ok {
		return nil, false, err
	}
	item, err := ddbavro.ReadItem(v)
	if err != nil {
		return nil, false, fmt.Errorf("global table %s: stored item: %w", t.Name, err)
	}
	return item, true, nil
}

// Run restores the table and keeps it current until ctx is done. Failures of Kafka or the
// registry are retried; the table stays as it was meanwhile.
func (t *Table) Run(ctx context.Context) error {
	b := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		err := t.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		t.log.Warn("following the global table's topic failed; retrying", "error", err)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return nil
		}
	}
}

// follow reads from the stored offsets: first up to the end offsets of the moment (the
// restore), then on.
func (t *Table) follow(ctx context.Context) error {
	starts, ends, err := t.prepare(ctx)
	if err != nil {
		return err
	}
	parts := map[int32]kgo.Offset{}
	for p := range ends {
		parts[p] = kgo.NewOffset().At(starts[p])
	}
	cl, err := kgo.NewClient(append(t.opts[:len(t.opts):len(t.opts)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{t.Topic: parts}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), // a stored offset the topic no longer has
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // their offsets count: a topic written in transactions ends in one
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	pos := starts
	t.reportRestore(pos, ends)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("partition %d: %w", p, err) })
		if ferr != nil {
			return ferr
		}
		var recs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		if err := t.Apply(ctx, recs); err != nil {
			return err
		}
		for _, r := range recs {
			pos[r.Partition] = r.Offset + 1
		}
		t.reportRestore(pos, ends)
	}
}

// prepare checks the topic's id against the store's (clearing the table when the topic was
// created again) and returns the stored next offsets and the topic's current end offsets.
func (t *Table) prepare(ctx context.Context) (starts, ends map[int32]int64, err error) {
	details, err := t.adm.ListTopics(ctx, t.Topic)
	if err != nil {
		return nil, nil, err
	}
	d, ok := details[t.Topic]
	if !ok || d.Err != nil {
		return nil, nil, fmt.Errorf("topic %s is not readable (does it exist?): %v", t.Topic, d.Err)
	}
	id := d.ID.String()
	stored, _, err := t.store.get(metaKey(t.Name, "topic_id"))
	if err != nil {
		return nil, nil, err
	}
	if string(stored) != id {
		if len(stored) > 0 {
			t.log.Warn("the topic was deleted and created again since the store was written; reading it afresh")
		}
		if err := t.store.clear(t.Name); err != nil {
			return nil, nil, err
		}
		if err := t.store.db.Set(metaKey(t.Name, "topic_id"), []byte(id), pebble.Sync); err != nil {
			return nil, nil, err
		}
	}
	if names, ok, err := t.store.get(metaKey(t.Name, "key_names")); err != nil {
		return nil, nil, err
	} else if ok {
		t.setKeyNames(strings.Split(string(names), "\x00"))
	}
	endOffsets, err := t.adm.ListEndOffsets(ctx, t.Topic)
	if err != nil {
		return nil, nil, err
	}
	if err := endOffsets.Error(); err != nil {
		return nil, nil, err
	}
	ends = map[int32]int64{}
	endOffsets.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	if starts, err = t.store.offsets(t.Name); err != nil {
		return nil, nil, err
	}
	// A stored offset beyond the end: the topic was created again, and the metadata that said
	// otherwise was a cached answer. Start afresh.
	for p, o := range starts {
		if end, ok := ends[p]; !ok || o > end {
			t.log.Warn("the store is ahead of the topic (created again?); reading it afresh", "partition", p, "stored", o, "end", end)
			if err := t.store.clear(t.Name); err != nil {
				return nil, nil, err
			}
			if err := t.store.db.Set(metaKey(t.Name, "topic_id"), []byte(id), pebble.Sync); err != nil {
				return nil, nil, err
			}
			starts = map[int32]int64{}
			t.setKeyNames(nil)
			break
		}
	}
	for p := range ends {
		if _, ok := starts[p]; !ok {
			starts[p] = 0
		}
	}
	t.setCount()
	return starts, ends, nil
}

func (t *Table) setKeyNames(names []string) {
	t.mu.Lock()
	t.keyNames = names
	t.mu.Unlock()
}

// reportRestore publishes how much of the restore remains and marks the table restored once
// every partition reached the end it had when the restore began.
func (t *Table) reportRestore(pos, ends map[int32]int64) {
	select {
	case <-t.restored:
		return
	default:
	}
	var remaining int64
	for p, end := range ends {
		remaining += max(0, end-pos[p])
	}
	t.metrics.restoreRemaining.WithLabelValues(t.Name).Set(float64(remaining))
	if remaining == 0 {
		t.once.Do(func() {
			t.log.Info("global table restored", "entries", t.count())
			close(t.restored)
		})
	}
}

// Apply writes a fetch's changes and the partitions' next offsets in one atomic batch. Control
// records only move offsets. A record that cannot be decoded is skipped with an error log and a
// metric (every replica reads it, so a dead letter would be written once per replica); a
// registry outage fails the whole batch, which is then fetched again.
func (t *Table) Apply(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	b := t.store.db.NewIndexedBatch()
	defer b.Close()
	count := t.count()
	next := map[int32]int64{}
	for _, r := range recs {
		next[r.Partition] = r.Offset + 1
		if r.Attrs.IsControl() {
			continue
		}
		key, ev, err := t.decode(ctx, r)
		if serde.Transient(err) {
			return err
		}
		if err != nil {
			t.metrics.skipped.WithLabelValues(t.Name).Inc()
			t.log.Error("skipping a record the global table cannot read", "partition", r.Partition, "offset", r.Offset, "error", err)
			continue
		}
		jk, err := keys.Encode(key)
		if err != nil {
			t.metrics.skipped.WithLabelValues(t.Name).Inc()
			t.log.Error("skipping a record with an unusable key", "partition", r.Partition, "offset", r.Offset, "error", err)
			continue
		}
		if names := keys.Names(key); !slices.Equal(names, t.KeyNames()) {
			t.setKeyNames(names)
			if err := b.Set(metaKey(t.Name, "key_names"), []byte(strings.Join(names, "\x00")), nil); err != nil {
				return err
			}
		}
		ik := itemKey(t.Name, jk)
		_, existed, err := getIn(b, ik)
		if err != nil {
			return err
		}
		if ev == nil || ev.Op == "d" {
			if existed {
				count--
			}
			if err := b.Delete(ik, nil); err != nil {
				return err
			}
			continue
		}
		v, err := ddbavro.AppendItem(nil, ev.After)
		if err != nil {
			return err
		}
		if !existed {
			count++
		}
		if err := b.Set(ik, v, nil); err != nil {
			return err
		}
	}
	for p, o := range next {
		if err := b.Set(offsetKey(t.Name, p), binary.BigEndian.AppendUint64(nil, uint64(o)), nil); err != nil {
			return err
		}
	}
	if err := b.Set(metaKey(t.Name, "count"), []byte(strconv.FormatInt(count, 10)), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("writing the state store: %w", err)
	}
	t.metrics.entries.WithLabelValues(t.Name).Set(float64(count))
	t.metrics.applied.WithLabelValues(t.Name).Add(float64(len(recs)))
	t.metrics.diskBytes.Set(float64(t.store.DiskBytes()))
	return nil
}

// decode returns a record's key and event; a nil event is a tombstone (compaction's delete).
func (t *Table) decode(ctx context.Context, r *kgo.Record) (map[string]types.AttributeValue, *ddbavro.Event, error) {
	k, err := t.dec.DecodeKey(r.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	if r.Value == nil {
		return keys.FromRecordKey(k), nil, nil
	}
	ev, _, err := t.dec.Decode(ctx, r.Value)
	if err != nil {
		return nil, nil, err
	}
	return keys.FromRecordKey(k), ev, nil
}

func (t *Table) count() int64 {
	v, _, _ := t.store.get(metaKey(t.Name, "count"))
	n, _ := strconv.ParseInt(string(v), 10, 64)
	return n
}

func (t *Table) setCount() { t.metrics.entries.WithLabelValues(t.Name).Set(float64(t.count())) }

func getIn(b *pebble.Batch, key []byte) ([]byte, bool, error) {
	v, closer, err := b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return v, true, nil
}
