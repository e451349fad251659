// Package settings is the enricher's configuration: its keys, defaults and validation.
package settings

import (
	"os"
	"regexp"
	"slices"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/awsconf"
	"github.com/ddb2delta/ddb2delta/services/platform/coltype"
	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
)

// EnvPrefix prefixes the environment variables that override the enricher's keys.
const EnvPrefix = "DDB2DELTA_ENRICHER"

// Settings is the enricher's configuration file.
type Settings struct {
	Log            service.LogConfig  `yaml:"log"`
	HTTP           service.HTTPConfig `yaml:"http"`
	Kafka          kafkaclient.Config `yaml:"kafka"`
	SchemaRegistry registry.Config    `yaml:"schema_registry"`
	// DynamoDB is where lookup tables live (endpoint: DynamoDB Local in dev).
	DynamoDB awsconf.Config `yaml:"dynamodb"`
	// ConsumerGroup is shared by every enricher replica. Default: ddb2delta-enricher.
	ConsumerGroup string `yaml:"consumer_group"`
	// ReplicaID names this replica; with the consumer group it forms the replica's Kafka
	// transactional id, so it must be unique per replica and stable across its restarts.
	// Default: the host name (the pod name in Kubernetes).
	ReplicaID string `yaml:"replica_id"`
	// TopicPrefix starts every topic name. Default: ddb2delta.
	TopicPrefix string `yaml:"topic_prefix"`
	// Topics configures the output topics the enricher creates when missing.
	Topics Topics `yaml:"topics"`
	// DeadLetters is the topic receiving events that fail. Default: <topic_prefix>.dlq.enricher.
	DeadLetters string `yaml:"dead_letters"`
	// StateDir holds the global tables' stores. Default: ./enricher-state.
	StateDir string `yaml:"state_dir"`
	// MaxPollRecords bounds the records processed in one transaction. Default: 5000.
	MaxPollRecords int `yaml:"max_poll_records"`
	// TransactionTimeout is how long the broker keeps a transaction of a dead replica open
	// before aborting it. Default: 30s.
	TransactionTimeout time.Duration `yaml:"transaction_timeout"`
	// GlobalTables are compacted topics materialized in full on every replica, for table joins.
	GlobalTables []GlobalTable `yaml:"global_tables"`
	// Lookups are DynamoDB tables read by key, for lookup joins.
	Lookups []Lookup `yaml:"lookups"`
	// Pipelines each read input topics and write one output topic.
	Pipelines []Pipeline `yaml:"pipelines"`
}

// Topics configures created output topics.
type Topics struct {
	// Partitions of a created output topic. Default: 6.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of a created output topic; -1: the broker's default. Default: -1.
	ReplicationFactor int16 `yaml:"replication_factor"`
}

// GlobalTable is a compacted topic of change events (e.g. another table's cdc topic) kept as a
// key → newest item table.
type GlobalTable struct {
	// Name is how joins refer to it.
	Name string `yaml:"name"`
	// Topic is read from its start on every replica.
	Topic string `yaml:"topic"`
}

// Lookup is a DynamoDB table joined by primary key.
type Lookup struct {
	// Name is how joins refer to it.
	Name string `yaml:"name"`
	// Table is the DynamoDB table name.
	Table string `yaml:"table"`
	// ConsistentRead makes BatchGetItem strongly consistent (twice the read units). Default: false.
	ConsistentRead bool `yaml:"consistent_read"`
	// Cache keeps recent answers.
	Cache Cache `yaml:"cache"`
	// RateLimit bounds BatchGetItem calls per second, per replica. Default: 50.
	RateLimit float64 `yaml:"rate_limit"`
}

// Cache is a lookup's bounded cache.
type Cache struct {
	// MaxEntries bounds the items (found or not) kept; the least recently used go first.
	// Default: 100000.
	MaxEntries int `yaml:"max_entries"`
	// TTL is how long a found item is used before it is read again. Default: 1m.
	TTL time.Duration `yaml:"ttl"`
	// NegativeTTL is how long a key found missing stays missing. Default: 10s.
	NegativeTTL time.Duration `yaml:"negative_ttl"`
}

// Pipeline is one filter, join and project flow.
type Pipeline struct {
	// Name names the output topic <prefix>.enriched.<name>.
	Name string `yaml:"name"`
	// Inputs are the topics read, e.g. ddb2delta.cdc.orders.
	Inputs []string `yaml:"inputs"`
	// Filter is a CEL bool expression; events for which it is false are dropped. It may use
	// the joins' names, and then runs after them. Default: every event passes.
	Filter string `yaml:"filter"`
	// Joins run in order; each binds its name to the matched item.
	Joins []Join `yaml:"joins"`
	// Projection is the output item's attributes. Empty: the input's images unchanged.
	Projection []Field `yaml:"projection"`
	// Key replaces the output's key (1 attribute, or 2: partition then sort key). Empty: the
	// input's key.
	Key []Field `yaml:"key"`
	// Output overrides the output topic's name.
	Output string `yaml:"output"`
}

// Join binds a matched item (or, for a left join that finds none, an empty map) to a name.
type Join struct {
	// As is the variable name expressions use for the matched item.
	As string `yaml:"as"`
	// GlobalTable names a global table to match in.
	GlobalTable string `yaml:"global_table"`
	// Lookup names a lookup to match in.
	Lookup string `yaml:"lookup"`
	// On maps each key attribute of the right side to a CEL expression over the event.
	On map[string]string `yaml:"on"`
	// Type is inner (an event without a match is dropped) or left. Default: left.
	Type string `yaml:"type"`
}

// Field is one projected attribute.
type Field struct {
	// Name is the attribute name.
	Name string `yaml:"name"`
	// Expr is a CEL expression over the event and the joins.
	Expr string `yaml:"expr"`
	// Type fixes the attribute's kind: string, number, bool, bytes, list, map, string_set,
	// number_set or any; or a Delta column type as the sink's schema hints spell it (long, int,
	// double, decimal(p,s), string, boolean, binary, json, array<T>, set<T>), which fixes the kind
	// it implies and travels in the output's schema to the sink as the column's hint. Default:
	// the expression's type when CEL knows it, else any (the schema then follows the values seen).
	Type string `yaml:"type"`
}

// FieldTypes are the kinds a projected field may declare.
var FieldTypes = []string{"string", "number", "bool", "bytes", "list", "map", "string_set", "number_set", "any"}

// Defaults returns the enricher's defaults, which point at the native stack.
func Defaults() *Settings {
	b := service.DefaultBase(":18102")
	return &Settings{
		Log: b.Log, HTTP: b.HTTP,
		Kafka:              kafkaclient.Defaults("enricher"),
		SchemaRegistry:     registry.Defaults(),
		ConsumerGroup:      "ddb2delta-enricher",
		TopicPrefix:        "ddb2delta",
		Topics:             Topics{Partitions: 6, ReplicationFactor: -1},
		StateDir:           "./enricher-state",
		MaxPollRecords:     5000,
		TransactionTimeout: 30 * time.Second,
	}
}

// Basics implements service.Config.
func (s *Settings) Basics() service.Base { return service.Base{Log: s.Log, HTTP: s.HTTP} }

// OutputTopic is the topic a pipeline writes.
func (s *Settings) OutputTopic(p Pipeline) string {
	if p.Output != "" {
		return p.Output
	}
	return s.TopicPrefix + ".enriched." + p.Name
}

var (
	kafkaName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	celName   = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	tableName = regexp.MustCompile(`^[a-zA-Z0-9._-]{3,255}$`)
	reserved  = map[string]bool{"op": true, "before": true, "after": true, "key": true, "source": true}
)

// Validate implements config.Validator, reporting every problem at once. Expressions are
// compiled later (they need the CEL environment); here their presence and names are checked.
func (s *Settings) Validate() error {
	var p config.Problems
	s.Basics().Check(&p)
	s.Kafka.Check(&p, "kafka")
	s.SchemaRegistry.Check(&p, "schema_registry")
	s.DynamoDB.Check(&p, "dynamodb")
	if s.ConsumerGroup == "" {
		p.Add("consumer_group", "must be set")
	}
	if s.ReplicaID == "" {
		s.ReplicaID, _ = os.Hostname()
	}
	if !kafkaName.MatchString(s.ReplicaID) {
		p.Add("replica_id", "%q must be 1-249 of [a-zA-Z0-9._-] (it is part of a transactional id)", s.ReplicaID)
	}
	if !kafkaName.MatchString(s.TopicPrefix) {
		p.Add("topic_prefix", "%q is not a valid Kafka topic prefix", s.TopicPrefix)
	}
	if s.DeadLetters == "" {
		s.DeadLetters = s.TopicPrefix + ".dlq.enricher"
	}
	if !kafkaName.MatchString(s.DeadLetters) {
		p.Add("dead_letters", "%q is not a valid Kafka topic name", s.DeadLetters)
	}
	if s.Topics.Partitions < 1 {
		p.Add("topics.partitions", "must be at least 1, got %d", s.Topics.Partitions)
	}
	if s.Topics.ReplicationFactor == 0 || s.Topics.ReplicationFactor < -1 {
		p.Add("topics.replication_factor", "must be -1 (broker default) or at least 1, got %d", s.Topics.ReplicationFactor)
	}
	if s.StateDir == "" && len(s.GlobalTables) > 0 {
		p.Add("state_dir", "must be set when global_tables are used")
	}
	if s.MaxPollRecords < 1 {
		p.Add("max_poll_records", "must be at least 1, got %d", s.MaxPollRecords)
	}
	if s.TransactionTimeout < time.Second || s.TransactionTimeout > 15*time.Minute {
		p.Add("transaction_timeout", "must be between 1s and 15m (the broker's default maximum), got %s", s.TransactionTimeout)
	}
	globals := map[string]bool{}
	for i, g := range s.GlobalTables {
		key := config.Index("global_tables", i)
		checkName(&p, key+".name", "global table", g.Name, globals)
		if !kafkaName.MatchString(g.Topic) {
			p.Add(key+".topic", "%q is not a valid Kafka topic name", g.Topic)
		}
	}
	lookups := map[string]bool{}
	for i := range s.Lookups {
		l := &s.Lookups[i]
		key := config.Index("lookups", i)
		checkName(&p, key+".name", "lookup", l.Name, lookups)
		if !tableName.MatchString(l.Table) {
			p.Add(key+".table", "%q is not a DynamoDB table name", l.Table)
		}
		if l.Cache.MaxEntries == 0 {
			l.Cache.MaxEntries = 100000
		}
		if l.Cache.TTL == 0 {
			l.Cache.TTL = time.Minute
		}
		if l.Cache.NegativeTTL == 0 {
			l.Cache.NegativeTTL = 10 * time.Second
		}
		if l.RateLimit == 0 {
			l.RateLimit = 50
		}
		if l.Cache.MaxEntries < 0 {
			p.Add(key+".cache.max_entries", "must be positive, got %d", l.Cache.MaxEntries)
		}
		if l.Cache.TTL < 0 || l.Cache.NegativeTTL < 0 {
			p.Add(key+".cache", "ttl and negative_ttl must be positive")
		}
		if l.RateLimit < 0 {
			p.Add(key+".rate_limit", "must be positive, got %g", l.RateLimit)
		}
	}
	if len(s.Pipelines) == 0 {
		p.Add("pipelines", "must list at least one pipeline")
	}
	seen := map[string]bool{}
	for i := range s.Pipelines {
		s.checkPipeline(&p, config.Index("pipelines", i), &s.Pipelines[i], seen, globals, lookups)
	}
	return p.Err()
}

func (s *Settings) checkPipeline(p *config.Problems, key string, pl *Pipeline, seen, globals, lookups map[string]bool) {
	if !kafkaName.MatchString(pl.Name) {
		p.Add(key+".name", "%q is not usable in a topic name", pl.Name)
	}
	if seen[pl.Name] {
		p.Add(key+".name", "pipeline %q is defined twice", pl.Name)
	}
	seen[pl.Name] = true
	if len(pl.Inputs) == 0 {
		p.Add(key+".inputs", "must list at least one topic")
	}
	for j, in := range pl.Inputs {
		if !kafkaName.MatchString(in) {
			p.Add(config.Index(key+".inputs", j), "%q is not a valid Kafka topic name", in)
		}
	}
	if pl.Output != "" && !kafkaName.MatchString(pl.Output) {
		p.Add(key+".output", "%q is not a valid Kafka topic name", pl.Output)
	}
	names := map[string]bool{}
	for j := range pl.Joins {
		j, jk := &pl.Joins[j], config.Index(key+".joins", j)
		switch {
		case !celName.MatchString(j.As):
			p.Add(jk+".as", "%q must be a name of letters, digits and _", j.As)
		case reserved[j.As]:
			p.Add(jk+".as", "%q is one of the event's own variables (op, before, after, key, source)", j.As)
		case names[j.As]:
			p.Add(jk+".as", "%q is used by two joins", j.As)
		}
		names[j.As] = true
		switch {
		case (j.GlobalTable == "") == (j.Lookup == ""):
			p.Add(jk, "set exactly one of global_table and lookup")
		case j.GlobalTable != "" && !globals[j.GlobalTable]:
			p.Add(jk+".global_table", "%q is not one of global_tables", j.GlobalTable)
		case j.Lookup != "" && !lookups[j.Lookup]:
			p.Add(jk+".lookup", "%q is not one of lookups", j.Lookup)
		}
		if len(j.On) == 0 || len(j.On) > 2 {
			p.Add(jk+".on", "must map the right side's key attributes (1 or 2) to expressions")
		}
		if j.Type == "" {
			j.Type = "left"
		}
		if j.Type != "left" && j.Type != "inner" {
			p.Add(jk+".type", "must be inner or left, got %q", j.Type)
		}
	}
	checkFields(p, key+".projection", pl.Projection)
	checkFields(p, key+".key", pl.Key)
	if len(pl.Key) > 2 {
		p.Add(key+".key", "a key has 1 or 2 attributes (partition key, then sort key), got %d", len(pl.Key))
	}
}

// checkName checks that name can be referred to from expressions and is not defined twice.
func checkName(p *config.Problems, key, what, name string, seen map[string]bool) {
	if !celName.MatchString(name) {
		p.Add(key, "%q must be a name of letters, digits and _", name)
	}
	if seen[name] {
		p.Add(key, "%s %q is defined twice", what, name)
	}
	seen[name] = true
}

func checkFields(p *config.Problems, key string, fields []Field) {
	names := map[string]bool{}
	for i := range fields {
		f, fk := &fields[i], config.Index(key, i)
		if f.Name == "" {
			p.Add(fk+".name", "must be set")
		}
		if names[f.Name] {
			p.Add(fk+".name", "%q is projected twice", f.Name)
		}
		names[f.Name] = true
		if f.Expr == "" {
			p.Add(fk+".expr", "must be set")
		}
		if f.Type != "" && !slices.Contains(FieldTypes, f.Type) {
			if t, err := coltype.Parse(f.Type); err != nil {
				p.Add(fk+".type", "%q is not one of %v nor a column type: %v", f.Type, FieldTypes, err)
			} else if t.DynamoKind() == "BS" {
				p.Add(fk+".type", "%q: the enricher makes string and number sets, not binary ones", f.Type)
			}
		}
	}
}
