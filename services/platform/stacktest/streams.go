package stacktest

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// ReadStream returns every record of every shard of a stream, from each shard's start to the
// newest record: the independent account of what a producer should have published.
func ReadStream(ctx context.Context, cl *dynamodbstreams.Client, arn string) ([]types.Record, error) {
	var out []types.Record
	var start *string
	for {
		desc, err := cl.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), ExclusiveStartShardId: start})
		if err != nil {
			return nil, fmt.Errorf("describing stream: %w", err)
		}
		for _, sh := range desc.StreamDescription.Shards {
			it, err := cl.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{
				StreamArn: aws.String(arn), ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
			})
			if err != nil {
				return nil, fmt.Errorf("getting iterator for %s: %w", aws.ToString(sh.ShardId), err)
			}
			// An open shard always returns a next iterator; stop at the first empty page.
			for iter := it.ShardIterator; iter != nil; {
				page, err := cl.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: iter})
				if err != nil {
					return nil, fmt.Errorf("reading %s: %w", aws.ToString(sh.ShardId), err)
				}
				out = append(out, page.Records...)
				if len(page.Records) == 0 {
					break
				}
				iter = page.NextShardIterator
			}
		}
		if start = desc.StreamDescription.LastEvaluatedShardId; start == nil {
			return out, nil
		}
	}
}
