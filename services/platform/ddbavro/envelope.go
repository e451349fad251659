package ddbavro

import (
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/hamba/avro/v2"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
)

// Event is one change of one item, independent of its encoding.
type Event struct {
	Before map[string]types.AttributeValue // nil when absent
	After  map[string]types.AttributeValue // nil when absent
	Op     string                          // c, u, d or r
	TsMs   time.Time                       // when the producer published it
	Source avrov1.Source
	// ColumnTypes are the Delta column types its writer declared for top-level attributes (the
	// enricher's projection), from the typed schema: schema hints for the sink. Nil when none.
	ColumnTypes map[string]string
}

// Ops are the valid values of Event.Op.
var Ops = map[string]bool{"c": true, "u": true, "d": true, "r": true}

// Encoding is how item images are written.
type Encoding string

// The two item encodings.
const (
	Typed    Encoding = "typed"
	Document Encoding = "document"
)

// AppendTyped appends ev in the typed encoding with model m. It returns an error wrapping
// ErrEvolve when m cannot hold the images yet: call m.Evolve on them, register the new
// EnvelopeSchema, and append again.
func (m *Model) AppendTyped(b []byte, ev *Event) ([]byte, error) {
	if !Ops[ev.Op] {
		return nil, fmt.Errorf("change event op %q is not c, u, d or r", ev.Op)
	}
	var err error
	for _, img := range []map[string]types.AttributeValue{ev.Before, ev.After} {
		if img == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 2)
		if b, err = m.appendItem(b, img); err != nil {
			if errors.Is(err, errEvolve) {
				return nil, ErrEvolve
			}
			return nil, err
		}
	}
	b = appendString(b, ev.Op)
	b = appendLong(b, ev.TsMs.UnixMilli())
	return appendSource(b, &ev.Source), nil
}

// ErrEvolve is returned by AppendTyped when the model must evolve before it can encode an event.
var ErrEvolve = errEvolve

// EvolveFor evolves m with the images of ev and reports whether the schema changed.
func (m *Model) EvolveFor(ev *Event) (bool, error) {
	changed := false
	for _, img := range []map[string]types.AttributeValue{ev.Before, ev.After} {
		if img == nil {
			continue
		}
		c, err := m.Evolve(img)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	return changed, nil
}

// ReadTyped decodes a typed change event written with model m (the writer's model, from the
// schema id the record carries).
func (m *Model) ReadTyped(data []byte) (*Event, error) {
	ev, err := readEnvelope(data, m.readItem)
	if ev != nil {
		ev.ColumnTypes = m.ColumnTypes()
	}
	return ev, err
}

// ReadDocument decodes a document-encoded change event. It uses this package's bounds-checked
// reader rather than hamba/avro's, which sizes arrays from the counts in the input: a crafted
// record could make it allocate without limit (found by FuzzDecodeHostileBytes).
func ReadDocument(data []byte) (*Event, error) {
	return readEnvelope(data, func(r *reader) map[string]types.AttributeValue { return readGenericMap(r, 1) })
}

// readEnvelope decodes the change-event envelope; readImage decodes one item image.
func readEnvelope(data []byte, readImage func(*reader) map[string]types.AttributeValue) (*Event, error) {
	r := &reader{b: data}
	ev := &Event{}
	for i, img := range []*map[string]types.AttributeValue{&ev.Before, &ev.After} {
		if r.unionIndex(2) == 1 {
			*img = readImage(r)
		}
		if r.err != nil {
			return nil, fmt.Errorf("decoding %s image: %w", [2]string{"before", "after"}[i], r.err)
		}
	}
	ev.Op = r.str()
	ev.TsMs = time.UnixMilli(r.long()).UTC()
	readSource(r, &ev.Source)
	if r.err == nil && r.off != len(r.b) {
		r.fail("%d bytes after the event", len(r.b)-r.off)
	}
	if r.err != nil {
		return nil, fmt.Errorf("decoding change event: %w", r.err)
	}
	if !Ops[ev.Op] {
		return nil, fmt.Errorf("decoding change event: %w: op %q", ErrMalformed, ev.Op)
	}
	return ev, nil
}

func appendOptString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, 0)
	}
	return appendString(append(b, 2), *s)
}

func readOptString(r *reader) *string {
	if r.unionIndex(2) == 0 {
		return nil
	}
	s := r.str()
	return &s
}

func appendSource(b []byte, s *avrov1.Source) []byte {
	b = appendString(b, s.Table)
	b = appendString(b, s.TableArn)
	b = appendOptString(b, s.StreamArn)
	b = appendOptString(b, s.ShardID)
	b = appendOptString(b, s.SequenceNumber)
	b = appendLong(b, s.ApproximateCreationMs.UnixMilli())
	b = appendOptString(b, s.EventID)
	b = appendString(b, s.StreamViewType)
	b = appendBool(b, s.TTLDelete)
	return appendBool(b, s.Snapshot)
}

func readSource(r *reader, s *avrov1.Source) {
	s.Table = r.str()
	s.TableArn = r.str()
	s.StreamArn = readOptString(r)
	s.ShardID = readOptString(r)
	s.SequenceNumber = readOptString(r)
	s.ApproximateCreationMs = time.UnixMilli(r.long()).UTC()
	s.EventID = readOptString(r)
	s.StreamViewType = r.str()
	s.TTLDelete = r.boolean()
	s.Snapshot = r.boolean()
}

// ToDocumentEvent converts ev to the document encoding's generated struct.
func ToDocumentEvent(ev *Event) (*avrov1.ChangeEvent, error) {
	if !Ops[ev.Op] {
		return nil, fmt.Errorf("change event op %q is not c, u, d or r", ev.Op)
	}
	out := &avrov1.ChangeEvent{Op: ev.Op, TsMs: ev.TsMs, Source: ev.Source}
	for _, img := range []struct {
		in   map[string]types.AttributeValue
		out  **map[string]avrov1.AttributeValue
		name string
	}{{ev.Before, &out.Before, "before."}, {ev.After, &out.After, "after."}} {
		if img.in == nil {
			continue
		}
		g, err := ItemToGenerated(img.in, img.name)
		if err != nil {
			return nil, err
		}
		*img.out = &g
	}
	return out, nil
}

// FromDocumentEvent converts the document encoding's struct back to an Event.
func FromDocumentEvent(d *avrov1.ChangeEvent) (*Event, error) {
	ev := &Event{Op: d.Op, TsMs: d.TsMs.UTC(), Source: d.Source}
	ev.Source.ApproximateCreationMs = ev.Source.ApproximateCreationMs.UTC()
	var err error
	if d.Before != nil {
		if ev.Before, err = ItemFromGenerated(*d.Before, "before."); err != nil {
			return nil, err
		}
	}
	if d.After != nil {
		if ev.After, err = ItemFromGenerated(*d.After, "after."); err != nil {
			return nil, err
		}
	}
	if !Ops[ev.Op] {
		return nil, fmt.Errorf("decoding change event: %w: op %q", ErrMalformed, ev.Op)
	}
	return ev, nil
}

// DocumentSchema is the document encoding's change-event schema.
func DocumentSchema() avro.Schema { return contracts.ChangeEvent }

// AppendDocument appends ev in the document encoding. It writes straight from DynamoDB values,
// with map keys sorted so that one event has one encoding; MarshalDocument produces the same
// records through the generated structs and hamba/avro.
func AppendDocument(b []byte, ev *Event) ([]byte, error) {
	if !Ops[ev.Op] {
		return nil, fmt.Errorf("change event op %q is not c, u, d or r", ev.Op)
	}
	var err error
	for _, img := range []struct {
		item map[string]types.AttributeValue
		name string
	}{{ev.Before, "before."}, {ev.After, "after."}} {
		if img.item == nil {
			b = append(b, 0)
			continue
		}
		if b, err = appendGenericMap(append(b, 2), img.item, img.name); err != nil {
			return nil, err
		}
	}
	b = appendString(b, ev.Op)
	b = appendLong(b, ev.TsMs.UnixMilli())
	return appendSource(b, &ev.Source), nil
}

// appendGenericMap appends an Avro map of AttributeValue with sorted keys; prefix starts the
// attribute paths in errors.
func appendGenericMap(b []byte, m map[string]types.AttributeValue, prefix string) ([]byte, error) {
	if len(m) > 0 {
		b = appendLong(b, int64(len(m)))
		var err error
		for _, k := range sortedAttrs(m) {
			b = appendString(b, k)
			if b, err = appendGeneric(b, m[k]); err != nil {
				return nil, inAttr(prefix+k, err)
			}
		}
	}
	return append(b, 0), nil
}

// MarshalDocument appends ev in the document encoding through the generated structs and
// hamba/avro (the path a user of the generated Go types takes).
func MarshalDocument(b []byte, ev *Event) ([]byte, error) {
	d, err := ToDocumentEvent(ev)
	if err != nil {
		return nil, err
	}
	out, err := avro.Marshal(contracts.ChangeEvent, d)
	if err != nil {
		return nil, fmt.Errorf("encoding change event: %w", err)
	}
	return append(b, out...), nil
}

// UnmarshalDocument decodes a document-encoded change event into the generated struct with
// hamba/avro. Only for trusted input (benchmarks, tests): see ReadDocument.
func UnmarshalDocument(data []byte) (*avrov1.ChangeEvent, error) {
	var d avrov1.ChangeEvent
	if err := avro.Unmarshal(contracts.ChangeEvent, data, &d); err != nil {
		return nil, fmt.Errorf("decoding change event: %w: %v", ErrMalformed, err)
	}
	return &d, nil
}
