//go:build integration

package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams/streamsfake"
)

// TestStartPositionLatest: a table captured with start position latest publishes none of the
// changes its stream held when the producer first captured it, every change after, and keeps that
// start across a restart (a restart does not skip what was written while it was down). Against
// the in-process Streams fake: DynamoDB Local stamps records to the minute, AWS to the second.
func TestStartPositionLatest(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 3*time.Minute)
	fake := streamsfake.New(f.table)
	rec := func(pk string, at time.Time) st.Record {
		r := streamsfake.Record(st.OperationTypeInsert, pk, nil, map[string]st.AttributeValue{"pk": &st.AttributeValueMemberS{Value: pk}})
		r.Dynamodb.ApproximateCreationDateTime = aws.Time(at)
		return r
	}
	hourAgo := time.Now().Add(-time.Hour)
	fake.Put("shard-0000", rec("before-1", hourAgo), rec("before-2", hourAgo), rec("before-3", hourAgo))
	cfg := f.config()
	cfg.Tables[0].StartLatest = true
	cfg.Tables[0].StreamARN = fake.ARN
	run := func() (stop func()) {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		c := New(cfg, f.reg, fake, f.ddb, f.leases(), NewMetrics(prometheus.NewRegistry()), testLog(t))
		go func() { done <- c.Run(runCtx) }()
		return func() { cancel(); <-done }
	}
	stop := run()
	topic := cfg.TopicPrefix + ".cdc." + f.table
	fake.Put("shard-0000", rec("after", time.Now().Add(time.Hour))) // after the origin, whenever it is taken
	f.consume(ctx, topic, 1)
	stop()
	// The origin was taken before now. A change stamped now is after it, but before the restart:
	// a restart that took a new origin would skip it.
	t1 := time.Now()
	fake.Put("shard-0000", rec("while-down", t1))
	stacktest.Eventually(t, 5*time.Second, "a later second", func() error {
		if time.Now().Truncate(time.Second).After(t1) {
			return nil
		}
		return fmt.Errorf("still the second of %s", t1)
	})
	stop = run()
	defer stop()
	fake.Put("shard-0000", rec("after-restart", time.Now().Add(time.Hour)))
	events := f.consume(ctx, topic, 3)
	var got []string
	for _, e := range events {
		got = append(got, e.ev.After["pk"].(*types.AttributeValueMemberS).Value)
	}
	slices.Sort(got)
	if strings.Join(got, ",") != "after,after-restart,while-down" {
		t.Fatalf("published %v", got)
	}
}

// TestStreamWithoutNewImagesIsRefused: a table whose stream carries no new image (KEYS_ONLY) is
// refused at start-up with an error naming the table and the view type.
func TestStreamWithoutNewImagesIsRefused(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 2*time.Minute)
	name := f.table + "_keys"
	_, err := f.ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
		StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeKeysOnly},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = f.ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	})
	cfg := f.config()
	cfg.Tables = append(cfg.Tables, Table{Name: name, Encoding: cfg.Tables[0].Encoding})
	c := New(cfg, f.reg, f.api, f.ddb, f.leases(), NewMetrics(prometheus.NewRegistry()), testLog(t))
	err = c.Run(ctx)
	if !errors.Is(err, ErrViewType) || !strings.Contains(err.Error(), "table "+name+" has view type KEYS_ONLY") {
		t.Fatalf("Run = %v, want a refusal naming table %s and KEYS_ONLY", err, name)
	}
}
