// Command producer publishes every change of the configured DynamoDB tables to Kafka, exactly
// once per stream record as read_committed consumers see it (see services/producer/README.md).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/ddb2delta/ddb2delta/services/platform/connect"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/capture"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/lease"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/producer/internal/streams"
)

func main() {
	os.Exit(service.Main("producer", settings.EnvPrefix, settings.Defaults(), run))
}

func run(ctx context.Context, rt *service.Runtime, s *settings.Settings) error {
	clients, err := connect.Open(ctx, s.Kafka, s.SchemaRegistry, rt.Health, rt.Log)
	if err != nil {
		return err
	}
	defer clients.Close()
	kopts, reg := clients.KafkaOpts, clients.Registry

	awsCfg, err := s.DynamoDB.Load(ctx)
	if err != nil {
		return err
	}
	ddb := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) { o.BaseEndpoint = s.DynamoDB.BaseEndpoint() })
	rt.Health.AddCheck("dynamodb", func(ctx context.Context) error {
		if _, err := ddb.ListTables(ctx, &dynamodb.ListTablesInput{Limit: aws.Int32(1)}); err != nil {
			return fmt.Errorf("listing dynamodb tables: %w", err)
		}
		return nil
	})
	api := dynamodbstreams.NewFromConfig(awsCfg, func(o *dynamodbstreams.Options) { o.BaseEndpoint = s.DynamoDB.BaseEndpoint() })

	cfg := capture.Config{
		TopicPrefix: s.TopicPrefix, Partitions: s.Topics.Partitions, Replication: s.Topics.ReplicationFactor,
		CheckpointTopic: s.Topics.Checkpoints, DeadLetterTopic: s.Topics.DeadLetters, ReplicaID: s.ReplicaID,
		Rescan: s.RescanInterval, MaxMessageBytes: s.Topics.MaxMessageBytes, CheckpointPartitions: s.Topics.CheckpointPartitions, StallTimeout: s.StallTimeout,
		DescribeRate: s.Discovery.DescribeStreamRate, FullListing: s.Discovery.FullListingInterval,
		Poll:  streams.Polling{MinInterval: s.Polling.MinInterval, MaxIdle: s.Polling.MaxIdle},
		Kafka: kopts,
	}
	for _, t := range s.Tables {
		ct := capture.Table{Name: t.Name, StreamARN: t.StreamARN, Encoding: ddbavro.Encoding(t.Encoding), StartLatest: t.StartPosition == "latest"}
		if sn := t.Snapshot; sn.Enabled || sn.AfterStreamGap {
			ct.Snapshot = &capture.Snapshot{Initial: sn.Enabled, AfterGap: sn.AfterStreamGap, ID: sn.ID, Segments: sn.Segments, PageSize: sn.PageSize,
				CapacityShare: sn.CapacityShare, OnDemandCapacity: sn.OnDemandCapacity, Consistent: !sn.EventuallyConsistent}
		}
		cfg.Tables = append(cfg.Tables, ct)
	}
	rt.Log.Info("producer started", "tables", len(cfg.Tables), "replica", s.ReplicaID)
	leases := lease.New(ddb, lease.Config{Table: s.Leases.Table, Owner: s.ReplicaID, Duration: s.Leases.Duration}, rt.Log)
	c := capture.New(cfg, reg, api, ddb, leases, capture.NewMetrics(rt.Health.Registry()), rt.Log)
	rt.Health.AddCheck("shards", c.Ready)
	return c.Run(ctx)
}
