// Package streamsfake is an in-process DynamoDB Streams for tests: shards that split and close,
// iterators that expire, records that are trimmed, calls that are throttled. DynamoDB Local has one
// long-lived shard per table and does none of these.
//
// A Stream made by New stands alone and has no limits. An Account holds many streams (several
// tables, and several streams per table once a table's stream is disabled and enabled again),
// implements the API by dispatching on the stream ARN, enforces AWS's request Limits on an
// injectable clock, and counts calls (Stats). Streams made by Account.NewStreamWithShards also
// simulate a busy table at scale: shards that roll over after a lifetime (Roll), and writes spread
// over them by key (PutRandom, Drive).
package streamsfake

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go"
)

// Stream is one fake stream. It implements the producer's streams.API. Its methods are safe for
// concurrent use.
type Stream struct {
	ARN   string
	Table string
	// PageShardsBy makes DescribeStream return at most this many shards per page, below the API's
	// own Limit (default and maximum 100). 0: the API's page size only.
	PageShardsBy int

	env     *env
	label   string
	created time.Time // zero for a stream made by New

	mu         sync.Mutex
	shards     []*shard          // listed shards, in creation order (ascending ord)
	byID       map[string]*shard // listed shards by id
	born       map[string]time.Time
	ord        int64  // shards created so far
	seq        uint64 // last sequence number handed out (or reserved), across shards
	gen        int    // bumped by ExpireIterators
	throttle   int    // the next calls to fail with LimitExceededException
	gone       bool
	calls      int
	status     types.StreamStatus
	disabledAt time.Time
	sim        *sim // nil unless made by Account.NewStreamWithShards
}

type shard struct {
	id, parent string
	ord        int64     // creation order in the stream
	start, end uint64    // sequence number range; end is set when the shard closes
	closed     bool      // no more records: the shard has an ending sequence number
	closedAt   time.Time // when it closed, for retention
	entries    []entry   // records still retained, oldest first
	base       int       // position of entries[0]: the records before it were trimmed

	// Simulation (see sim.go): the hash range [lo, hi] of keys the shard owns while it is open,
	// and when Roll closes it.
	lo, hi  uint64
	owner   bool
	closeAt time.Time

	reads    window // GetRecords admitted in the last second
	inflight int    // GetRecords admitted and not yet answered
}

// entry is one record of a shard. Records given to Put are kept as they are; records PutRandom
// writes are kept as a few numbers and built when read, so that a large simulation stays cheap.
type entry struct {
	seq uint64
	at  int64         // when it was written, in Unix nanoseconds, for retention
	rec *types.Record // a record given to Put; nil for a generated one
	key uint32        // generated: the item's key number
	ver uint32        // generated: the item's version after the change
	op  uint8         // generated: opInsert, opModify or opRemove
}

// New returns a stream for table with one open shard, "shard-0000". It stands alone: no limits,
// the real clock, no latency, no retention.
func New(table string) *Stream {
	s := newStream(table, "fake", time.Time{}, newEnv(Options{}))
	s.addShard("shard-0000", "", s.env.now())
	return s
}

func newStream(table, label string, created time.Time, e *env) *Stream {
	return &Stream{
		ARN: "arn:aws:dynamodb:us-east-1:000000000000:table/" + table + "/stream/" + label, Table: table,
		env: e, label: label, created: created, status: types.StreamStatusEnabled,
		byID: map[string]*shard{}, born: map[string]time.Time{},
	}
}

// addShard opens a shard whose first sequence number will be the next one handed out. s.mu held
// (or s not yet shared).
func (s *Stream) addShard(id, parent string, now time.Time) *shard {
	if _, dup := s.byID[id]; dup {
		panic(fmt.Sprintf("streamsfake: shard %s already exists", id))
	}
	s.ord++
	sh := &shard{id: id, parent: parent, ord: s.ord, start: s.seq + 1, reads: window{n: s.env.limits.GetRecordsPerSecond}}
	s.shards = append(s.shards, sh)
	s.byID[id] = sh
	s.born[id] = now
	return sh
}

// closeShard gives sh its ending sequence number: the last one handed out in the stream, so
// every record of sh is at or before it and every later record after it. A shard closed before
// any record was written since it opened reserves its starting number, so that its range is not
// empty and its children start after it. s.mu held.
func (s *Stream) closeShard(sh *shard, now time.Time) {
	if sh.closed {
		return
	}
	s.seq = max(s.seq, sh.start)
	sh.closed, sh.end, sh.closedAt = true, s.seq, now
	if sh.owner {
		s.sim.disown(sh)
	}
}

// mustFind returns the listed shard id, or panics: the test misused the fake.
func (s *Stream) mustFind(id string) *shard {
	sh := s.byID[id]
	if sh == nil {
		panic(fmt.Sprintf("streamsfake: no shard %s in stream %s", id, s.ARN))
	}
	return sh
}

// Put appends records to an open shard, numbering them with increasing sequence numbers, and
// returns the numbers. Each record's Dynamodb section is copied before it is numbered, so the
// caller's records are not modified.
func (s *Stream) Put(shardID string, recs ...types.Record) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.byID[shardID]
	if sh == nil || sh.closed {
		panic(fmt.Sprintf("streamsfake: put to missing or closed shard %s", shardID))
	}
	at := s.env.now().UnixNano()
	seqs := make([]string, 0, len(recs))
	for _, r := range recs {
		s.seq++
		seq := seqString(s.seq)
		sr := types.StreamRecord{}
		if r.Dynamodb != nil {
			sr = *r.Dynamodb
		}
		sr.SequenceNumber = aws.String(seq)
		r.Dynamodb = &sr
		if r.EventID == nil {
			r.EventID = aws.String("ev-" + seq)
		}
		sh.entries = append(sh.entries, entry{seq: s.seq, at: at, rec: &r})
		seqs = append(seqs, seq)
	}
	return seqs
}

// Split closes parent and opens two children of it. If parent owned a range of keys (see
// Account.NewStreamWithShards), childA owns its lower half and childB its upper half.
func (s *Stream) Split(parent, childA, childB string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustFind(parent)
	s.replace(p, s.env.now(), childA, childB)
}

// replace closes parent and opens children of it (one or two), handing down parent's key range.
// s.mu held.
func (s *Stream) replace(parent *shard, now time.Time, children ...string) []*shard {
	owned, lo, hi := parent.owner, parent.lo, parent.hi
	s.closeShard(parent, now)
	out := make([]*shard, len(children))
	for i, id := range children {
		out[i] = s.addShard(id, parent.id, now)
	}
	if owned && s.sim != nil {
		s.sim.own(out, lo, hi, now, false)
	}
	return out
}

// Close closes a shard without children (the stream is being disabled).
func (s *Stream) Close(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeShard(s.mustFind(id), s.env.now())
}

// Disable disables the stream, as UpdateTable with StreamEnabled false does: DescribeStream reports
// StreamStatus DISABLED, every open shard is closed (it gets an EndingSequenceNumber) and no child
// replaces it. The records stay readable until they age out (Options.Retention); once the
// retention has passed since Disable, the stream is gone. Disabling a disabled stream does nothing.
func (s *Stream) Disable() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == types.StreamStatusDisabled || s.gone {
		return
	}
	now := s.env.now()
	s.status, s.disabledAt = types.StreamStatusDisabled, now
	for _, sh := range s.shards {
		s.closeShard(sh, now)
	}
}

// Status returns the stream's status: ENABLED, or DISABLED after Disable.
func (s *Stream) Status() types.StreamStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Trim drops the n oldest records of a shard, as the 24-hour retention does.
func (s *Stream) Trim(id string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustFind(id).trim(n)
}

// trim drops the n oldest entries and lets their memory go.
func (sh *shard) trim(n int) {
	n = min(n, len(sh.entries))
	if n <= 0 {
		return
	}
	clear(sh.entries[:n])
	sh.entries = sh.entries[n:]
	sh.base += n
	// A resliced slice keeps its whole array alive; copy once most of it is dead, so memory stays
	// proportional to the records retained (amortized O(1) per record).
	if len(sh.entries) < cap(sh.entries)/2 {
		sh.entries = slices.Clone(sh.entries)
	}
}

// RemoveShard drops a shard from the listing (it aged out).
func (s *Stream) RemoveShard(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.byID[id]; sh != nil {
		s.removeShards(func(x *shard) bool { return x == sh })
	}
}

// removeShards drops the listed shards drop selects, keeping the order of the rest. s.mu held.
func (s *Stream) removeShards(drop func(*shard) bool) {
	s.shards = slices.DeleteFunc(s.shards, func(sh *shard) bool {
		if !drop(sh) {
			return false
		}
		delete(s.byID, sh.id)
		if sh.owner {
			s.sim.disown(sh)
		}
		return true
	})
}

// ExpireIterators makes every iterator handed out so far expired.
func (s *Stream) ExpireIterators() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
}

// Throttle makes the next n calls fail with LimitExceededException.
func (s *Stream) Throttle(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
}

// Delete makes the stream disappear.
func (s *Stream) Delete() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone = true
}

func (s *Stream) isGone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

// Calls is the number of API calls served.
func (s *Stream) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Stats returns the call counters of the stream's account (all its streams together), or of this
// stream alone when it was made by New.
func (s *Stream) Stats() Stats { return s.env.stats() }

// ShardCreated returns when the shard id was created (on the account's clock), even after it aged
// out of the stream; false if the stream never had such a shard.
func (s *Stream) ShardCreated(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.born[id]
	return t, ok
}

// OpenShards returns the ids of the open shards, in creation order.
func (s *Stream) OpenShards() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, sh := range s.shards {
		if !sh.closed {
			ids = append(ids, sh.id)
		}
	}
	return ids
}

// enter counts a call the stream serves and fails it when the stream is gone or Throttle asked
// for it. s.mu held.
func (s *Stream) enter(a api) error {
	s.calls++
	if s.gone {
		return &types.ResourceNotFoundException{Message: aws.String("Requested resource not found: Stream: " + s.ARN + " not found")}
	}
	if s.throttle > 0 {
		s.throttle--
		return s.env.refuse(a, "Rate exceeded for shard")
	}
	return nil
}

// validation returns the error AWS answers a malformed request with.
func validation(format string, args ...any) error {
	return &smithy.GenericAPIError{Code: "ValidationException", Message: fmt.Sprintf(format, args...), Fault: smithy.FaultClient}
}

// pageLimit returns the page size a Limit asks for: 1 to 100, default 100.
func pageLimit(limit *int32) (int, error) {
	if limit == nil {
		return 100, nil
	}
	if n := *limit; n < 1 || n > 100 {
		return 0, validation("1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and 100", n)
	}
	return int(*limit), nil
}

// DescribeStream implements streams.API. It pages shards as AWS does (Limit, default and maximum
// 100; ExclusiveStartShardId; LastEvaluatedShardId while more remain), in creation order, and
// honors ShardFilter CHILD_SHARDS (only the shards whose parent is ShardFilter.ShardId).
func (s *Stream) DescribeStream(_ context.Context, in *dynamodbstreams.DescribeStreamInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error) {
	if err := s.env.enter(apiDescribeStream); err != nil {
		return nil, err
	}
	return s.describe(in)
}

func (s *Stream) describe(in *dynamodbstreams.DescribeStreamInput) (*dynamodbstreams.DescribeStreamOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(apiDescribeStream); err != nil {
		return nil, err
	}
	limit, err := pageLimit(in.Limit)
	if err != nil {
		return nil, err
	}
	if s.PageShardsBy > 0 {
		limit = min(limit, s.PageShardsBy)
	}
	var parent string
	if f := in.ShardFilter; f != nil {
		if f.Type != types.ShardFilterTypeChildShards || f.ShardId == nil {
			return nil, validation("ShardFilter: Type must be CHILD_SHARDS and ShardId set")
		}
		parent = *f.ShardId
	}
	start := 0
	if x := in.ExclusiveStartShardId; x != nil {
		start = s.after(*x)
	}
	d := &types.StreamDescription{
		StreamArn: aws.String(s.ARN), StreamLabel: aws.String(s.label), TableName: aws.String(s.Table),
		StreamStatus: s.status, StreamViewType: types.StreamViewTypeNewAndOldImages,
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		Shards:    make([]types.Shard, 0, min(limit, len(s.shards)-start)),
	}
	if !s.created.IsZero() {
		d.CreationRequestDateTime = aws.Time(s.created)
	}
	for _, sh := range s.shards[start:] {
		if parent != "" && sh.parent != parent {
			continue
		}
		if len(d.Shards) == limit {
			d.LastEvaluatedShardId = d.Shards[limit-1].ShardId
			break
		}
		d.Shards = append(d.Shards, sh.describe())
	}
	return &dynamodbstreams.DescribeStreamOutput{StreamDescription: d}, nil
}

// after returns the position in the listing just after shard id. A shard no longer listed is
// placed by its id, which works for ids that sort in creation order, like AWS's and those
// NewStreamWithShards and Roll make. s.mu held.
func (s *Stream) after(id string) int {
	if sh := s.byID[id]; sh != nil {
		return sort.Search(len(s.shards), func(i int) bool { return s.shards[i].ord > sh.ord })
	}
	for i, sh := range s.shards {
		if sh.id > id {
			return i
		}
	}
	return len(s.shards)
}

func (sh *shard) describe() types.Shard {
	out := types.Shard{ShardId: aws.String(sh.id), SequenceNumberRange: &types.SequenceNumberRange{StartingSequenceNumber: aws.String(seqString(sh.start))}}
	if sh.parent != "" {
		out.ParentShardId = aws.String(sh.parent)
	}
	if sh.closed {
		out.SequenceNumberRange.EndingSequenceNumber = aws.String(seqString(sh.end))
	}
	return out
}

// seqString formats a sequence number as AWS does: a decimal string, here zero-padded to 21
// digits so that numbers sort as strings too.
func seqString(n uint64) string {
	var digits [20]byte // a uint64 has at most 20 digits
	d := strconv.AppendUint(digits[:0], n, 10)
	var b [21]byte
	for i := range len(b) - len(d) {
		b[i] = '0'
	}
	copy(b[len(b)-len(d):], d)
	return string(b[:])
}

// iterator is "<stream arn>|<shard>|<position of the next record>|<generation>": it names the
// stream, so an Account can dispatch GetRecords by it.
func (s *Stream) iterator(id string, next int) *string {
	return aws.String(s.ARN + "|" + id + "|" + strconv.Itoa(next) + "|" + strconv.Itoa(s.gen))
}

type iterator struct {
	arn, shard string
	next, gen  int
}

func parseIterator(it *string) (iterator, error) {
	parts := strings.Split(aws.ToString(it), "|")
	if len(parts) == 4 {
		next, err1 := strconv.Atoi(parts[2])
		gen, err2 := strconv.Atoi(parts[3])
		if err1 == nil && err2 == nil && next >= 0 {
			return iterator{arn: parts[0], shard: parts[1], next: next, gen: gen}, nil
		}
	}
	return iterator{}, validation("Invalid ShardIterator: %q", aws.ToString(it))
}

// GetShardIterator implements streams.API: TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER and
// AFTER_SEQUENCE_NUMBER.
func (s *Stream) GetShardIterator(_ context.Context, in *dynamodbstreams.GetShardIteratorInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetShardIteratorOutput, error) {
	s.env.count(apiGetShardIterator)
	return s.shardIterator(in)
}

func (s *Stream) shardIterator(in *dynamodbstreams.GetShardIteratorInput) (*dynamodbstreams.GetShardIteratorOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(apiGetShardIterator); err != nil {
		return nil, err
	}
	sh := s.byID[aws.ToString(in.ShardId)]
	if sh == nil {
		return nil, &types.ResourceNotFoundException{Message: aws.String("shard not found")}
	}
	out := func(next int) (*dynamodbstreams.GetShardIteratorOutput, error) {
		return &dynamodbstreams.GetShardIteratorOutput{ShardIterator: s.iterator(sh.id, next)}, nil
	}
	switch in.ShardIteratorType {
	case types.ShardIteratorTypeTrimHorizon:
		return out(sh.base)
	case types.ShardIteratorTypeLatest:
		return out(sh.base + len(sh.entries))
	case types.ShardIteratorTypeAtSequenceNumber, types.ShardIteratorTypeAfterSequenceNumber:
		want, err := strconv.ParseUint(aws.ToString(in.SequenceNumber), 10, 64)
		i := sort.Search(len(sh.entries), func(i int) bool { return sh.entries[i].seq >= want })
		if err != nil || i == len(sh.entries) || sh.entries[i].seq != want {
			if err == nil && i == 0 && sh.base > 0 {
				return nil, &types.TrimmedDataAccessException{Message: aws.String("sequence number trimmed")}
			}
			return nil, &types.TrimmedDataAccessException{Message: aws.String("sequence number not in shard")}
		}
		if in.ShardIteratorType == types.ShardIteratorTypeAfterSequenceNumber {
			i++
		}
		return out(sh.base + i)
	}
	return nil, fmt.Errorf("streamsfake: iterator type %s not supported", in.ShardIteratorType)
}

// GetRecords implements streams.API. With an Account's limits it admits at most
// Limits.GetRecordsPerSecond calls per shard per second and Limits.GetRecordsInFlight at once,
// and takes Options.GetRecordsLatency to answer.
func (s *Stream) GetRecords(ctx context.Context, in *dynamodbstreams.GetRecordsInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error) {
	s.env.count(apiGetRecords)
	return s.getRecords(ctx, in)
}

func (s *Stream) getRecords(ctx context.Context, in *dynamodbstreams.GetRecordsInput) (*dynamodbstreams.GetRecordsOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(apiGetRecords); err != nil {
		return nil, err
	}
	it, err := parseIterator(in.ShardIterator)
	if err != nil {
		return nil, err
	}
	if it.arn != s.ARN {
		return nil, validation("Invalid ShardIterator: not an iterator of stream %s", s.ARN)
	}
	sh := s.byID[it.shard]
	if sh == nil {
		return nil, &types.ResourceNotFoundException{Message: aws.String("shard not found")}
	}
	if s.env.limits.GetRecordsInFlight > 0 && sh.inflight >= s.env.limits.GetRecordsInFlight {
		return nil, s.env.refuse(apiGetRecords, "Too many concurrent GetRecords on shard "+sh.id)
	}
	if !sh.reads.allow(s.env.now()) {
		return nil, s.env.refuse(apiGetRecords, "Rate exceeded for shard "+sh.id)
	}
	sh.inflight++
	defer func() { sh.inflight-- }()
	if d := s.env.latency; d > 0 {
		// Wait unlocked, so that other calls (and other shards) proceed meanwhile.
		s.mu.Unlock()
		err := s.env.sleep(ctx, d)
		s.mu.Lock()
		if err != nil {
			return nil, err
		}
		if s.gone || s.byID[sh.id] != sh {
			return nil, &types.ResourceNotFoundException{Message: aws.String("shard not found")}
		}
	}
	if it.gen != s.gen {
		return nil, &types.ExpiredIteratorException{Message: aws.String("Iterator expired")}
	}
	if it.next < sh.base {
		return nil, &types.TrimmedDataAccessException{Message: aws.String("records trimmed")}
	}
	limit := int(aws.ToInt32(in.Limit))
	if limit <= 0 {
		limit = 1000
	}
	from := min(it.next-sh.base, len(sh.entries))
	to := from + min(limit, len(sh.entries)-from)
	out := &dynamodbstreams.GetRecordsOutput{Records: make([]types.Record, 0, to-from)}
	for i := range sh.entries[from:to] {
		out.Records = append(out.Records, s.record(&sh.entries[from+i]))
	}
	if !(sh.closed && to == len(sh.entries)) {
		out.NextShardIterator = s.iterator(sh.id, sh.base+to)
	}
	return out, nil
}

// record returns the stream record of e. s.mu held.
func (s *Stream) record(e *entry) types.Record {
	if e.rec != nil {
		return *e.rec
	}
	return s.sim.record(e)
}

// Record is a convenience: a stream record of op (INSERT, MODIFY, REMOVE) for key pk with images.
func Record(op types.OperationType, pk string, oldImage, newImage map[string]types.AttributeValue) types.Record {
	return types.Record{
		EventName: op, EventSource: aws.String("aws:dynamodb"),
		Dynamodb: &types.StreamRecord{
			Keys:                        map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}},
			OldImage:                    oldImage,
			NewImage:                    newImage,
			ApproximateCreationDateTime: aws.Time(time.Unix(1795500000, 0)),
			StreamViewType:              types.StreamViewTypeNewAndOldImages,
		},
	}
}
