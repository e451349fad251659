// Command enricher filters, joins and projects change events from Kafka into enriched topics,
// exactly once (see services/enricher/README.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/globaltable"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/lookup"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/pipeline"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/run"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/platform/connect"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
)

func main() {
	os.Exit(service.Main("enricher", settings.EnvPrefix, settings.Defaults(), start))
}

// retry runs step until it succeeds or ctx ends: a dependency that is down at start-up delays
// the enricher instead of crash-looping it.
func retry(ctx context.Context, rt *service.Runtime, what string, step func() error) error {
	b := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		err := step()
		if err == nil {
			return nil
		}
		rt.Log.Warn("starting up: "+what+"; retrying", "error", err)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return ctx.Err()
		}
	}
}

func start(ctx context.Context, rt *service.Runtime, s *settings.Settings) error {
	if err := pipeline.Validate(s); err != nil {
		return err
	}
	clients, err := connect.Open(ctx, s.Kafka, s.SchemaRegistry, rt.Health, rt.Log)
	if err != nil {
		return err
	}
	defer clients.Close()
	adm := kadm.NewClient(clients.Kafka)
	reg := clients.Registry

	var dlq *serde.DeadLetterEncoder
	if err := retry(ctx, rt, "creating topics", func() error {
		if err := ensureTopic(ctx, adm, s.DeadLetters, 3, s.Topics.ReplicationFactor); err != nil {
			return err
		}
		for _, p := range s.Pipelines {
			if err := ensureTopic(ctx, adm, s.OutputTopic(p), s.Topics.Partitions, s.Topics.ReplicationFactor); err != nil {
				return err
			}
		}
		var err error
		dlq, err = serde.NewDeadLetterEncoder(ctx, reg, s.DeadLetters)
		return err
	}); err != nil {
		return nil
	}

	src := pipeline.Sources{Global: map[string]pipeline.Source{}, Lookups: map[string]pipeline.Source{}}
	if len(s.GlobalTables) > 0 {
		if err := os.MkdirAll(s.StateDir, 0o750); err != nil {
			return fmt.Errorf("state_dir %s: %w", s.StateDir, err)
		}
		store, err := globaltable.Open(s.StateDir, rt.Log)
		if err != nil {
			return err
		}
		defer store.Close()
		gm := globaltable.NewMetrics(rt.Health.Registry())
		var tables []*globaltable.Table
		for _, g := range s.GlobalTables {
			t := globaltable.New(g.Name, g.Topic, store, clients.KafkaOpts, adm, serde.NewDecoder(reg), gm, rt.Log)
			tables = append(tables, t)
			src.Global[g.Name] = pipeline.Global{T: t}
		}
		tctx, stopTables := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{}, len(tables))
		for _, t := range tables {
			go func() { _ = t.Run(tctx); done <- struct{}{} }()
		}
		defer func() { // the store closes after its writers stopped
			stopTables()
			for range tables {
				<-done
			}
		}()
		rt.Health.AddCheck("global_tables", func(context.Context) error {
			for _, t := range tables {
				select {
				case <-t.Restored():
				default:
					return fmt.Errorf("global table %s is being restored from %s", t.Name, t.Topic)
				}
			}
			return nil
		})
		for _, t := range tables {
			rt.Log.Info("restoring global table", "table", t.Name, "topic", t.Topic)
			select {
			case <-t.Restored():
			case <-ctx.Done():
				return nil
			}
		}
	}
	if len(s.Lookups) > 0 {
		awsCfg, err := s.DynamoDB.Load(ctx)
		if err != nil {
			return err
		}
		ddb := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) { o.BaseEndpoint = s.DynamoDB.BaseEndpoint() })
		lm := lookup.NewMetrics(rt.Health.Registry())
		for _, l := range s.Lookups {
			cfg := lookup.Config{Name: l.Name, Table: l.Table, ConsistentRead: l.ConsistentRead, MaxEntries: l.Cache.MaxEntries,
				TTL: l.Cache.TTL, NegativeTTL: l.Cache.NegativeTTL, RateLimit: l.RateLimit}
			var lk *lookup.Lookup
			if err := retry(ctx, rt, "describing lookup table "+l.Table, func() (err error) {
				lk, err = lookup.New(ctx, cfg, ddb, lm, rt.Log)
				return err
			}); err != nil {
				return nil
			}
			src.Lookups[l.Name] = pipeline.Looked{L: lk}
		}
	}

	// A registry outage is retried; an output schema the registry refuses is a configuration
	// error and stops the enricher.
	var engine *pipeline.Engine
	pm := pipeline.NewMetrics(rt.Health.Registry())
	for b := (backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}); ; {
		if engine, err = pipeline.New(ctx, s, src, reg, dlq, pm, rt.Log); err == nil {
			break
		}
		if !serde.Transient(err) {
			return err
		}
		rt.Log.Warn("starting up: registering output schemas; retrying", "error", err)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return nil
		}
	}

	progress := health.NewProgress(2 * time.Minute)
	rt.Health.AddCheck("progress", progress.Check)
	rt.Log.Info("enricher started", "pipelines", len(s.Pipelines), "inputs", engine.Inputs(), "outputs", engine.Outputs(),
		"transactional_id", s.ConsumerGroup+"-"+s.ReplicaID)
	loop := run.New(run.Config{Kafka: clients.KafkaOpts, Group: s.ConsumerGroup, TransactionalID: s.ConsumerGroup + "-" + s.ReplicaID,
		TransactionTimeout: s.TransactionTimeout, MaxPollRecords: s.MaxPollRecords}, engine, run.NewMetrics(rt.Health.Registry()), progress, rt.Log)
	return loop.Run(ctx)
}

func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, replication int16) error {
	resp, err := adm.CreateTopic(ctx, partitions, replication, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	return nil
}
