// Command loadgen writes a steady stream of changes to a sample DynamoDB table, so that `make dev`
// shows data moving: inserts of new orders, updates of existing ones (status and amount) and
// occasional deletes. It creates the table, with a NEW_AND_OLD_IMAGES stream, when it is missing.
//
//	loadgen -endpoint http://127.0.0.1:18000 -table ddb2delta_dev_orders -rate 5
//
// AWS credentials come from the SDK's default chain (make dev sets the stack's local ones).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func main() {
	endpoint := flag.String("endpoint", "http://127.0.0.1:18000", "DynamoDB endpoint (empty: AWS itself)")
	table := flag.String("table", "ddb2delta_dev_orders", "table to write")
	rate := flag.Float64("rate", 5, "changes per second")
	duration := flag.Duration("duration", 0, "stop after this long (0: until interrupted)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil)).With("service", "loadgen")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if err := run(ctx, log, *endpoint, *table, *rate); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		log.Error("loadgen failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, endpoint, table string, rate float64) error {
	if rate <= 0 {
		return fmt.Errorf("-rate must be positive, got %v", rate)
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("loading AWS configuration: %w", err)
	}
	ddb := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	if err := ensureTable(ctx, ddb, table); err != nil {
		return err
	}
	log.Info("writing changes", "table", table, "rate_per_s", rate)

	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	report := time.NewTicker(10 * time.Second)
	defer report.Stop()
	var live []string
	counts := map[string]int{}
	next := 0
	for {
		select {
		case <-ctx.Done():
			log.Info("stopped", "inserts", counts["insert"], "updates", counts["update"], "deletes", counts["delete"])
			return ctx.Err()
		case <-report.C:
			log.Info("progress", "inserts", counts["insert"], "updates", counts["update"], "deletes", counts["delete"], "live_items", len(live))
		case <-tick.C:
		}
		var op string
		switch r := rand.Float64(); {
		case len(live) < 5 || r < 0.5:
			op = "insert"
			next++
			id := fmt.Sprintf("order-%06d", next)
			_, err = ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]types.AttributeValue{
				"order_id":   &types.AttributeValueMemberS{Value: id},
				"customer":   &types.AttributeValueMemberS{Value: fmt.Sprintf("customer-%03d", rand.IntN(50))},
				"status":     &types.AttributeValueMemberS{Value: "placed"},
				"amount":     &types.AttributeValueMemberN{Value: fmt.Sprintf("%d.%02d", rand.IntN(500), rand.IntN(100))},
				"items":      &types.AttributeValueMemberL{Value: []types.AttributeValue{&types.AttributeValueMemberS{Value: "sku-" + strconv.Itoa(rand.IntN(1000))}}},
				"written_ms": &types.AttributeValueMemberN{Value: strconv.FormatInt(time.Now().UnixMilli(), 10)},
			}})
			if err == nil {
				live = append(live, id)
			}
		case r < 0.9:
			op = "update"
			id := live[rand.IntN(len(live))]
			_, err = ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
				TableName: aws.String(table), Key: map[string]types.AttributeValue{"order_id": &types.AttributeValueMemberS{Value: id}},
				UpdateExpression:         aws.String("SET #s = :s, written_ms = :w ADD amount :d"),
				ExpressionAttributeNames: map[string]string{"#s": "status"},
				ExpressionAttributeValues: map[string]types.AttributeValue{
					":s": &types.AttributeValueMemberS{Value: []string{"paid", "shipped", "delivered"}[rand.IntN(3)]},
					":w": &types.AttributeValueMemberN{Value: strconv.FormatInt(time.Now().UnixMilli(), 10)},
					":d": &types.AttributeValueMemberN{Value: "1"},
				},
			})
		default:
			op = "delete"
			i := rand.IntN(len(live))
			_, err = ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table),
				Key: map[string]types.AttributeValue{"order_id": &types.AttributeValueMemberS{Value: live[i]}}})
			if err == nil {
				live = append(live[:i], live[i+1:]...)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return fmt.Errorf("writing %s to %s: %w", op, table, err)
		}
		counts[op]++
	}
}

func ensureTable(ctx context.Context, ddb *dynamodb.Client, table string) error {
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("order_id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("order_id"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
		StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("creating table %s: %w", table, err)
	}
	return dynamodb.NewTableExistsWaiter(ddb).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute)
}
