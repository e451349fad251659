// Command sink writes change events from Kafka into Delta Lake tables, each change exactly once
// (see services/sink/README.md).
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/connect"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/maintenance"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/pipeline"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/warehouse"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

func main() {
	os.Exit(service.Main("sink", settings.EnvPrefix, settings.Defaults(), run))
}

func run(ctx context.Context, rt *service.Runtime, s *settings.Settings) error {
	clients, err := connect.Open(ctx, s.Kafka, s.SchemaRegistry, rt.Health, rt.Log)
	if err != nil {
		return err
	}
	defer clients.Close()
	kopts, kc, reg := clients.KafkaOpts, clients.Kafka, clients.Registry

	var s3api storage.S3API
	for _, t := range s.Tables {
		if t.Target != "databricks" && strings.HasPrefix(s.ResolveLocation(t), "s3://") {
			if s3api, err = openS3(ctx, s.S3); err != nil {
				return err
			}
			break
		}
	}
	cfg := pipeline.Config{Group: s.ConsumerGroup, DeadLetters: s.DeadLetters, Kafka: kopts,
		Batch: pipeline.Batch{MaxRows: s.Batch.MaxRows, MaxBytes: s.Batch.MaxBytes, MaxAge: s.Batch.MaxAge}}
	var db *sql.DB
	if slices.ContainsFunc(s.Tables, settings.Table.UsesWarehouse) {
		if db, err = openWarehouse(s.Databricks); err != nil {
			return err
		}
		defer db.Close()
		if strings.HasPrefix(s.Databricks.Staging, "s3://") && s3api == nil {
			if s3api, err = openS3(ctx, s.S3); err != nil {
				return err
			}
		}
	}
	var maint []maintained
	for _, t := range s.Tables {
		if t.Target == "databricks" {
			w, err := warehouseTable(s, t, db, s3api, rt)
			if err != nil {
				return err
			}
			cfg.Tables = append(cfg.Tables, pipeline.Table{Name: t.Name, Topics: t.Topics, Writer: w})
			continue
		}
		loc := s.ResolveLocation(t)
		st, err := storage.Open(loc, s3api)
		if err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
		hints, err := layout.ParseHints(t.SchemaHints) // validated with the settings
		if err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
		w := writer.New(writer.Config{Name: t.Name, Mode: t.Mode, PartitionByDate: t.PartitionBy == "date",
			TargetFileRows: t.TargetFileRows, Buckets: t.Buckets, MirrorStrategy: t.MirrorStrategy, Properties: t.Properties, Hints: hints}, st, rt.Log)
		w.Table().CheckpointInterval = s.CheckpointInterval
		w.Table().TombstoneRetention = s.Maintenance.Retention
		tw := pipeline.Direct(w)
		if t.Register {
			id, err := warehouse.ParseIdent(t.DatabricksTable, s.Databricks.Catalog, s.Databricks.Schema)
			if err != nil {
				return fmt.Errorf("table %s: databricks_table: %w", t.Name, err)
			}
			tw = warehouse.Register(tw, t.Name, id, warehouseLocation(loc), t.Topics, t.Mode, db, rt.Log)
		}
		cfg.Tables = append(cfg.Tables, pipeline.Table{Name: t.Name, Topics: t.Topics, Writer: tw})
		maint = append(maint, maintained{table: delta.NewTable(st), cfg: maintenance.Config{Name: t.Name, MinFiles: s.Maintenance.MinFiles,
			SmallFileBytes: s.Maintenance.SmallFileBytes, TargetFileRows: t.TargetFileRows, Retention: s.Maintenance.Retention,
			ForceRetention: s.Maintenance.ForceRetention, PurgeFraction: s.Maintenance.PurgeFraction}})
		rt.Log.Info("table", "name", t.Name, "mode", t.Mode, "mirror_strategy", t.MirrorStrategy, "location", loc, "topics", t.Topics)
	}

	// Start-up steps are retried while their dependency fails, so an outage at start-up delays the
	// sink instead of crash-looping it.
	adm := kadm.NewClient(kc)
	var dlq *serde.DeadLetterEncoder
	b := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		err := ensureTopic(ctx, adm, s.DeadLetters)
		if err == nil {
			dlq, err = serde.NewDeadLetterEncoder(ctx, reg, s.DeadLetters)
		}
		if err == nil {
			break
		}
		rt.Log.Warn("starting up; retrying", "error", err)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return nil
		}
	}
	progress := health.NewProgress(2 * time.Minute)
	rt.Health.AddCheck("progress", progress.Check)
	p := pipeline.New(cfg, serde.NewDecoder(reg), dlq, pipeline.NewMetrics(rt.Health.Registry()), progress, rt.Log)
	rt.Log.Info("sink started", "tables", len(cfg.Tables), "topics", p.Topics())
	if s.Maintenance.Interval > 0 {
		go maintain(ctx, maint, s.Maintenance.Interval, s.CheckpointInterval, s.Maintenance.Retention, rt)
	}
	return p.Run(ctx)
}

func openS3(ctx context.Context, c settings.S3) (storage.S3API, error) {
	awsCfg, err := c.AWS().Load(ctx)
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.BaseEndpoint = c.AWS().BaseEndpoint()
		o.UsePathStyle = c.ForcePathStyle
	}), nil
}

// openWarehouse opens the SQL warehouse connection pool (the token read from its file here).
func openWarehouse(d settings.Databricks) (*sql.DB, error) {
	token, err := config.FromFile(d.Token, d.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading databricks.token_file: %w", err)
	}
	return warehouse.Open(warehouse.Conn{Host: d.Host, Port: d.Port, HTTPPath: d.HTTPPath, Token: token.Value(), Timeout: d.StatementTimeout,
		Spark: d.Dialect == "spark"})
}

// warehouseTable returns the writer of a table written through the warehouse.
func warehouseTable(s *settings.Settings, t settings.Table, db *sql.DB, s3api storage.S3API, rt *service.Runtime) (writer.TableWriter, error) {
	d := s.Databricks
	id, err := warehouse.ParseIdent(t.DatabricksTable, d.Catalog, d.Schema)
	if err != nil {
		return nil, fmt.Errorf("table %s: databricks_table: %w", t.Name, err)
	}
	offsets, err := warehouse.ParseIdent(d.OffsetsTable, id.Catalog, id.Schema)
	if err != nil {
		return nil, fmt.Errorf("databricks.offsets_table: %w", err)
	}
	hints, err := layout.ParseHints(t.SchemaHints) // validated with the settings
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", t.Name, err)
	}
	dir := strings.TrimSuffix(d.Staging, "/") + "/" + t.Name
	var stage warehouse.Stager
	if warehouse.IsVolume(d.Staging) {
		stage = warehouse.VolumeStager{DB: db, Dir_: dir}
	} else {
		st, err := storage.Open(dir, s3api)
		if err != nil {
			return nil, fmt.Errorf("table %s: databricks.staging: %w", t.Name, err)
		}
		stage = warehouse.StoreStager{Store: st, URL: warehouseLocation(dir)}
	}
	rt.Log.Info("table", "name", t.Name, "mode", t.Mode, "target", "databricks", "databricks_table", id.String(), "staging", stage.Dir(), "topics", t.Topics)
	return warehouse.New(warehouse.Config{Name: t.Name, Mode: t.Mode, PartitionByDate: t.PartitionBy == "date", Table: id, Offsets: offsets,
		Dialect: d.Dialect, Hints: hints, Properties: t.Properties, Topics: t.Topics, StagingRetention: d.StagingRetention}, db, stage, rt.Log), nil
}

// warehouseLocation is a location as the warehouse names it: s3:// URLs as they are, local
// directories as absolute file:// URLs (a warehouse on the same machine: a test server).
func warehouseLocation(loc string) string {
	l, err := storage.ParseLocation(loc)
	if err != nil || l.Scheme != "file" {
		return loc
	}
	abs, err := filepath.Abs(l.Path)
	if err != nil {
		return loc
	}
	return "file://" + abs
}

type maintained struct {
	table *delta.Table
	cfg   maintenance.Config
}

// maintain compacts and vacuums every table and deletes its expired log files each interval.
// Every replica does it; concurrent rounds on one table conflict harmlessly (one commits, the
// others skip; deleting a deleted file is not an error).
func maintain(ctx context.Context, tables []maintained, interval time.Duration, checkpoints int64, retention time.Duration, rt *service.Runtime) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, m := range tables {
			m.table.CheckpointInterval, m.table.TombstoneRetention = checkpoints, retention
			if _, err := maintenance.Compact(ctx, m.table, m.cfg, rt.Log); err != nil && ctx.Err() == nil {
				rt.Log.Warn("compaction failed; retrying next round", "table", m.cfg.Name, "error", err)
			}
			if _, err := maintenance.Vacuum(ctx, m.table, m.cfg, time.Now(), rt.Log); errors.Is(err, maintenance.ErrRetentionTooShort) {
				rt.Log.Error("vacuum refused: fix the configuration", "table", m.cfg.Name, "error", err)
			} else if err != nil && ctx.Err() == nil {
				rt.Log.Warn("vacuum failed; retrying next round", "table", m.cfg.Name, "error", err)
			}
			if _, err := maintenance.CleanLog(ctx, m.table, m.cfg.Name, time.Now(), rt.Log); err != nil && ctx.Err() == nil {
				rt.Log.Warn("log cleanup failed; retrying next round", "table", m.cfg.Name, "error", err)
			}
		}
	}
}

func ensureTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	resp, err := adm.CreateTopic(ctx, 3, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	return nil
}
