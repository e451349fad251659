//go:build integration

package stack

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	streamtypes "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestDynamoDBStream creates a table with a NEW_AND_OLD_IMAGES stream, inserts, modifies and
// removes an item, and reads the three changes back from the stream with their images, in order.
func TestDynamoDBStream(t *testing.T) {
	s := stacktest.Require(t, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 60*time.Second)
	cfg := s.AWSConfig()
	ddb := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	streams := dynamodbstreams.NewFromConfig(cfg, func(o *dynamodbstreams.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })

	table := fmt.Sprintf("stacktest_%d", time.Now().UnixNano())
	created, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(table),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: ddbtypes.ScalarAttributeTypeN},
		},
		KeySchema: []ddbtypes.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: ddbtypes.KeyTypeRange},
		},
		BillingMode:         ddbtypes.BillingModePayPerRequest,
		StreamSpecification: &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages},
	})
	if err != nil {
		t.Fatalf("creating table %s: %v", table, err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	streamARN := aws.ToString(created.TableDescription.LatestStreamArn)
	if streamARN == "" {
		t.Fatal("created table has no stream ARN")
	}

	key := map[string]ddbtypes.AttributeValue{
		"pk": &ddbtypes.AttributeValueMemberS{Value: "item-1"},
		"sk": &ddbtypes.AttributeValueMemberN{Value: "12345678901234567890123456789012345678"},
	}
	item := map[string]ddbtypes.AttributeValue{"v": &ddbtypes.AttributeValueMemberS{Value: "first"}}
	for k, v := range key {
		item[k] = v
	}
	if _, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
		t.Fatalf("put: %v", err)
	}
	if _, err := ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(table), Key: key, UpdateExpression: aws.String("SET v = :v"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberS{Value: "second"}},
	}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, err := ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key}); err != nil {
		t.Fatalf("delete: %v", err)
	}

	var records []streamtypes.Record
	stacktest.Eventually(t, 30*time.Second, "reading three stream records", func() error {
		var err error
		records, err = stacktest.ReadStream(ctx, streams, streamARN)
		if err != nil {
			return err
		}
		if len(records) < 3 {
			return fmt.Errorf("read %d records", len(records))
		}
		return nil
	})

	type change struct{ event, oldV, newV string }
	var got []change
	var seqs []*big.Int
	for _, r := range records {
		got = append(got, change{string(r.EventName), stringAttr(r.Dynamodb.OldImage, "v"), stringAttr(r.Dynamodb.NewImage, "v")})
		n, ok := new(big.Int).SetString(aws.ToString(r.Dynamodb.SequenceNumber), 10)
		if !ok {
			t.Fatalf("sequence number %q is not a decimal", aws.ToString(r.Dynamodb.SequenceNumber))
		}
		seqs = append(seqs, n)
		if k := stringAttr(r.Dynamodb.Keys, "pk"); k != "item-1" {
			t.Errorf("record keys pk = %q", k)
		}
	}
	want := []change{{"INSERT", "", "first"}, {"MODIFY", "first", "second"}, {"REMOVE", "second", ""}}
	if !slices.Equal(got, want) {
		t.Fatalf("stream changes = %+v, want %+v", got, want)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i].Cmp(seqs[i-1]) <= 0 {
			t.Errorf("sequence numbers not increasing: %v", seqs)
		}
	}
}

func stringAttr(m map[string]streamtypes.AttributeValue, name string) string {
	if v, ok := m[name].(*streamtypes.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}
