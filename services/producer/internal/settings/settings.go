// Package settings is the producer's configuration: its keys, defaults and validation.
package settings

import (
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/awsconf"
	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
)

// EnvPrefix prefixes the environment variables that override the producer's keys.
const EnvPrefix = "DDB2DELTA_PRODUCER"

// Settings is the producer's configuration file.
type Settings struct {
	Log            service.LogConfig  `yaml:"log"`
	HTTP           service.HTTPConfig `yaml:"http"`
	Kafka          kafkaclient.Config `yaml:"kafka"`
	SchemaRegistry registry.Config    `yaml:"schema_registry"`
	// DynamoDB is where the tables and their streams live (endpoint: DynamoDB Local in dev).
	DynamoDB awsconf.Config `yaml:"dynamodb"`
	// TopicPrefix starts every topic name: <prefix>.cdc.<table>. Default: ddb2delta.
	TopicPrefix string `yaml:"topic_prefix"`
	// Topics are created when missing with these settings.
	Topics Topics `yaml:"topics"`
	// Polling paces GetRecords on each shard.
	Polling Polling `yaml:"polling"`
	// RescanInterval is how often the producer lists each stream's shards, to pick up new ones
	// (splits) within seconds. Default: 5s.
	RescanInterval time.Duration `yaml:"rescan_interval"`
	// ReplicaID names this replica in leases, checkpoints and logs; unique per replica. Default:
	// the host name (the pod name in Kubernetes).
	ReplicaID string `yaml:"replica_id"`
	// Leases share shards between replicas.
	Leases Leases `yaml:"leases"`
	// Discovery paces shard listing.
	Discovery Discovery `yaml:"discovery"`
	// StallTimeout is how long a shard may hold records it cannot publish before /readyz fails and
	// the shard is logged at ERROR. Default: 2m.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// Tables are the DynamoDB tables whose changes are published.
	Tables []Table `yaml:"tables"`
}

// Table is one DynamoDB table to stream.
type Table struct {
	// Name is the DynamoDB table name.
	Name string `yaml:"name"`
	// StreamARN pins one stream; empty means the table's current stream.
	StreamARN string `yaml:"stream_arn"`
	// Encoding of item images: typed (an inferred Avro record) or document (lossless generic).
	// Default: typed.
	Encoding string `yaml:"encoding"`
	// Snapshot loads the table's existing items (op r) alongside its stream.
	Snapshot Snapshot `yaml:"snapshot"`
	// StartPosition is where the table's streams are first read: trim_horizon (every change the
	// stream still holds, up to 24 hours) or latest (changes from the moment the producer first
	// captures the table). Default: trim_horizon.
	StartPosition string `yaml:"start_position"`
}

// Snapshot configures a table's initial load: a parallel Scan whose rows are published as op=r
// events, resumable after a crash.
type Snapshot struct {
	// Enabled turns the snapshot on. It runs once per (table, id): a finished snapshot is never
	// repeated. Default: false.
	Enabled bool `yaml:"enabled"`
	// ID names the snapshot; set a new one to take another snapshot. Default: initial.
	ID string `yaml:"id"`
	// Segments is the number of parallel Scan segments, shared between replicas like shards.
	// Fixed when the snapshot starts. Default: 4.
	Segments int `yaml:"segments"`
	// PageSize is the Scan Limit (items per page; each page is one Kafka transaction). Default: 500.
	PageSize int32 `yaml:"page_size"`
	// CapacityShare is the share of the table's read capacity the snapshot may consume, in (0, 1].
	// Default: 0.25.
	CapacityShare float64 `yaml:"capacity_share"`
	// OnDemandCapacity is the read capacity (units/s) assumed for an on-demand table with no
	// maximum set. Default: 4000.
	OnDemandCapacity float64 `yaml:"on_demand_capacity"`
	// AfterStreamGap takes a snapshot (named <id>-gap-<stream label>) whenever the table's stream
	// was disabled and enabled again, before the new stream is published: the changes made while
	// no stream was enabled are in no stream. Independent of Enabled. Default: false.
	AfterStreamGap bool `yaml:"after_stream_gap"`
	// EventuallyConsistent scans with eventually consistent reads (half the cost). Default: false;
	// see the README for what consistent reads guarantee.
	EventuallyConsistent bool `yaml:"eventually_consistent"`
}

// Topics holds the settings of the topics the producer creates.
type Topics struct {
	// Partitions of each <prefix>.cdc.<table> topic. Default: 6.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of every topic created; -1 takes the broker's default. Default: -1.
	ReplicationFactor int16 `yaml:"replication_factor"`
	// Checkpoints is the compacted topic holding each shard's committed position. Default:
	// <prefix>.producer.checkpoints.
	Checkpoints string `yaml:"checkpoints"`
	// CheckpointPartitions of the checkpoint topic when the producer creates it; never change it
	// on an existing topic. Default: 12.
	CheckpointPartitions int32 `yaml:"checkpoint_partitions"`
	// DeadLetters receives records that cannot be converted or do not fit a Kafka message, with
	// the whole stream record. Default: <prefix>.dlq.producer.
	DeadLetters string `yaml:"dead_letters"`
	// MaxMessageBytes is the largest Kafka record the producer writes: its client's batch limit
	// and the max.message.bytes of the topics it creates. A change event above it (or above an
	// existing topic's smaller max.message.bytes) goes to the dead-letter topic. Default: 8 MiB,
	// which holds two 400 KB images in either encoding except number-dense items (see README).
	MaxMessageBytes int `yaml:"max_message_bytes"`
}

// Leases configures the DynamoDB lease table.
type Leases struct {
	// Table is the lease table, created when missing (on-demand capacity). Default:
	// <topic_prefix>_producer_leases.
	Table string `yaml:"table"`
	// Duration after which the leases of a replica whose heartbeat stopped are taken over. Default: 10s.
	Duration time.Duration `yaml:"duration"`
}

// Discovery paces how the replica that lists a table's shards calls DescribeStream.
type Discovery struct {
	// DescribeStreamRate bounds this replica's DescribeStream calls per second (AWS allows about
	// 10 per second for the whole account). Default: 5.
	DescribeStreamRate float64 `yaml:"describe_stream_rate"`
	// FullListingInterval is how often a stream's shards are listed in full; in between only the
	// children of finished shards are asked for. Default: 10m.
	FullListingInterval time.Duration `yaml:"full_listing_interval"`
}

// Polling paces GetRecords calls on one shard.
type Polling struct {
	// MinInterval separates two calls on one shard (Streams allows about 5/s). Default: 200ms.
	MinInterval time.Duration `yaml:"min_interval"`
	// MaxIdle is the longest wait between calls while a shard is idle. Default: 1s.
	MaxIdle time.Duration `yaml:"max_idle"`
}

// Defaults returns the producer's defaults, which point at the native stack.
func Defaults() *Settings {
	b := service.DefaultBase(":18101")
	return &Settings{
		Log: b.Log, HTTP: b.HTTP,
		Kafka:          kafkaclient.Defaults("producer"),
		SchemaRegistry: registry.Defaults(),
		TopicPrefix:    "ddb2delta",
		Topics:         Topics{Partitions: 6, CheckpointPartitions: 12, ReplicationFactor: -1, MaxMessageBytes: DefaultMaxMessageBytes},
		StallTimeout:   2 * time.Minute,
		Polling:        Polling{MinInterval: 200 * time.Millisecond, MaxIdle: time.Second},
		RescanInterval: 5 * time.Second,
		Leases:         Leases{Duration: 10 * time.Second},
		Discovery:      Discovery{DescribeStreamRate: 5, FullListingInterval: 10 * time.Minute},
	}
}

// DefaultMaxMessageBytes is topics.max_message_bytes' default: 8 MiB.
const DefaultMaxMessageBytes = 8 << 20

// Basics implements service.Config.
func (s *Settings) Basics() service.Base { return service.Base{Log: s.Log, HTTP: s.HTTP} }

// tableName is DynamoDB's rule for table names.
var tableName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{3,255}$`)

// TopicPrefixPattern is the characters Kafka allows in topic names.
var TopicPrefixPattern = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,200}$`)

// Validate implements config.Validator, reporting every problem at once.
func (s *Settings) Validate() error {
	var p config.Problems
	s.Basics().Check(&p)
	s.Kafka.Check(&p, "kafka")
	s.SchemaRegistry.Check(&p, "schema_registry")
	s.DynamoDB.Check(&p, "dynamodb")
	if !TopicPrefixPattern.MatchString(s.TopicPrefix) {
		p.Add("topic_prefix", "%q is not a valid Kafka topic prefix", s.TopicPrefix)
	}
	if len(s.Tables) == 0 {
		p.Add("tables", "must list at least one table")
	}
	if s.Topics.Checkpoints == "" {
		s.Topics.Checkpoints = s.TopicPrefix + ".producer.checkpoints"
	}
	if s.Topics.DeadLetters == "" {
		s.Topics.DeadLetters = s.TopicPrefix + ".dlq.producer"
	}
	if s.Leases.Table == "" {
		s.Leases.Table = strings.NewReplacer(".", "_", "-", "_").Replace(s.TopicPrefix) + "_producer_leases"
	}
	if !tableName.MatchString(s.Leases.Table) {
		p.Add("leases.table", "%q is not a DynamoDB table name", s.Leases.Table)
	}
	if s.Leases.Duration < time.Second {
		p.Add("leases.duration", "must be at least 1s, got %s", s.Leases.Duration)
	}
	if s.ReplicaID == "" {
		s.ReplicaID, _ = os.Hostname()
	}
	if s.Topics.CheckpointPartitions < 1 {
		p.Add("topics.checkpoint_partitions", "must be at least 1, got %d", s.Topics.CheckpointPartitions)
	}
	if s.Topics.Partitions < 1 {
		p.Add("topics.partitions", "must be at least 1, got %d", s.Topics.Partitions)
	}
	if s.Topics.ReplicationFactor == 0 || s.Topics.ReplicationFactor < -1 {
		p.Add("topics.replication_factor", "must be -1 (broker default) or at least 1, got %d", s.Topics.ReplicationFactor)
	}
	if s.Polling.MinInterval <= 0 || s.Polling.MaxIdle < s.Polling.MinInterval {
		p.Add("polling", "min_interval must be positive and max_idle at least min_interval, got %s and %s", s.Polling.MinInterval, s.Polling.MaxIdle)
	}
	if m := s.Topics.MaxMessageBytes; m < 64<<10 || m > 1<<30 {
		p.Add("topics.max_message_bytes", "must be between 65536 and 1073741824 (1 GiB), got %d", m)
	}
	if s.StallTimeout < time.Second {
		p.Add("stall_timeout", "must be at least 1s, got %s", s.StallTimeout)
	}
	if s.Discovery.DescribeStreamRate <= 0 || s.Discovery.DescribeStreamRate > 10 {
		p.Add("discovery.describe_stream_rate", "must be in (0, 10] (AWS's account-wide limit is about 10/s), got %g", s.Discovery.DescribeStreamRate)
	}
	if s.Discovery.FullListingInterval < time.Second {
		p.Add("discovery.full_listing_interval", "must be at least 1s, got %s", s.Discovery.FullListingInterval)
	}
	if s.RescanInterval <= 0 {
		p.Add("rescan_interval", "must be positive, got %s", s.RescanInterval)
	}
	seen := map[string]bool{}
	for i := range s.Tables {
		t := &s.Tables[i]
		key := config.Index("tables", i)
		if !tableName.MatchString(t.Name) {
			p.Add(key+".name", "%q is not a DynamoDB table name", t.Name)
		}
		if seen[t.Name] {
			p.Add(key+".name", "table %q is listed twice", t.Name)
		}
		seen[t.Name] = true
		if t.Encoding == "" {
			t.Encoding = "typed"
		}
		if t.Encoding != "typed" && t.Encoding != "document" {
			p.Add(key+".encoding", "%q is not typed or document", t.Encoding)
		}
		t.Snapshot.check(&p, key+".snapshot")
		if t.StartPosition == "" {
			t.StartPosition = "trim_horizon"
		}
		if t.StartPosition != "trim_horizon" && t.StartPosition != "latest" {
			p.Add(key+".start_position", "%q is not trim_horizon or latest", t.StartPosition)
		}
	}
	return p.Err()
}

// snapshotID is what a snapshot id may hold: it becomes part of lease keys and checkpoint keys.
var snapshotID = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)

// check fills the defaults of a table's snapshot section and reports its problems.
func (s *Snapshot) check(p *config.Problems, key string) {
	if s.ID == "" {
		s.ID = "initial"
	}
	if s.Segments == 0 {
		s.Segments = 4
	}
	if s.PageSize == 0 {
		s.PageSize = 500
	}
	if s.CapacityShare == 0 {
		s.CapacityShare = 0.25
	}
	if s.OnDemandCapacity == 0 {
		s.OnDemandCapacity = 4000
	}
	if !snapshotID.MatchString(s.ID) {
		p.Add(key+".id", "%q must be 1 to 64 letters, digits, '.', '_' or '-'", s.ID)
	}
	if s.Segments < 1 || s.Segments > 1000000 {
		p.Add(key+".segments", "must be between 1 and 1000000 (DynamoDB's limit), got %d", s.Segments)
	}
	if s.PageSize < 1 {
		p.Add(key+".page_size", "must be positive, got %d", s.PageSize)
	}
	if s.CapacityShare <= 0 || s.CapacityShare > 1 {
		p.Add(key+".capacity_share", "must be in (0, 1], got %g", s.CapacityShare)
	}
	if s.OnDemandCapacity <= 0 {
		p.Add(key+".on_demand_capacity", "must be positive, got %g", s.OnDemandCapacity)
	}
}
