// Package streams reads DynamoDB Streams: it describes a stream and its shards, orders shards by
// lineage (a child is read only after its parent has been read to its end), and reads one shard
// page by page with adaptive polling and recovery from expired iterators, trimmed data, throttling
// and DynamoDB Local's quirks.
package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// API is the part of the DynamoDB Streams API the producer calls. *dynamodbstreams.Client
// implements it; streamsfake implements it in process for the behaviours DynamoDB Local lacks
// (shard splits and closes).
type API interface {
	DescribeStream(ctx context.Context, in *dynamodbstreams.DescribeStreamInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error)
	GetShardIterator(ctx context.Context, in *dynamodbstreams.GetShardIteratorInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *dynamodbstreams.GetRecordsInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error)
}

// Shard is one shard of a stream.
type Shard struct {
	ID     string
	Parent string // "" for a shard without a parent (or whose parent has aged out of the stream)
	Closed bool   // the shard has an ending sequence number: no new records will arrive
	Start  string // the shard's starting sequence number: every record in it is at or after it
}

// Description is what the producer needs to know of a stream.
type Description struct {
	ARN          string
	Table        string
	ViewType     string // KEYS_ONLY, NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES
	Status       string // ENABLING, ENABLED, DISABLING, DISABLED
	PartitionKey string
	SortKey      string // "" for tables without one
	Shards       []Shard
}

// ErrStreamGone is returned (wrapped) when the stream no longer exists: the table was deleted or
// its stream disabled; the caller re-resolves the table's current stream.
var ErrStreamGone = errors.New("stream no longer exists")

// Describe returns the stream's description with every shard, following DescribeStream's pages.
func Describe(ctx context.Context, api API, arn string) (*Description, error) {
	return describe(ctx, arn, func(ctx context.Context, in *dynamodbstreams.DescribeStreamInput) (*dynamodbstreams.DescribeStreamOutput, error) {
		return api.DescribeStream(ctx, in)
	})
}

type describePage func(ctx context.Context, in *dynamodbstreams.DescribeStreamInput) (*dynamodbstreams.DescribeStreamOutput, error)

// describe lists a stream's shards page by page through page (plain, or paced and retried).
func describe(ctx context.Context, arn string, page describePage) (*Description, error) {
	d := &Description{ARN: arn}
	var start *string
	for {
		out, err := page(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), ExclusiveStartShardId: start})
		if err != nil {
			return nil, describeErr(arn, err)
		}
		sd := out.StreamDescription
		if sd == nil {
			return nil, fmt.Errorf("describing stream %s: empty description", arn)
		}
		if start == nil {
			d.setHeader(sd)
		}
		for _, s := range sd.Shards {
			d.Shards = append(d.Shards, shardOf(s))
		}
		if sd.LastEvaluatedShardId == nil {
			break
		}
		start = sd.LastEvaluatedShardId
	}
	if d.PartitionKey == "" {
		return nil, fmt.Errorf("describing stream %s: no key schema", arn)
	}
	return d, nil
}

func describeErr(arn string, err error) error {
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		return fmt.Errorf("describing stream %s: %w", arn, ErrStreamGone)
	}
	return fmt.Errorf("describing stream %s: %w", arn, err)
}

func (d *Description) setHeader(sd *types.StreamDescription) {
	d.Table = aws.ToString(sd.TableName)
	d.ViewType = string(sd.StreamViewType)
	d.Status = string(sd.StreamStatus)
	for _, k := range sd.KeySchema {
		if k.KeyType == types.KeyTypeHash {
			d.PartitionKey = aws.ToString(k.AttributeName)
		} else {
			d.SortKey = aws.ToString(k.AttributeName)
		}
	}
}

func shardOf(s types.Shard) Shard {
	sh := Shard{ID: aws.ToString(s.ShardId), Parent: aws.ToString(s.ParentShardId)}
	if r := s.SequenceNumberRange; r != nil {
		sh.Closed = r.EndingSequenceNumber != nil
		sh.Start = aws.ToString(r.StartingSequenceNumber)
	}
	return sh
}

// Readable returns the shards that may be read now, in a stable order: every shard not finished
// whose parent is finished, or is not listed any more (it aged out after 24 hours, so its records
// are gone and waiting for it would block the child for ever). finished holds the ids of shards
// read to their end.
func Readable(shards []Shard, finished map[string]bool) []Shard {
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[s.ID] = true
	}
	var out []Shard
	for _, s := range shards {
		if finished[s.ID] {
			continue
		}
		if s.Parent == "" || finished[s.Parent] || !listed[s.Parent] {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Shard) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Lister lists a table's streams. *dynamodbstreams.Client implements it.
type Lister interface {
	ListStreams(ctx context.Context, in *dynamodbstreams.ListStreamsInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.ListStreamsOutput, error)
}

// List returns the ARNs of a table's streams, oldest first (by stream label, the stream's creation
// time). DynamoDB keeps a disabled stream listed, and readable, for 24 hours.
func List(ctx context.Context, api Lister, table string) ([]string, error) {
	type stream struct{ arn, label string }
	var all []stream
	var start *string
	for {
		out, err := api.ListStreams(ctx, &dynamodbstreams.ListStreamsInput{TableName: aws.String(table), ExclusiveStartStreamArn: start})
		if err != nil {
			return nil, fmt.Errorf("listing the streams of table %s: %w", table, err)
		}
		for _, s := range out.Streams {
			if aws.ToString(s.TableName) == table {
				all = append(all, stream{aws.ToString(s.StreamArn), aws.ToString(s.StreamLabel)})
			}
		}
		if out.LastEvaluatedStreamArn == nil {
			break
		}
		start = out.LastEvaluatedStreamArn
	}
	slices.SortFunc(all, func(a, b stream) int {
		if a.label != b.label {
			return strings.Compare(a.label, b.label)
		}
		return strings.Compare(a.arn, b.arn)
	})
	out := make([]string, len(all))
	for i, s := range all {
		out[i] = s.arn
	}
	return out, nil
}
