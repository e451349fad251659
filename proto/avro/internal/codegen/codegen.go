// Package codegen generates the Go types of the Avro contracts with hamba/avro's generator.
package codegen

import (
	"bytes"
	"fmt"
	"go/format"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/gen"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
)

// Generate returns the source of types_gen.go for package avrov1.
func Generate() ([]byte, error) {
	s, err := avrov1.Parse()
	if err != nil {
		return nil, err
	}
	g := gen.NewGenerator("avrov1", map[string]gen.TagStyle{"json": gen.Snake}, gen.WithFullName(false))
	for _, rs := range []avro.Schema{s.AttributeValue, s.Source, s.Key, s.ChangeEvent, s.DeadLetter} {
		g.Parse(rs)
	}
	var buf bytes.Buffer
	if err := g.Write(&buf); err != nil {
		return nil, fmt.Errorf("generating avro types: %w", err)
	}
	src, err := format.Source(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting generated avro types: %w", err)
	}
	return src, nil
}
