// Package settings is the enricher's configuration: its keys, defaults and validation.
package settings

import (
	"regexp"

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
	// ConsumerGroup is shared by every enricher replica. Default: ddb2delta-enricher.
	ConsumerGroup string `yaml:"consumer_group"`
	// TopicPrefix starts every topic name. Default: ddb2delta.
	TopicPrefix string `yaml:"topic_prefix"`
	// Pipelines each read input topics and write one enriched topic.
	Pipelines []Pipeline `yaml:"pipelines"`
}

// Pipeline is one filter/join/project flow. Filters, joins and projections arrive with the
// enricher's own issue.
type Pipeline struct {
	// Name names the output topic <prefix>.enriched.<name>.
	Name string `yaml:"name"`
	// Inputs are the topics read, e.g. ddb2delta.cdc.orders.
	Inputs []string `yaml:"inputs"`
}

// Defaults returns the enricher's defaults, which point at the native stack.
func Defaults() *Settings {
	b := service.DefaultBase(":18102")
	return &Settings{
		Log: b.Log, HTTP: b.HTTP,
		Kafka:          kafkaclient.Defaults("enricher"),
		SchemaRegistry: registry.Defaults(),
		ConsumerGroup:  "ddb2delta-enricher",
		TopicPrefix:    "ddb2delta",
	}
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
	if s.ConsumerGroup == "" {
		p.Add("consumer_group", "must be set")
	}
	if !kafkaName.MatchString(s.TopicPrefix) {
		p.Add("topic_prefix", "%q is not a valid Kafka topic prefix", s.TopicPrefix)
	}
	seen := map[string]bool{}
	for i, pl := range s.Pipelines {
		key := config.Index("pipelines", i)
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
		for _, in := range pl.Inputs {
			if !kafkaName.MatchString(in) {
				p.Add(key+".inputs", "%q is not a valid topic name", in)
			}
		}
	}
	return p.Err()
}
