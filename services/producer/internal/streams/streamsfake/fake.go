// Package streamsfake is an in-process DynamoDB Streams for tests: shards that split and close,
// iterators that expire, records that are trimmed, calls that are throttled. DynamoDB Local has one
// long-lived shard per table and does none of these.
package streamsfake

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// Stream is one fake stream. It implements the producer's streams.API.
type Stream struct {
	ARN   string
	Table string
	// PageShardsBy makes DescribeStream return at most this many shards per page (0: all).
	PageShardsBy int

	mu       sync.Mutex
	shards   []*shard
	seq      int64 // last sequence number handed out, across shards
	gen      int   // bumped by ExpireIterators
	throttle int   // the next calls to fail with LimitExceededException
	gone     bool
	calls    int
}

type shard struct {
	id, parent string
	records    []types.Record
	closed     bool
	trimmed    int // records[:trimmed] have aged out
}

// New returns a stream for table with one open shard, "shard-0000".
func New(table string) *Stream {
	s := &Stream{ARN: "arn:aws:dynamodb:us-east-1:000000000000:table/" + table + "/stream/fake", Table: table}
	s.shards = []*shard{{id: "shard-0000"}}
	return s
}

func (s *Stream) find(id string) *shard {
	for _, sh := range s.shards {
		if sh.id == id {
			return sh
		}
	}
	return nil
}

// Put appends records to an open shard, numbering them with increasing sequence numbers, and
// returns the numbers.
func (s *Stream) Put(shardID string, recs ...types.Record) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.find(shardID)
	if sh == nil || sh.closed {
		panic(fmt.Sprintf("streamsfake: put to missing or closed shard %s", shardID))
	}
	var seqs []string
	for _, r := range recs {
		s.seq++
		seq := fmt.Sprintf("%021d", s.seq) // sequence numbers are decimal strings that sort as numbers
		if r.Dynamodb == nil {
			r.Dynamodb = &types.StreamRecord{}
		}
		r.Dynamodb.SequenceNumber = aws.String(seq)
		if r.EventID == nil {
			r.EventID = aws.String("ev-" + seq)
		}
		sh.records = append(sh.records, r)
		seqs = append(seqs, seq)
	}
	return seqs
}

// Split closes parent and opens two children of it.
func (s *Stream) Split(parent, childA, childB string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.find(parent)
	p.closed = true
	s.shards = append(s.shards, &shard{id: childA, parent: parent}, &shard{id: childB, parent: parent})
}

// Close closes a shard without children (the stream is being disabled).
func (s *Stream) Close(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.find(id).closed = true
}

// Trim drops the n oldest records of a shard, as the 24-hour retention does.
func (s *Stream) Trim(id string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.find(id)
	sh.trimmed = min(sh.trimmed+n, len(sh.records))
}

// RemoveShard drops a shard from the listing (it aged out).
func (s *Stream) RemoveShard(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sh := range s.shards {
		if sh.id == id {
			s.shards = append(s.shards[:i], s.shards[i+1:]...)
			return
		}
	}
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

// Calls is the number of API calls served.
func (s *Stream) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *Stream) enter() error {
	s.calls++
	if s.gone {
		return &types.ResourceNotFoundException{Message: aws.String("Requested resource not found: Stream: " + s.ARN + " not found")}
	}
	if s.throttle > 0 {
		s.throttle--
		return &types.LimitExceededException{Message: aws.String("Rate exceeded for shard")}
	}
	return nil
}

// DescribeStream implements streams.API.
func (s *Stream) DescribeStream(_ context.Context, in *dynamodbstreams.DescribeStreamInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(); err != nil {
		return nil, err
	}
	start := 0
	if in.ExclusiveStartShardId != nil {
		for i, sh := range s.shards {
			if sh.id == *in.ExclusiveStartShardId {
				start = i + 1
			}
		}
	}
	end := len(s.shards)
	if s.PageShardsBy > 0 && start+s.PageShardsBy < end {
		end = start + s.PageShardsBy
	}
	d := &types.StreamDescription{
		StreamArn: aws.String(s.ARN), TableName: aws.String(s.Table), StreamStatus: types.StreamStatusEnabled,
		StreamViewType: types.StreamViewTypeNewAndOldImages,
		KeySchema:      []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
	}
	for _, sh := range s.shards[start:end] {
		out := types.Shard{ShardId: aws.String(sh.id), SequenceNumberRange: &types.SequenceNumberRange{StartingSequenceNumber: aws.String("0")}}
		if sh.parent != "" {
			out.ParentShardId = aws.String(sh.parent)
		}
		if sh.closed {
			out.SequenceNumberRange.EndingSequenceNumber = aws.String(fmt.Sprintf("%021d", s.seq))
		}
		d.Shards = append(d.Shards, out)
	}
	if end < len(s.shards) {
		d.LastEvaluatedShardId = aws.String(s.shards[end-1].id)
	}
	return &dynamodbstreams.DescribeStreamOutput{StreamDescription: d}, nil
}

// iterator: "<shard>|<next record index>|<generation>"
func (s *Stream) iterator(id string, next int) *string {
	return aws.String(id + "|" + strconv.Itoa(next) + "|" + strconv.Itoa(s.gen))
}

// GetShardIterator implements streams.API.
func (s *Stream) GetShardIterator(_ context.Context, in *dynamodbstreams.GetShardIteratorInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetShardIteratorOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(); err != nil {
		return nil, err
	}
	sh := s.find(aws.ToString(in.ShardId))
	if sh == nil {
		return nil, &types.ResourceNotFoundException{Message: aws.String("shard not found")}
	}
	switch in.ShardIteratorType {
	case types.ShardIteratorTypeTrimHorizon:
		return &dynamodbstreams.GetShardIteratorOutput{ShardIterator: s.iterator(sh.id, sh.trimmed)}, nil
	case types.ShardIteratorTypeAfterSequenceNumber:
		want := aws.ToString(in.SequenceNumber)
		for i, r := range sh.records {
			if aws.ToString(r.Dynamodb.SequenceNumber) == want {
				if i < sh.trimmed {
					return nil, &types.TrimmedDataAccessException{Message: aws.String("sequence number trimmed")}
				}
				return &dynamodbstreams.GetShardIteratorOutput{ShardIterator: s.iterator(sh.id, i+1)}, nil
			}
		}
		return nil, &types.TrimmedDataAccessException{Message: aws.String("sequence number not in shard")}
	}
	return nil, fmt.Errorf("streamsfake: iterator type %s not supported", in.ShardIteratorType)
}

// GetRecords implements streams.API.
func (s *Stream) GetRecords(_ context.Context, in *dynamodbstreams.GetRecordsInput, _ ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(); err != nil {
		return nil, err
	}
	parts := strings.Split(aws.ToString(in.ShardIterator), "|")
	if len(parts) != 3 {
		return nil, fmt.Errorf("streamsfake: bad iterator %q", aws.ToString(in.ShardIterator))
	}
	next, _ := strconv.Atoi(parts[1])
	gen, _ := strconv.Atoi(parts[2])
	if gen != s.gen {
		return nil, &types.ExpiredIteratorException{Message: aws.String("Iterator expired")}
	}
	sh := s.find(parts[0])
	if sh == nil {
		return nil, &types.ResourceNotFoundException{Message: aws.String("shard not found")}
	}
	if next < sh.trimmed {
		return nil, &types.TrimmedDataAccessException{Message: aws.String("records trimmed")}
	}
	limit := int(aws.ToInt32(in.Limit))
	if limit <= 0 {
		limit = 1000
	}
	end := min(next+limit, len(sh.records))
	out := &dynamodbstreams.GetRecordsOutput{Records: append([]types.Record(nil), sh.records[next:end]...)}
	if !(sh.closed && end == len(sh.records)) {
		out.NextShardIterator = s.iterator(sh.id, end)
	}
	return out, nil
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
