package warehouse

import (
	"maps"
	"slices"
	"strings"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
)

// Lineage properties: where a table's rows come from, on every table the warehouse knows from
// the sink (written through it, or registered).
const (
	PropSourceTable    = "ddb2delta.source.table"
	PropSourceTableARN = "ddb2delta.source.table_arn"
	PropStreamARN      = "ddb2delta.source.stream_arn"
	PropTopics         = "ddb2delta.kafka.topics"
	PropVersion        = "ddb2delta.version"
)

// Lineage is a table's source: its DynamoDB table and stream (learnt from the events) and the
// Kafka topics feeding it.
type Lineage struct {
	Mode      string
	Topics    []string
	Table     string // DynamoDB table name
	TableARN  string
	StreamARN string
	changed   bool
}

// observe learns the source from an event, and reports whether it changed (a stream disabled and
// enabled again has a new ARN; a snapshot read carries no stream).
func (l *Lineage) observe(ev *ddbavro.Event) {
	s := ev.Source
	if s.Table != "" && s.Table != l.Table {
		l.Table, l.changed = s.Table, true
	}
	if s.TableArn != "" && s.TableArn != l.TableARN {
		l.TableARN, l.changed = s.TableArn, true
	}
	if s.StreamArn != nil && *s.StreamArn != "" && *s.StreamArn != l.StreamARN {
		l.StreamARN, l.changed = *s.StreamArn, true
	}
}

// load takes what a table's properties record.
func (l *Lineage) load(props map[string]string) {
	l.Table, l.TableARN, l.StreamARN = props[PropSourceTable], props[PropSourceTableARN], props[PropStreamARN]
	l.changed = false
}

// Properties are the lineage as table properties (only what is known).
func (l *Lineage) Properties() map[string]string {
	p := map[string]string{PropMode: l.Mode, PropTopics: strings.Join(slices.Sorted(slices.Values(l.Topics)), ","), PropVersion: service.Version}
	maps.DeleteFunc(p, func(_, v string) bool { return v == "" })
	for k, v := range map[string]string{PropSourceTable: l.Table, PropSourceTableARN: l.TableARN, PropStreamARN: l.StreamARN} {
		if v != "" {
			p[k] = v
		}
	}
	return p
}

// Comment is the table's comment.
func (l *Lineage) Comment() string {
	src := "a DynamoDB table"
	if l.Table != "" {
		src = "DynamoDB table " + l.Table
	}
	what := "every change of " + src
	if l.Mode == "mirror" {
		what = "a mirror of " + src + " (one row per item)"
	}
	return "ddb2delta: " + what + ", from Kafka topics " + strings.Join(slices.Sorted(slices.Values(l.Topics)), ", ")
}
