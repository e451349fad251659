// Package settings is the producer's configuration: its keys, defaults and validation.
package settings

import (
	"regexp"

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
}

// Defaults returns the producer's defaults, which point at the native stack.
func Defaults() *Settings {
	b := service.DefaultBase(":18101")
	return &Settings{
		Log: b.Log, HTTP: b.HTTP,
		Kafka:          kafkaclient.Defaults("producer"),
		SchemaRegistry: registry.Defaults(),
		TopicPrefix:    "ddb2delta",
	}
}

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
	}
	return p.Err()
}
