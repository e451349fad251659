// Package maintenance keeps the sink's tables cheap to read: it compacts small files into larger
// ones (commits whose add and remove actions have dataChange=false, so streaming readers skip
// them) and vacuums data files no version within the retention period needs.
//
// Both are safe beside running writers, in this process or others: compaction reads a snapshot,
// writes the merged files and commits removes of exactly the files it read; if a writer removed
// one of them meanwhile (a mirror rewrite), the commit conflicts and the round is skipped. Vacuum
// deletes only files that the latest version does not reference and that were removed (or, for
// files never committed, written) longer ago than the retention period, so readers of any version
// younger than that, and commits in flight, keep their files.
package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
)

// Config configures maintenance of one table.
type Config struct {
	Name string
	// MinFiles: a partition (changelog) or bucket (mirror) is compacted once it has this many
	// small files. Default: 8.
	MinFiles int
	// SmallFileBytes: files below this size are small. Default: 32 MiB.
	SmallFileBytes int64
	// TargetFileRows bounds the rows of a compacted file. Default: 1,000,000.
	TargetFileRows int
	// Retention: removed and orphaned files younger than this are kept. Default: 7 days.
	// Vacuum refuses a retention shorter than the table's delta.deletedFileRetentionDuration
	// (7 days when unset), which other engines' readers and vacuums rely on, unless
	// ForceRetention is set.
	Retention      time.Duration
	ForceRetention bool
	// PurgeFraction: a file whose deletion vector deletes at least this fraction of its rows is
	// rewritten without them (with its group's small files), whatever its size. Default: 0.3.
	PurgeFraction float64
}

// ErrRetentionTooShort is returned (wrapped) by Vacuum when Config.Retention is shorter than the
// table's delta.deletedFileRetentionDuration and ForceRetention is not set.
var ErrRetentionTooShort = errors.New("vacuum retention shorter than the table's")

func (c Config) withDefaults() Config {
	if c.MinFiles <= 1 {
		c.MinFiles = 8
	}
	if c.SmallFileBytes <= 0 {
		c.SmallFileBytes = 32 << 20
	}
	if c.TargetFileRows <= 0 {
		c.TargetFileRows = 1_000_000
	}
	if c.Retention <= 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.PurgeFraction <= 0 || c.PurgeFraction > 1 {
		c.PurgeFraction = 0.3
	}
	return c
}

// Result is what a round did.
type Result struct {
	Version      int64 // the compaction commit's version; -1 when nothing was compacted
	Compacted    int   // files merged away
	Written      int   // files written by compaction
	Purged       int   // files with deletion vectors among those merged away
	Vacuumed     int   // files deleted
	VacuumedSize int64
}

// The mirror writer's file tags (package writer): a copy-on-write file's key-hash bucket, a
// deletion-vector mirror file's Kafka partition.
const (
	tagBucket    = "ddb2delta.bucket"
	tagPartition = "ddb2delta.partition"
)

// group returns the compaction group of a file: its partition values, bucket and Kafka partition.
func group(a *delta.Add) string {
	keys := make([]string, 0, len(a.PartitionValues))
	for k, v := range a.PartitionValues {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, "/") + "|" + a.Tags[tagBucket] + "|" + a.Tags[tagPartition]
}

// deletedFraction is the fraction of a file's rows its deletion vector deletes (0 without one,
// or without a row count in its statistics).
func deletedFraction(a *delta.Add) float64 {
	if a.DeletionVector == nil {
		return 0
	}
	var st struct {
		NumRecords int64 `json:"numRecords"`
	}
	if json.Unmarshal([]byte(a.Stats), &st) != nil || st.NumRecords <= 0 {
		return 0
	}
	return float64(a.DeletionVector.Cardinality) / float64(st.NumRecords)
}

// Compact merges the small files of every group that has at least MinFiles of them, and purges
// files whose deletion vectors delete PurgeFraction of their rows or more (with the small files of
// their group), in one commit. Rows keep their order: changelog files by Kafka position, mirror
// files by key; rows deletion vectors delete are left out.
func Compact(ctx context.Context, t *delta.Table, cfg Config, log *slog.Logger) (Result, error) {
	cfg = cfg.withDefaults()
	res := Result{Version: -1}
	snap, err := t.Snapshot(ctx)
	if err != nil || snap.Version < 0 {
		return res, err
	}
	schema, err := snap.Schema()
	if err != nil {
		return res, err
	}
	mirror := snap.Metadata.Configuration["ddb2delta.mode"] == layout.Mirror
	groups := map[string][]*delta.Add{}
	purge := map[string]int{} // group → files due a purge
	for _, a := range snap.Files {
		due := deletedFraction(a) >= cfg.PurgeFraction
		if a.Size < cfg.SmallFileBytes || due {
			groups[group(a)] = append(groups[group(a)], a)
		}
		if due {
			purge[group(a)]++
		}
	}
	var actions []delta.Action
	now := t.Now().UnixMilli()
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		files := groups[g]
		if len(files) < cfg.MinFiles && purge[g] == 0 {
			continue
		}
		sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
		var rows []parquetio.Row
		for _, a := range files {
			r, err := delta.ReadFile(ctx, t.Store, a)
			if err != nil {
				return res, fmt.Errorf("table %s: reading %s: %w", cfg.Name, a.Path, err)
			}
			rows = append(rows, r...)
			actions = append(actions, delta.RemoveOf(a, now, false))
			if a.DeletionVector != nil {
				res.Purged++
			}
		}
		if mirror {
			sort.SliceStable(rows, func(i, j int) bool { return rows[i][layout.ColKey].(string) < rows[j][layout.ColKey].(string) })
		} else {
			sort.SliceStable(rows, func(i, j int) bool { return kafkaLess(rows[i], rows[j]) })
		}
		dir := ""
		if v, ok := files[0].PartitionValues[layout.ColDate]; ok {
			dir = layout.ColDate + "=" + v
		}
		for start := 0; start < len(rows); start += cfg.TargetFileRows {
			chunk := rows[start:min(start+cfg.TargetFileRows, len(rows))]
			data, stats, err := parquetio.Write(schema, snap.Metadata.PartitionColumns, chunk, parquetio.Options{})
			if err != nil {
				return res, fmt.Errorf("table %s: %w", cfg.Name, err)
			}
			name := delta.NewFileName(dir)
			if err := t.Store.Write(ctx, name, data); err != nil {
				return res, err
			}
			actions = append(actions, delta.Action{Add: &delta.Add{Path: name, PartitionValues: files[0].PartitionValues, Size: int64(len(data)),
				ModificationTime: now, DataChange: false, Stats: stats.JSON(), Tags: files[0].Tags}})
			res.Written++
		}
		res.Compacted += len(files)
	}
	if len(actions) == 0 {
		return res, nil
	}
	next, err := t.Commit(ctx, snap, actions, map[string]any{"operation": "OPTIMIZE",
		"operationParameters": map[string]any{"ddb2delta": "compaction"}, "ddb2delta": map[string]any{"table": cfg.Name}}, nil)
	if err != nil && next == nil {
		// The written files stay for vacuum: a commit whose outcome was unknown may have landed.
		if errors.Is(err, delta.ErrConflict) {
			log.Info("compaction conflicted with a concurrent commit; skipped this round", "table", cfg.Name, "error", err)
			return Result{Version: -1}, nil
		}
		return Result{Version: -1}, err
	}
	res.Version = next.Version
	log.Info("compacted", "table", cfg.Name, "version", res.Version, "files", res.Compacted, "into", res.Written)
	return res, nil
}

// kafkaLess orders changelog rows by topic, partition and offset.
func kafkaLess(a, b parquetio.Row) bool {
	at, bt := str(a[layout.ColKafkaTopic]), str(b[layout.ColKafkaTopic])
	if at != bt {
		return at < bt
	}
	ap, bp := a[layout.ColKafkaPartition].(int32), b[layout.ColKafkaPartition].(int32)
	if ap != bp {
		return ap < bp
	}
	return a[layout.ColKafkaOffset].(int64) < b[layout.ColKafkaOffset].(int64)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Vacuum deletes data files and deletion vector files that the latest version does not reference
// and that were removed (tombstone deletion time) or, never committed, last modified before
// now − Retention; and change data files written before then.
func Vacuum(ctx context.Context, t *delta.Table, cfg Config, now time.Time, log *slog.Logger) (Result, error) {
	cfg = cfg.withDefaults()
	res := Result{Version: -1}
	snap, err := t.Snapshot(ctx)
	if err != nil || snap.Version < 0 {
		return res, err
	}
	tableRetention, err := delta.IntervalProperty(snap.Metadata, delta.ConfDeletedFileRetention, delta.DefaultDeletedFileRetention)
	if err != nil {
		return res, fmt.Errorf("table %s: %w", cfg.Name, err)
	}
	if cfg.Retention < tableRetention && !cfg.ForceRetention {
		return res, fmt.Errorf("table %s: %w: maintenance.retention is %s, the table's %s is %s; readers of versions younger than that may still need the files (raise maintenance.retention, lower the property, or set maintenance.force_retention)",
			cfg.Name, ErrRetentionTooShort, cfg.Retention, delta.ConfDeletedFileRetention, tableRetention)
	}
	horizon := now.Add(-cfg.Retention)
	objs, err := t.Store.List(ctx, "", "")
	if err != nil {
		return res, err
	}
	// Live: the data files of the latest version and their deletion vector files. Removed: when
	// each file (data or vector) was last removed, by the tombstones still kept.
	live := map[string]bool{}
	for p, a := range snap.Files {
		live[p] = true
		if dv, err := delta.DVPath(a.DeletionVector); err == nil {
			live[dv] = true
		}
	}
	removed := map[string]int64{}
	for _, r := range snap.Removed {
		removed[r.Path] = max(removed[r.Path], r.DeletionTimestamp)
		if dv, err := delta.DVPath(r.DeletionVector); err == nil {
			removed[dv] = max(removed[dv], r.DeletionTimestamp)
		}
	}
	for _, o := range objs {
		// Data files live at the root and in partition directories, change data files in
		// _change_data/ (never live: a reader of the feed needs them for the retention period
		// after their commit); other _ names are not the table's data.
		if strings.HasPrefix(o.Name, "_delta_log/") || strings.HasPrefix(o.Name, "_") &&
			!strings.HasPrefix(o.Name, layout.ColDate+"=") && !strings.HasPrefix(o.Name, "_change_data/") {
			continue
		}
		if live[o.Name] {
			continue
		}
		old := o.Modified.Before(horizon)
		if ts, ok := removed[o.Name]; ok {
			old = time.UnixMilli(ts).Before(horizon)
		}
		if !old {
			continue
		}
		if err := t.Store.Delete(ctx, o.Name); err != nil {
			return res, err
		}
		res.Vacuumed++
		res.VacuumedSize += o.Size
	}
	if res.Vacuumed > 0 {
		log.Info("vacuumed", "table", cfg.Name, "files", res.Vacuumed, "bytes", res.VacuumedSize)
	}
	return res, nil
}

// CleanLog deletes the log files no reader can use any more, as Delta's own metadata cleanup
// does: commits, checkpoints and checksums older than the table's delta.logRetentionDuration
// (30 days when unset) whose version is below the newest checkpoint written before that horizon.
// Time travel then reaches back to that checkpoint. Nothing is deleted when the table sets
// delta.enableExpiredLogCleanup to false, nor at or after the checkpoint _last_checkpoint names.
// It returns the number of files deleted.
func CleanLog(ctx context.Context, t *delta.Table, name string, now time.Time, log *slog.Logger) (int, error) {
	snap, err := t.Snapshot(ctx)
	if err != nil || snap.Version < 0 {
		return 0, err
	}
	if strings.EqualFold(snap.Metadata.Configuration[delta.ConfExpiredLogCleanup], "false") {
		return 0, nil
	}
	retention, err := delta.IntervalProperty(snap.Metadata, delta.ConfLogRetention, delta.DefaultLogRetention)
	if err != nil {
		return 0, fmt.Errorf("table %s: %w", name, err)
	}
	horizon := now.Add(-retention)
	objs, err := t.Store.List(ctx, delta.LogDir, "")
	if err != nil {
		return 0, err
	}
	keep := int64(-1) // the newest checkpoint older than the horizon
	for _, o := range objs {
		if v, cp, ok := delta.LogFileVersion(o.Name); ok && cp && !o.Modified.After(horizon) && v > keep {
			keep = v
		}
	}
	if last := snap.CheckpointVersion; last >= 0 && last < keep {
		keep = last
	}
	deleted := 0
	for _, o := range objs {
		v, _, ok := delta.LogFileVersion(o.Name)
		if !ok || v >= keep || o.Modified.After(horizon) {
			continue
		}
		if err := t.Store.Delete(ctx, o.Name); err != nil {
			return deleted, err
		}
		deleted++
	}
	if deleted > 0 {
		log.Info("expired log files deleted", "table", name, "files", deleted, "before_version", keep, "retention", retention)
	}
	return deleted, nil
}
