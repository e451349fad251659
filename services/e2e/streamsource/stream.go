// Package streamsource is a DynamoDB Streams endpoint that serves generated change records at a
// production rate, for benchmarking the real producer binary without a real DynamoDB table.
//
// DynamoDB Local writes a few hundred items per second on these machines, so it cannot feed the
// pipeline at the rates users run (thousands of writes per second per table). A Source speaks the
// Streams API the producer calls (ListStreams, DescribeStream with paging and the CHILD_SHARDS
// filter, GetShardIterator, GetRecords) in its JSON wire format, answers DescribeTable for its own
// tables, and forwards every other DynamoDB call (the producer's lease table) to an upstream
// endpoint, DynamoDB Local. The producer points at it with its dynamodb.endpoint alone.
//
// Records are not stored: record j of a shard is a pure function of the shard and j, rendered when
// a GetRecords call asks for it, so a backlog of millions of records costs nothing until it is
// read. Each shard becomes available at a fixed rate from the moment Begin is called; a record is
// readable once its creation time has passed, and that time is also in the item (written_ms), so
// a reader of the Delta table can measure latency from the write.
//
// Items live in key spaces ("lineages"): a shard that rolls over hands its key space to its one
// child, which continues the same items (updates with old images, deletes, re-inserts); a shard
// that splits gives each of its two children a new key space at half its rate.
package streamsource

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Config shapes a Source. Zero fields take the defaults given.
type Config struct {
	// Tables are the table names served; each has one stream. Required.
	Tables []string
	// Rate is the change records per second of each table, shared between its open shards.
	// Required.
	Rate float64
	// Shards open at the start, per table. Default: the rate over 1,000 (a DynamoDB partition
	// takes about 1,000 writes per second), at least 2.
	Shards int
	// Duration after Begin during which records are generated; 0 generates until Close.
	Duration time.Duration
	// ShardLife is how long a shard stays open before it rolls over or splits (±25 %, so the
	// shards do not all close at once); 0 keeps every shard open. DynamoDB rolls shards about
	// every four hours.
	ShardLife time.Duration
	// SplitEvery makes every n-th closing shard split into two children instead of rolling over
	// to one; 0 never splits.
	SplitEvery int
	// Keys is the number of items of each key space. Default: 10,000.
	Keys int
	// DeleteEvery makes every n-th version of an item a REMOVE (the next one inserts it again); 0
	// never deletes. Default: 10.
	DeleteEvery int
	// NoteBytes is the length of the filler string attribute that brings an item image to about
	// 500 bytes. Default: 160.
	NoteBytes int
	// GetRecordsPerShard bounds GetRecords calls per shard per second, as DynamoDB Streams does
	// (LimitExceededException beyond it). Default: 5; negative means no limit.
	GetRecordsPerShard int
	// DescribeStreamPerSecond bounds DescribeStream calls per second for the whole source (the
	// account limit). Default: 10; negative means no limit.
	DescribeStreamPerSecond int
	// Region and Account form the ARNs. Defaults: us-east-1, 000000000000.
	Region, Account string
}

func (c *Config) defaults() error {
	if len(c.Tables) == 0 {
		return fmt.Errorf("streamsource: no tables")
	}
	if !(c.Rate > 0) {
		return fmt.Errorf("streamsource: rate must be > 0, got %v", c.Rate)
	}
	if c.Shards <= 0 {
		c.Shards = max(2, int(math.Ceil(c.Rate/1000)))
	}
	if c.Keys <= 0 {
		c.Keys = 10000
	}
	if c.DeleteEvery == 0 {
		c.DeleteEvery = 10
	}
	if c.NoteBytes <= 0 {
		c.NoteBytes = 160
	}
	if c.GetRecordsPerShard == 0 {
		c.GetRecordsPerShard = 5
	}
	if c.DescribeStreamPerSecond == 0 {
		c.DescribeStreamPerSecond = 10
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.Account == "" {
		c.Account = "000000000000"
	}
	if c.ShardLife > 0 && c.ShardLife.Seconds()*c.Rate/float64(c.Shards) < 2 {
		return fmt.Errorf("streamsource: a shard living %s at %.1f records/s would close nearly empty", c.ShardLife, c.Rate/float64(c.Shards))
	}
	return nil
}

// lineage is a key space: the items one shard and its rolled-over successors change.
type lineage struct {
	id   int
	name string // prefix of its items' ids
	keys int
	step int // coprime with keys: slot → item permutation, so updates hop between items
}

// shard is one shard of a stream. Its records are at times born + j/rate (seconds since Begin),
// lineage indexes start + j.
type shard struct {
	id, parent string
	ordinal    int
	lin        *lineage
	born, rate float64
	start      uint64
	// end is when it closes (seconds since Begin), +Inf while open; total its record count once
	// closed.
	end   float64
	total uint64
	// closed shards have their children made.
	children []*shard

	calls []time.Time // GetRecords calls in the last second, for the limit
	read  uint64      // highest record index a GetRecords call returned up to (exclusive)
}

// stream is one table's stream.
type stream struct {
	table, arn, label string
	created           time.Time
	shards            []*shard // in creation order
	byID              map[string]*shard
	lineages          int
}

// Source serves generated change records for its tables' streams. Create with New, serve with
// Handler, start generating with Begin.
type Source struct {
	cfg Config

	mu       sync.Mutex
	epoch    time.Time // Begin's time; zero before Begin (nothing is available)
	streams  []*stream
	byARN    map[string]*stream
	byTable  map[string]*stream
	ordinal  int
	describe []time.Time
	stats    Stats
}

// Stats counts what the source served.
type Stats struct {
	GetRecords, DescribeStream, GetShardIterator, ListStreams, DescribeTable, Forwarded int64
	// Throttled calls were refused with LimitExceededException.
	Throttled int64
	// Records returned by GetRecords (a record returned twice counts twice).
	Records int64
}

// New makes a Source; nothing is generated until Begin.
func New(cfg Config) (*Source, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, byARN: map[string]*stream{}, byTable: map[string]*stream{}}
	now := time.Now().UTC()
	for _, t := range cfg.Tables {
		label := now.Format("2006-01-02T15:04:05.000")
		st := &stream{table: t, label: label, created: now, byID: map[string]*shard{},
			arn: fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s/stream/%s", cfg.Region, cfg.Account, t, label)}
		for range cfg.Shards {
			s.addShard(st, "", s.newLineage(st), 0, cfg.Rate/float64(cfg.Shards), 0)
		}
		s.streams = append(s.streams, st)
		s.byARN[st.arn] = st
		s.byTable[t] = st
	}
	return s, nil
}

// Begin starts generating: records become available from now on, at the configured rate.
func (s *Source) Begin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch.IsZero() {
		s.epoch = time.Now()
	}
}

// Started is when Begin was called (zero before).
func (s *Source) Started() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// StreamARN is the ARN of a served table's stream ("" when the table is not served).
func (s *Source) StreamARN(table string) string {
	if st := s.byTable[table]; st != nil {
		return st.arn
	}
	return ""
}

func (s *Source) newLineage(st *stream) *lineage {
	st.lineages++
	l := &lineage{id: st.lineages, name: fmt.Sprintf("k%d", st.lineages), keys: s.cfg.Keys, step: 1}
	// A step coprime with keys permutes the slots; starting near the golden ratio of keys spreads
	// consecutive records over the key space.
	for step := max(1, int(float64(l.keys)*0.618)); step < 4*l.keys+7; step++ {
		if gcd(step, l.keys) == 1 {
			l.step = step
			break
		}
	}
	return l
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// addShard makes a shard born at born (seconds since Begin); its end follows from the shard life
// with a deterministic ±25 % jitter.
func (s *Source) addShard(st *stream, parent string, lin *lineage, born, rate float64, start uint64) *shard {
	s.ordinal++
	sh := &shard{ordinal: s.ordinal, parent: parent, lin: lin, born: born, rate: rate, start: start, end: math.Inf(1)}
	sh.id = fmt.Sprintf("shardId-%020d-%08x", st.created.UnixMilli()+int64(born*1000), uint32(s.ordinal)*2654435761)
	if life := s.cfg.ShardLife.Seconds(); life > 0 {
		jitter := 0.75 + 0.5*math.Mod(float64(s.ordinal)*0.6180339887, 1)
		end := born + life*jitter
		if s.cfg.Duration <= 0 || end <= s.cfg.Duration.Seconds() {
			sh.end = end
			// Records j with born + j/rate < end.
			sh.total = uint64(math.Ceil((end - born) * rate))
		}
	}
	st.shards = append(st.shards, sh)
	st.byID[sh.id] = sh
	return sh
}

// now is the time since Begin in seconds; negative before Begin.
func (s *Source) now() float64 {
	if s.epoch.IsZero() {
		return -1
	}
	return time.Since(s.epoch).Seconds()
}

// advance closes the shards whose end has passed and makes their children. Called with mu held.
func (s *Source) advance(st *stream, now float64) {
	for i := 0; i < len(st.shards); i++ { // grows as children are added
		sh := st.shards[i]
		if sh.end > now || sh.children != nil {
			continue
		}
		if s.cfg.SplitEvery > 0 && sh.ordinal%s.cfg.SplitEvery == 0 {
			for range 2 {
				sh.children = append(sh.children, s.addShard(st, sh.id, s.newLineage(st), sh.end, sh.rate/2, 0))
			}
		} else {
			sh.children = append(sh.children, s.addShard(st, sh.id, sh.lin, sh.end, sh.rate, sh.start+sh.total))
		}
	}
}

// available is the number of the shard's records created by now.
func (s *Source) available(sh *shard, now float64) uint64 {
	limit := now
	if d := s.cfg.Duration.Seconds(); d > 0 && d < limit {
		limit = d
	}
	if limit < sh.born {
		return 0
	}
	n := uint64(math.Floor((limit-sh.born)*sh.rate)) + 1
	if !math.IsInf(sh.end, 1) && n > sh.total {
		n = sh.total
	}
	return n
}

// createdAt is when record j of the shard was written.
func (s *Source) createdAt(sh *shard, j uint64) time.Time {
	return s.epoch.Add(time.Duration((sh.born + float64(j)/sh.rate) * float64(time.Second)))
}

// Progress is the generation's state at one moment.
type Progress struct {
	// Generated records so far, and Read: records returned at least once (each shard's highest
	// position read). Generated - Read is the backlog the producer has not read yet.
	Generated, Read uint64
	// Final is the number of records the whole run generates (0 when Duration is 0), and Done
	// whether the generation is over.
	Final      uint64
	Done       bool
	OpenShards int
	Shards     int
	Stats      Stats
}

// Progress reports the records generated and read so far.
func (s *Source) Progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	p := Progress{Stats: s.stats}
	d := s.cfg.Duration.Seconds()
	for _, st := range s.streams {
		s.advance(st, now)
		for _, sh := range st.shards {
			p.Generated += s.available(sh, now)
			p.Read += sh.read
			p.Shards++
			if sh.children == nil {
				p.OpenShards++
			}
			if d > 0 {
				p.Final += s.available(sh, d)
			}
		}
	}
	p.Done = d > 0 && now >= d
	if !p.Done {
		p.Final = 0
	}
	return p
}
