// Command producer publishes every change of the configured DynamoDB tables to Kafka.
//
// Streaming arrives with the producer's own issue; today the process loads and validates its
// configuration, connects to Kafka, the schema registry and DynamoDB, and reports their
// reachability on /readyz.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/settings"
)

func main() {
	os.Exit(service.Main("producer", settings.EnvPrefix, settings.Defaults(), run))
}

func run(ctx context.Context, rt *service.Runtime, s *settings.Settings) error {
	kc, err := kafkaclient.Connect(s.Kafka, rt.Health)
	if err != nil {
		return err
	}
	defer kc.Close()
	if _, err := registry.Connect(s.SchemaRegistry, rt.Health); err != nil {
		return err
	}

	awsCfg, err := s.DynamoDB.Load(ctx)
	if err != nil {
		return err
	}
	ddb := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) { o.BaseEndpoint = s.DynamoDB.BaseEndpoint() })
	rt.Health.AddCheck("dynamodb", func(ctx context.Context) error {
		if _, err := ddb.ListTables(ctx, &dynamodb.ListTablesInput{Limit: ptr(int32(1))}); err != nil {
			return fmt.Errorf("listing dynamodb tables: %w", err)
		}
		return nil
	})

	rt.Log.Info("producer started; streaming is not implemented yet", "tables", len(s.Tables))
	<-ctx.Done()
	return nil
}

func ptr[T any](v T) *T { return &v }
