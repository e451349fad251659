// Package settings is the sink's configuration: its keys, defaults and validation.
package settings

import (
	"maps"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/awsconf"
	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
)

// EnvPrefix prefixes the environment variables that override the sink's keys.
const EnvPrefix = "DDB2DELTA_SINK"

// Settings is the sink's configuration file.
type Settings struct {
	Log            service.LogConfig  `yaml:"log"`
	HTTP           service.HTTPConfig `yaml:"http"`
	Kafka          kafkaclient.Config `yaml:"kafka"`
	SchemaRegistry registry.Config    `yaml:"schema_registry"`
	// ConsumerGroup is shared by every sink replica. Default: ddb2delta-sink.
	ConsumerGroup string `yaml:"consumer_group"`
	// S3 is used by tables whose location is s3://… (endpoint: versitygw in dev).
	S3 S3 `yaml:"s3"`
	// TablesRoot is where tables with a relative location live: a directory, file:// or s3://
	// URL. One sample config then serves a laptop and a container by overriding this one key.
	// Default: ./delta.
	TablesRoot string `yaml:"tables_root"`
	// Batch bounds how much is buffered before a commit.
	Batch Batch `yaml:"batch"`
	// DeadLetters is the topic receiving records that cannot be decoded or mapped. Default:
	// ddb2delta.dlq.sink.
	DeadLetters string `yaml:"dead_letters"`
	// CheckpointInterval writes a Parquet checkpoint every N commits of a table. Default: 10.
	CheckpointInterval int64 `yaml:"checkpoint_interval"`
	// Maintenance compacts small files and vacuums unreferenced ones in the background.
	Maintenance Maintenance `yaml:"maintenance"`
	// Databricks is the SQL warehouse of the tables whose target is databricks, and of the
	// tables registered in Unity Catalog.
	Databricks Databricks `yaml:"databricks"`
	// Tables route topics to Delta tables.
	Tables []Table `yaml:"tables"`
}

// Databricks is the SQL warehouse connection (databricks-sql-go) and where batches are staged.
type Databricks struct {
	// Host is the workspace's host name (dbc-1234abcd-5678.cloud.databricks.com); a test server
	// without TLS is given as http://host. Default: none.
	Host string `yaml:"host"`
	// Port of the workspace. Default: 443.
	Port int `yaml:"port"`
	// HTTPPath is the warehouse's HTTP path, /sql/1.0/warehouses/<id>. Default: none.
	HTTPPath string `yaml:"http_path"`
	// Token is a personal access token or a service principal's token, from the environment
	// (DDB2DELTA_SINK_DATABRICKS_TOKEN) or TokenFile, never from this file; never logged. The
	// spark dialect sends none (a Spark Thrift server with authentication NONE).
	Token     config.Secret `yaml:"token"`
	TokenFile string        `yaml:"token_file"`
	// Catalog and Schema complete table names given with fewer than three levels. Default: none.
	Catalog string `yaml:"catalog"`
	Schema  string `yaml:"schema"`
	// OffsetsTable is the table recording the Kafka offsets each warehouse table holds: a name
	// of one to three levels, completed like the tables'. Default: ddb2delta_offsets.
	OffsetsTable string `yaml:"offsets_table"`
	// Staging is where batches are staged for the warehouse to load: a Unity Catalog volume path
	// (/Volumes/<catalog>/<schema>/<volume>/<prefix>, written through the driver: the token needs
	// WRITE VOLUME), or s3://bucket/prefix (written with the sink's S3 credentials; the warehouse
	// reads it through an external location), or a directory both share (a local test server).
	// Each table stages under <staging>/<table name>. Default: none.
	Staging string `yaml:"staging"`
	// StagingRetention: staged files no batch in doubt needs are deleted after a batch; files a
	// crash left behind are deleted when older than this (at least twice StatementTimeout).
	// Default: 1h.
	StagingRetention time.Duration `yaml:"staging_retention"`
	// Dialect is what runs the SQL: databricks (COPY INTO for changelogs) or spark (open-source
	// Spark SQL: INSERT, and an insert-only MERGE to settle a batch in doubt). Default: databricks.
	Dialect string `yaml:"dialect"`
	// StatementTimeout bounds one statement. Default: 15m.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
}

// Targets are where a table is written, the default first.
var Targets = []string{"delta", "databricks"}

// Dialects are the warehouse dialects, the default first.
var Dialects = []string{"databricks", "spark"}

// UsesWarehouse reports whether a table is written or registered through the warehouse.
func (t Table) UsesWarehouse() bool { return t.Target == "databricks" || t.Register }

// Maintenance configures background compaction and vacuum.
type Maintenance struct {
	// Interval between rounds; 0 disables maintenance. Default: 10m.
	Interval time.Duration `yaml:"interval"`
	// MinFiles small files in a partition or bucket trigger its compaction. Default: 8.
	MinFiles int `yaml:"min_files"`
	// SmallFileBytes: files below this size are small. Default: 32 MiB.
	SmallFileBytes int64 `yaml:"small_file_bytes"`
	// Retention: removed and orphaned files younger than this are kept (readers of older
	// versions, commits in flight). Vacuum refuses a retention shorter than a table's
	// delta.deletedFileRetentionDuration (7 days when unset) unless ForceRetention. Default: 168h.
	Retention time.Duration `yaml:"retention"`
	// ForceRetention lets vacuum use a Retention shorter than a table's
	// delta.deletedFileRetentionDuration. Default: false.
	ForceRetention bool `yaml:"force_retention"`
	// PurgeFraction: a file whose deletion vector deletes at least this fraction of its rows is
	// rewritten without them. Default: 0.3.
	PurgeFraction float64 `yaml:"purge_fraction"`
}

// Batch is when buffered changes are committed: whichever limit is reached first.
type Batch struct {
	// MaxRows buffered for one table. Default: 100000.
	MaxRows int `yaml:"max_rows"`
	// MaxBytes of buffered record values for one table. Default: 64 MiB.
	MaxBytes int `yaml:"max_bytes"`
	// MaxAge of the oldest buffered change: the latency target. Default: 1s.
	MaxAge time.Duration `yaml:"max_age"`
}

// S3 is the sink's object store section.
type S3 struct {
	// Region is the bucket's region. Default: empty, the SDK's chain decides (AWS_REGION, …).
	Region string `yaml:"region"`
	// Endpoint overrides the S3 endpoint (versitygw, MinIO). Default: empty, AWS itself.
	Endpoint string `yaml:"endpoint"`
	// ForcePathStyle addresses buckets as endpoint/bucket instead of bucket.endpoint, as
	// versitygw and MinIO need. Default: false.
	ForcePathStyle bool `yaml:"force_path_style"`
}

// Table is one Delta table and the topics feeding it.
type Table struct {
	// Name identifies the table in metrics and logs.
	Name string `yaml:"name"`
	// Target is who writes the table: delta (the sink writes the Delta table at location) or
	// databricks (the sink loads batches through the SQL warehouse of the databricks section).
	// Default: delta.
	Target string `yaml:"target"`
	// DatabricksTable is the table's name in Unity Catalog (catalog.schema.table; fewer levels
	// are completed from databricks.catalog and databricks.schema). For target databricks, the
	// table written (default: the table's name); with register, the name registered.
	DatabricksTable string `yaml:"databricks_table"`
	// Register creates a table the sink writes directly (target delta) in Unity Catalog as an
	// external table over its location (CREATE TABLE IF NOT EXISTS … USING DELTA LOCATION),
	// with a comment and properties recording its lineage, through the warehouse. Default: false.
	Register bool `yaml:"register"`
	// Topics feed the table; several topics may feed one table and one topic several tables.
	Topics []string `yaml:"topics"`
	// Mode is changelog (append every change) or mirror (the table equals the DynamoDB table).
	Mode string `yaml:"mode"`
	// Location is a directory path or file:// URL, or s3://bucket/prefix. A relative path is
	// under TablesRoot.
	Location string `yaml:"location"`
	// PartitionBy partitions a changelog table: "" (not partitioned) or "date" (the UTC date of
	// the source change, column _date). Default: "".
	PartitionBy string `yaml:"partition_by"`
	// MirrorStrategy is how a mirror replaces rows: deletion_vectors (new rows in new files, the
	// replaced ones marked deleted; readers need Delta's deletionVectors feature) or copy_on_write
	// (the files holding replaced rows rewritten; every Delta reader). Default: deletion_vectors.
	MirrorStrategy string `yaml:"mirror_strategy"`
	// Buckets is a copy-on-write mirror's number of key-hash buckets, fixed at creation.
	// Default: 16.
	Buckets int `yaml:"buckets"`
	// TargetFileRows bounds the rows of one data file. Default: 1000000.
	TargetFileRows int `yaml:"target_file_rows"`
	// SchemaHints fix the column types of attributes, by attribute path ("amount": "decimal(12,2)",
	// "address.zip": "string", "tags": "array<string>"): string, boolean, binary, long, int,
	// double, decimal(p,s), json, array<T>, set<T>. Unhinted attributes get their DynamoDB
	// type's default column. Default: none.
	SchemaHints map[string]string `yaml:"schema_hints"`
	// Properties are table properties set when the sink creates the table (TBLPROPERTIES):
	// the Delta ones in TableProperties, and any key outside the delta. and ddb2delta.
	// namespaces (labels for users). Default: none.
	Properties map[string]string `yaml:"properties"`
}

// TableProperties are the Delta table properties a table's properties may set: those the sink
// honours. Others (column mapping, constraints, …) need what the sink does not write; deletion
// vectors follow tables[].mirror_strategy.
var TableProperties = []string{delta.ConfLogRetention, delta.ConfDeletedFileRetention, delta.ConfExpiredLogCleanup,
	delta.ConfAppendOnly, delta.ConfStatsColumns, "delta.dataSkippingNumIndexedCols", "delta.checkpointInterval", delta.ConfEnableCDF}

// AWS returns the section's SDK settings.
func (s S3) AWS() awsconf.Config { return awsconf.Config{Region: s.Region, Endpoint: s.Endpoint} }

// Modes are the table modes.
var Modes = []string{"changelog", "mirror"}

// MirrorStrategies are the mirror strategies, the default first.
var MirrorStrategies = []string{"deletion_vectors", "copy_on_write"}

// Defaults returns the sink's defaults, which point at the native stack.
func Defaults() *Settings {
	b := service.DefaultBase(":18103")
	return &Settings{
		Log: b.Log, HTTP: b.HTTP,
		Kafka:              kafkaclient.Defaults("sink"),
		SchemaRegistry:     registry.Defaults(),
		ConsumerGroup:      "ddb2delta-sink",
		TablesRoot:         "./delta",
		Batch:              Batch{MaxRows: 100000, MaxBytes: 64 << 20, MaxAge: time.Second},
		DeadLetters:        "ddb2delta.dlq.sink",
		CheckpointInterval: 10,
		Maintenance:        Maintenance{Interval: 10 * time.Minute, MinFiles: 8, SmallFileBytes: 32 << 20, Retention: 7 * 24 * time.Hour, PurgeFraction: 0.3},
	}
}

// ResolveLocation returns t's location with a relative path placed under TablesRoot.
func (s *Settings) ResolveLocation(t Table) string {
	u, err := url.Parse(t.Location)
	if err != nil || u.Scheme != "" || path.IsAbs(t.Location) {
		return t.Location
	}
	return strings.TrimSuffix(s.TablesRoot, "/") + "/" + strings.TrimPrefix(t.Location, "./")
}

// Basics implements service.Config.
func (s *Settings) Basics() service.Base { return service.Base{Log: s.Log, HTTP: s.HTTP} }

var kafkaName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// Validate implements config.Validator, reporting every problem at once.
func (s *Settings) Validate() error {
	var p config.Problems
	s.Basics().Check(&p)
	s.Kafka.Check(&p, "kafka")
	s.SchemaRegistry.Check(&p, "schema_registry")
	s.S3.AWS().Check(&p, "s3")
	if s.ConsumerGroup == "" {
		p.Add("consumer_group", "must be set")
	}
	if !validLocation(s.TablesRoot) {
		p.Add("tables_root", "must be a directory, file:// or s3:// URL, got %q", s.TablesRoot)
	}
	if len(s.Tables) == 0 {
		p.Add("tables", "must list at least one table")
	}
	if s.Batch.MaxRows < 1 || s.Batch.MaxBytes < 1 || s.Batch.MaxAge <= 0 {
		p.Add("batch", "max_rows, max_bytes and max_age must be positive, got %d, %d and %s", s.Batch.MaxRows, s.Batch.MaxBytes, s.Batch.MaxAge)
	}
	if !kafkaName.MatchString(s.DeadLetters) {
		p.Add("dead_letters", "%q is not a valid topic name", s.DeadLetters)
	}
	if m := s.Maintenance; m.Interval < 0 || m.MinFiles < 2 || m.SmallFileBytes < 1 || m.Retention < time.Hour || m.PurgeFraction <= 0 || m.PurgeFraction > 1 {
		p.Add("maintenance", "interval must be 0 or positive, min_files at least 2, small_file_bytes positive, retention at least 1h and purge_fraction in (0, 1], got %s, %d, %d, %s, %g",
			m.Interval, m.MinFiles, m.SmallFileBytes, m.Retention, m.PurgeFraction)
	}
	if s.CheckpointInterval < 1 {
		p.Add("checkpoint_interval", "must be at least 1, got %d", s.CheckpointInterval)
	}
	seen := map[string]bool{}
	warehouse := false
	for i := range s.Tables {
		t := &s.Tables[i]
		key := config.Index("tables", i)
		if t.Target == "" {
			t.Target = Targets[0]
		}
		if !slices.Contains(Targets, t.Target) {
			p.Add(key+".target", "%q is not %s", t.Target, strings.Join(Targets, " or "))
		}
		warehouse = warehouse || t.UsesWarehouse()
		if t.Buckets == 0 {
			t.Buckets = 16
		}
		if t.TargetFileRows == 0 {
			t.TargetFileRows = 1000000
		}
		if t.Buckets < 1 || t.Buckets > 4096 {
			p.Add(key+".buckets", "must be between 1 and 4096, got %d", t.Buckets)
		}
		if t.TargetFileRows < 1 {
			p.Add(key+".target_file_rows", "must be positive, got %d", t.TargetFileRows)
		}
		if t.PartitionBy != "" && (t.PartitionBy != "date" || t.Mode != "changelog") {
			p.Add(key+".partition_by", "%q: only changelog tables can be partitioned, by \"date\"", t.PartitionBy)
		}
		if t.Name == "" {
			p.Add(key+".name", "must be set")
		}
		if seen[t.Name] {
			p.Add(key+".name", "table %q is defined twice: names label metrics and must be unique", t.Name)
		}
		seen[t.Name] = true
		if len(t.Topics) == 0 {
			p.Add(key+".topics", "must list at least one topic")
		}
		for _, tp := range t.Topics {
			if !kafkaName.MatchString(tp) {
				p.Add(key+".topics", "%q is not a valid topic name", tp)
			}
		}
		if !slices.Contains(Modes, t.Mode) {
			p.Add(key+".mode", "%q is not changelog or mirror", t.Mode)
		}
		if _, err := layout.ParseHints(t.SchemaHints); err != nil {
			for _, e := range unjoin(err) {
				p.Add(key+".schema_hints", "%v", e)
			}
		}
		if t.Target == "databricks" {
			s.validateWarehouseTable(&p, key, t)
			continue
		}
		if t.Register && t.DatabricksTable == "" {
			p.Add(key+".databricks_table", "must name the table to register (catalog.schema.table)")
		}
		switch {
		case t.Mode != "mirror" && t.MirrorStrategy != "":
			p.Add(key+".mirror_strategy", "%q: only mirror tables have a strategy", t.MirrorStrategy)
		case t.Mode == "mirror" && t.MirrorStrategy == "":
			t.MirrorStrategy = MirrorStrategies[0]
		case t.Mode == "mirror" && !slices.Contains(MirrorStrategies, t.MirrorStrategy):
			p.Add(key+".mirror_strategy", "%q is not %s", t.MirrorStrategy, strings.Join(MirrorStrategies, " or "))
		}
		if !validLocation(t.Location) {
			p.Add(key+".location", "must be a directory, file:// or s3:// URL, got %q", t.Location)
		}
		for _, k := range slices.Sorted(maps.Keys(t.Properties)) {
			pk, v := key+".properties."+k, t.Properties[k]
			switch {
			case strings.HasPrefix(k, "ddb2delta."):
				p.Add(pk, "the ddb2delta. properties are the sink's own")
			case strings.HasPrefix(k, "delta.") && !slices.Contains(TableProperties, k):
				p.Add(pk, "not a property the sink can honour: it writes reader 1 / writer 2 tables; allowed: %s", strings.Join(TableProperties, ", "))
			case k == delta.ConfLogRetention || k == delta.ConfDeletedFileRetention:
				if _, err := delta.ParseInterval(v); err != nil {
					p.Add(pk, "%v", err)
				}
			case k == delta.ConfAppendOnly && v == "true" && t.Mode == "mirror":
				p.Add(pk, "a mirror updates and deletes rows; only a changelog can be append-only")
			}
		}
	}
	if warehouse {
		s.Databricks.check(&p)
	}
	return p.Err()
}

// validateWarehouseTable checks a table written through the warehouse: the keys about Delta
// files do not apply.
func (s *Settings) validateWarehouseTable(p *config.Problems, key string, t *Table) {
	if t.Location != "" {
		p.Add(key+".location", "a databricks table lives in the warehouse: name it with databricks_table, not a location")
	}
	if t.MirrorStrategy != "" {
		p.Add(key+".mirror_strategy", "%q: a databricks table is merged by the warehouse", t.MirrorStrategy)
	}
	if t.Register {
		p.Add(key+".register", "a databricks table is in Unity Catalog already")
	}
	if t.DatabricksTable == "" {
		t.DatabricksTable = t.Name
	}
	if d := s.Databricks.Staging; !strings.HasPrefix(d, "/Volumes/") && (d == "" || !validLocation(d)) {
		p.Add("databricks.staging", "must be a volume path (/Volumes/<catalog>/<schema>/<volume>/…), an s3:// URL or a directory, for table %s, got %q", t.Name, d)
	}
	for _, k := range slices.Sorted(maps.Keys(t.Properties)) {
		if strings.HasPrefix(k, "ddb2delta.") {
			p.Add(key+".properties."+k, "the ddb2delta. properties are the sink's own")
		}
	}
}

// check validates the warehouse section (when a table uses it) and applies its defaults.
func (d *Databricks) check(p *config.Problems) {
	if d.Port == 0 {
		d.Port = 443
	}
	if d.OffsetsTable == "" {
		d.OffsetsTable = "ddb2delta_offsets"
	}
	if d.Dialect == "" {
		d.Dialect = Dialects[0]
	}
	if d.StagingRetention == 0 {
		d.StagingRetention = time.Hour
	}
	if d.StatementTimeout == 0 {
		d.StatementTimeout = 15 * time.Minute
	}
	if d.Host == "" {
		p.Add("databricks.host", "must be set: a table is written or registered through the warehouse")
	}
	if !strings.HasPrefix(d.HTTPPath, "/") {
		p.Add("databricks.http_path", "must be the warehouse's HTTP path (/sql/1.0/warehouses/<id>), got %q", d.HTTPPath)
	}
	if d.Port < 1 || d.Port > 65535 {
		p.Add("databricks.port", "must be a port number, got %d", d.Port)
	}
	switch {
	case d.Token.IsSet() && d.TokenFile != "":
		p.Add("databricks.token", "set one of the token environment variable (%s_DATABRICKS_TOKEN) and databricks.token_file, not both", EnvPrefix)
	case d.Dialect != "spark" && !d.Token.IsSet() && d.TokenFile == "":
		p.Add("databricks.token", "set the token environment variable (%s_DATABRICKS_TOKEN) or databricks.token_file", EnvPrefix)
	}
	if !slices.Contains(Dialects, d.Dialect) {
		p.Add("databricks.dialect", "%q is not %s", d.Dialect, strings.Join(Dialects, " or "))
	}
	if d.StatementTimeout < time.Second || d.StagingRetention < 2*d.StatementTimeout {
		// A file staged by another replica is swept once older than the retention: it must
		// outlive the statements between its staging and its intent.
		p.Add("databricks", "statement_timeout must be at least 1s and staging_retention at least twice it, got %s and %s", d.StatementTimeout, d.StagingRetention)
	}
}

// unjoin splits an errors.Join of errors into them.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func validLocation(loc string) bool {
	u, err := url.Parse(loc)
	return loc != "" && err == nil && (u.Scheme == "" || u.Scheme == "file" || (u.Scheme == "s3" && u.Host != ""))
}
