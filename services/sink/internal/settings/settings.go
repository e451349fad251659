// Package settings is the sink's configuration: its keys, defaults and validation.
package settings

import (
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/ddb2delta/ddb2delta/services/platform/awsconf"
	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
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
	// Tables route topics to Delta tables.
	Tables []Table `yaml:"tables"`
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
	// Topics feed the table; several topics may feed one table and one topic several tables.
	Topics []string `yaml:"topics"`
	// Mode is changelog (append every change) or mirror (the table equals the DynamoDB table).
	Mode string `yaml:"mode"`
	// Location is a directory path or file:// URL, or s3://bucket/prefix. A relative path is
	// under TablesRoot.
	Location string `yaml:"location"`
}

// AWS returns the section's SDK settings.
func (s S3) AWS() awsconf.Config { return awsconf.Config{Region: s.Region, Endpoint: s.Endpoint} }

// Modes are the table modes.
var Modes = []string{"changelog", "mirror"}

// Defaults returns the sink's defaults, which point at the native stack.
func Defaults() *Settings {
	b := service.DefaultBase(":18103")
	return &Settings{
		Log: b.Log, HTTP: b.HTTP,
		Kafka:          kafkaclient.Defaults("sink"),
		SchemaRegistry: registry.Defaults(),
		ConsumerGroup:  "ddb2delta-sink",
		TablesRoot:     "./delta",
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
	seen := map[string]bool{}
	for i, t := range s.Tables {
		key := config.Index("tables", i)
		if t.Name == "" {
			p.Add(key+".name", "must be set")
		}
		if seen[t.Name+"/"+t.Mode] {
			p.Add(key+".name", "table %q with mode %q is defined twice", t.Name, t.Mode)
		}
		seen[t.Name+"/"+t.Mode] = true
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
		if !validLocation(t.Location) {
			p.Add(key+".location", "must be a directory, file:// or s3:// URL, got %q", t.Location)
		}
	}
	return p.Err()
}

func validLocation(loc string) bool {
	u, err := url.Parse(loc)
	return loc != "" && err == nil && (u.Scheme == "" || u.Scheme == "file" || (u.Scheme == "s3" && u.Host != ""))
}
