// Package avrov1 holds version 1 of ddb2delta's wire contracts: the Avro schemas (the .avsc files
// beside this one, embedded) and the Go types generated from them by `make gen`.
//
// The contracts themselves are documented in proto/README.md.
package avrov1

import (
	"embed"
	"fmt"
	"sync"

	"github.com/hamba/avro/v2"
)

//go:generate go run ../internal/codegen/cmd -out types_gen.go

// Files holds the .avsc files, in the order they must be parsed (later files refer to names
// defined by earlier ones).
//
//go:embed *.avsc
var Files embed.FS

// FileOrder lists the schema files so that each refers only to names defined before it.
var FileOrder = []string{"attribute_value.avsc", "source.avsc", "key.avsc", "change_event.avsc", "dead_letter.avsc"}

// Schemas are the parsed contracts.
type Schemas struct {
	AttributeValue *avro.RecordSchema
	Source         *avro.RecordSchema
	Key            *avro.RecordSchema
	ChangeEvent    *avro.RecordSchema // the document encoding's envelope
	DeadLetter     *avro.RecordSchema
}

// Parse parses every schema file into one name cache, so cross-file references resolve.
func Parse() (*Schemas, error) {
	cache := &avro.SchemaCache{}
	parsed := make(map[string]*avro.RecordSchema, len(FileOrder))
	for _, name := range FileOrder {
		raw, err := Files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		s, err := avro.ParseBytesWithCache(raw, "", cache)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", name, err)
		}
		rs, ok := s.(*avro.RecordSchema)
		if !ok {
			return nil, fmt.Errorf("parsing %s: top-level schema is a %s, want a record", name, s.Type())
		}
		parsed[name] = rs
	}
	return &Schemas{
		AttributeValue: parsed["attribute_value.avsc"],
		Source:         parsed["source.avsc"],
		Key:            parsed["key.avsc"],
		ChangeEvent:    parsed["change_event.avsc"],
		DeadLetter:     parsed["dead_letter.avsc"],
	}, nil
}

// MustParse returns the parsed schemas, parsed once. The schemas are compiled in, so a failure is a
// build defect caught by this package's tests.
func MustParse() *Schemas {
	parseOnce.Do(func() { parsed, parseErr = Parse() })
	if parseErr != nil {
		panic(parseErr)
	}
	return parsed
}

var (
	parseOnce sync.Once
	parsed    *Schemas
	parseErr  error
)
