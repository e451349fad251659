package streamsfake

import (
	"container/heap"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// Sim configures a simulated stream (Account.NewStreamWithShards): how its shards roll over, and
// the items PutRandom writes. The zero value is a stream whose shards never close, written with
// 100,000 keys.
//
// Every open shard owns a range of key hashes, and a key's changes always go to the open shard
// owning its hash. A child inherits its parent's range, or half of it in a split, so the shards a
// key's changes go to over time form one lineage, parent before child: per-key order holds across
// rollovers as it does in AWS, and a reader that reads parents before children sees each key's
// changes in order.
type Sim struct {
	// Lifetime is how long a shard stays open before Roll closes it and opens its child (AWS:
	// about four hours; compress it to seconds for a simulation). 0: shards never roll over.
	Lifetime time.Duration
	// Jitter spreads each child's lifetime uniformly over [Lifetime-Jitter, Lifetime+Jitter], so
	// that shards born together do not close together. The initial shards' first closes are spread
	// uniformly over (0, Lifetime], as if they had opened at random times before.
	Jitter time.Duration
	// SplitChance is the probability that a closing shard has two children, each owning half of
	// its keys, rather than one.
	SplitChance float64
	// MaxOpen stops splits while this many shards are open, so the number of open shards stays
	// between the initial n and MaxOpen. Default: n + n/10, at least n+1.
	MaxOpen int
	// Keys is the number of distinct items PutRandom writes to. Default: 100,000.
	Keys int
	// RemoveChance is the probability that a change to an existing item deletes it (REMOVE);
	// otherwise it is a MODIFY. A change to an absent item is an INSERT.
	RemoveChance float64
	// ItemBytes adds a string attribute "pad" of this many bytes to every image.
	ItemBytes int
	// Seed seeds every random choice: the same seed and the same calls give the same stream.
	Seed uint64
}

// Operations of generated records.
const (
	opInsert uint8 = iota + 1
	opModify
	opRemove
)

// live marks a key whose item exists, in sim.versions.
const live = 1 << 31

// sim is the simulation state of a stream, guarded by the stream's mutex.
type sim struct {
	cfg      Sim
	rng      *rand.Rand
	owners   []*shard // open shards owning key ranges, ascending and disjoint ranges
	due      dueHeap  // open shards by closeAt (closed ones are skipped when popped)
	versions []uint32 // per key: its last version, | live while the item exists
	salt     uint64   // mixed into key hashes
	tag      uint32   // the stream's part of its shard ids
	ids      int64    // shard ids made
	pad      types.AttributeValue
}

func newSim(arn string, n int, cfg Sim) *sim {
	if cfg.Keys <= 0 {
		cfg.Keys = 100_000
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = n + max(1, n/10)
	}
	h := fnv.New64a()
	h.Write([]byte(arn))
	sum := h.Sum64()
	m := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, sum)), versions: make([]uint32, cfg.Keys), salt: sum, tag: uint32(sum)}
	if cfg.ItemBytes > 0 {
		m.pad = &types.AttributeValueMemberS{Value: strings.Repeat("x", cfg.ItemBytes)}
	}
	return m
}

// newID returns a fresh shard id shaped like AWS's ("shardId-<20 digits>-<8 hex>"). Ids sort in
// creation order, as AWS's do.
func (m *sim) newID() string {
	m.ids++
	return fmt.Sprintf("shardId-%020d-%08x", m.ids, m.tag)
}

// own makes shards, just opened, the owners of [lo, hi], split in equal consecutive parts, and
// schedules their closes. first marks the stream's initial shards, whose closes are spread over
// (0, Lifetime].
func (m *sim) own(shards []*shard, lo, hi uint64, now time.Time, first bool) {
	k := uint64(len(shards))
	step := (hi - lo) / k
	for i, sh := range shards {
		sh.owner = true
		sh.lo = lo + uint64(i)*step
		sh.hi = sh.lo + step - 1
		if i == len(shards)-1 {
			sh.hi = hi
		}
		if m.cfg.Lifetime > 0 {
			if first {
				sh.closeAt = now.Add(time.Duration(m.rng.Int64N(int64(m.cfg.Lifetime))) + 1)
			} else {
				sh.closeAt = now.Add(m.lifetime())
			}
			heap.Push(&m.due, sh)
		}
	}
	at := sort.Search(len(m.owners), func(i int) bool { return m.owners[i].lo >= lo })
	m.owners = slices.Insert(m.owners, at, shards...)
}

// lifetime draws a shard's lifetime: Lifetime ± Jitter, and never less than a tenth of Lifetime.
func (m *sim) lifetime() time.Duration {
	d := m.cfg.Lifetime
	if j := m.cfg.Jitter; j > 0 {
		d += time.Duration(m.rng.Int64N(2*int64(j)+1)) - j
	}
	return max(d, m.cfg.Lifetime/10, 1)
}

// disown removes sh from the owners: it closed or was removed.
func (m *sim) disown(sh *shard) {
	i := sort.Search(len(m.owners), func(i int) bool { return m.owners[i].lo >= sh.lo })
	if i < len(m.owners) && m.owners[i] == sh {
		m.owners = slices.Delete(m.owners, i, i+1)
	}
	sh.owner = false
}

// owner returns the open shard owning key k, or nil if none does (a shard owning it was closed
// without children by Close).
func (m *sim) owner(k uint32) *shard {
	p := splitmix64(uint64(k) ^ m.salt)
	i := sort.Search(len(m.owners), func(i int) bool { return m.owners[i].hi >= p })
	if i < len(m.owners) && m.owners[i].lo <= p {
		return m.owners[i]
	}
	return nil
}

// splitmix64 is SplitMix64's finalizer: it spreads consecutive key numbers over the hash space.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// record builds the stream record of a generated entry, as AWS delivers it for a table with key
// "pk" and view type NEW_AND_OLD_IMAGES. Items are {"pk": "k<key>", "v": <version>} (and "pad").
func (m *sim) record(e *entry) types.Record {
	seq := seqString(e.seq)
	pk := &types.AttributeValueMemberS{Value: "k" + strconv.FormatUint(uint64(e.key), 10)}
	at := time.Unix(0, e.at).UTC().Truncate(time.Millisecond)
	sr := &types.StreamRecord{
		Keys:           map[string]types.AttributeValue{"pk": pk},
		SequenceNumber: &seq, ApproximateCreationDateTime: &at,
		StreamViewType: types.StreamViewTypeNewAndOldImages,
	}
	r := types.Record{
		EventID: aws.String("ev-" + seq), EventSource: aws.String("aws:dynamodb"), EventVersion: aws.String("1.1"),
		AwsRegion: aws.String("us-east-1"), Dynamodb: sr,
	}
	switch e.op {
	case opInsert:
		r.EventName = types.OperationTypeInsert
		sr.NewImage = m.image(pk, e.ver)
	case opModify:
		r.EventName = types.OperationTypeModify
		sr.OldImage, sr.NewImage = m.image(pk, e.ver-1), m.image(pk, e.ver)
	case opRemove:
		r.EventName = types.OperationTypeRemove
		sr.OldImage = m.image(pk, e.ver-1)
	}
	size := int64(2 + len(pk.Value))
	for _, img := range []map[string]types.AttributeValue{sr.OldImage, sr.NewImage} {
		if img != nil {
			size += int64(2+len(pk.Value)+1+10) + int64(3+m.cfg.ItemBytes)
		}
	}
	sr.SizeBytes = &size
	return r
}

func (m *sim) image(pk types.AttributeValue, ver uint32) map[string]types.AttributeValue {
	img := map[string]types.AttributeValue{"pk": pk, "v": &types.AttributeValueMemberN{Value: strconv.FormatUint(uint64(ver), 10)}}
	if m.pad != nil {
		img["pad"] = m.pad
	}
	return img
}

// dueHeap orders open shards by when Roll closes them.
type dueHeap []*shard

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].closeAt.Before(h[j].closeAt) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(*shard)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// Roll closes every open shard whose lifetime ended at or before now and opens its child (two,
// a split, with probability Sim.SplitChance while fewer than Sim.MaxOpen shards are open), born
// at now and owning its keys. Then it applies the retention (Expire). It returns how many shards
// it closed and opened. Call it from the simulation's loop, or let Drive do it. A stream not made
// by NewStreamWithShards, or disabled, only expires.
func (s *Stream) Roll(now time.Time) (closed, opened int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.sim; m != nil && !s.gone && s.status == types.StreamStatusEnabled {
		for len(m.due) > 0 && !m.due[0].closeAt.After(now) {
			sh := heap.Pop(&m.due).(*shard)
			if sh.closed || !sh.owner {
				continue // closed by Split or Close meanwhile
			}
			ids := []string{m.newID()}
			if m.cfg.SplitChance > 0 && len(m.owners) < m.cfg.MaxOpen && sh.hi-sh.lo >= 2 && m.rng.Float64() < m.cfg.SplitChance {
				ids = append(ids, m.newID())
			}
			s.replace(sh, now, ids...)
			closed++
			opened += len(ids)
		}
	}
	s.expire(now)
	return closed, opened
}

// Expire applies the account's retention (Options.Retention) at now: records written longer ago
// are trimmed, closed shards closed longer ago leave the listing, and a stream disabled longer
// ago is gone. Without a retention it does nothing.
func (s *Stream) Expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
}

func (s *Stream) expire(now time.Time) {
	r := s.env.retention
	if r <= 0 || s.gone {
		return
	}
	cutoff := now.Add(-r)
	if s.status == types.StreamStatusDisabled && !s.disabledAt.After(cutoff) {
		s.gone = true
		s.shards, s.byID, s.sim = nil, map[string]*shard{}, nil
		return
	}
	s.removeShards(func(sh *shard) bool { return sh.closed && !sh.closedAt.After(cutoff) })
	c := cutoff.UnixNano()
	for _, sh := range s.shards {
		sh.trim(sort.Search(len(sh.entries), func(i int) bool { return sh.entries[i].at > c }))
	}
}

// PutRandom writes n changes to random items of a stream made by NewStreamWithShards, each to the
// open shard owning its key, stamped with the account clock's time, and returns how many it
// wrote (fewer when keys fall in a range Close left without owner; none once the stream is
// disabled or gone). It panics on a stream made otherwise. An item's changes are numbered: INSERT version 1, then each MODIFY or REMOVE
// one more, and an INSERT after a REMOVE one more again, so a reader can check per-key order.
func (s *Stream) PutRandom(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.sim
	if m == nil {
		if s.gone {
			return 0
		}
		panic("streamsfake: PutRandom on a stream not made by NewStreamWithShards")
	}
	at := s.env.now().UnixNano()
	written := 0
	for range n {
		k := uint32(m.rng.IntN(len(m.versions)))
		sh := m.owner(k)
		if sh == nil {
			continue
		}
		v := m.versions[k]
		ver, exists := v&^live+1, v&live != 0
		op := opModify
		switch {
		case !exists:
			op, exists = opInsert, true
		case m.cfg.RemoveChance > 0 && m.rng.Float64() < m.cfg.RemoveChance:
			op, exists = opRemove, false
		}
		m.versions[k] = ver
		if exists {
			m.versions[k] |= live
		}
		s.seq++
		sh.entries = append(sh.entries, entry{seq: s.seq, at: at, key: k, ver: ver, op: op})
		written++
	}
	return written
}

// Drive runs the simulation of s until ctx is done: every tick of the real clock it calls Roll at
// the account clock's time and writes, with PutRandom, perSecond records per second of the account
// clock elapsed since the last tick (carrying fractions over). With an injected clock, the clock
// sets the pace; the ticker only sets how often the work is done.
func (s *Stream) Drive(ctx context.Context, every time.Duration, perSecond float64) {
	t := time.NewTicker(every)
	defer t.Stop()
	d := driver{s: s, perSecond: perSecond, last: s.env.now()}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.step(s.env.now())
		}
	}
}

// driver is Drive's state between ticks.
type driver struct {
	s         *Stream
	perSecond float64
	last      time.Time // the clock at the last step
	owed      float64   // records due and not yet written (a fraction of one)
}

// step rolls the stream over at now and writes the records due since the last step; it returns
// how many it wrote.
func (d *driver) step(now time.Time) int {
	d.s.Roll(now)
	d.owed += d.perSecond * max(0, now.Sub(d.last).Seconds())
	d.last = now
	n := int(math.Min(d.owed+1e-9, math.MaxInt32)) // 1e-9: 0.1+0.2 is still 0.3 records
	d.owed = max(0, d.owed-float64(n))
	return d.s.PutRandom(n)
}
