package serde

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/hamba/avro/v2"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// KeySubject and ValueSubject are the TopicNameStrategy subjects of a topic.
func KeySubject(topic string) string   { return topic + "-key" }
func ValueSubject(topic string) string { return topic + "-value" }

// TableEncoder encodes the change events of one table for one topic. For the typed encoding it
// keeps the table's model in step with the registry: a new attribute or a new kind of value
// registers a new schema version before the first record that needs it. Not safe for concurrent
// use (one per table and producer goroutine).
type TableEncoder struct {
	reg      *Registry
	topic    string
	table    string
	encoding ddbavro.Encoding

	keyID   int
	valueID int            // 0: no value schema registered yet (typed, before the first event)
	model   *ddbavro.Model // typed only
}

// NewTableEncoder registers the key schema (and, for the document encoding, the value schema) and,
// for the typed encoding, resumes from the newest value schema already registered for the topic.
func NewTableEncoder(ctx context.Context, reg *Registry, topic, table string, enc ddbavro.Encoding) (*TableEncoder, error) {
	e := &TableEncoder{reg: reg, topic: topic, table: table, encoding: enc}
	var err error
	if e.keyID, err = reg.Register(ctx, KeySubject(topic), ddbavro.SchemaJSON(ddbavro.KeySchema())); err != nil {
		return nil, err
	}
	switch enc {
	case ddbavro.Document:
		if e.valueID, err = reg.Register(ctx, ValueSubject(topic), ddbavro.SchemaJSON(ddbavro.DocumentSchema())); err != nil {
			return nil, err
		}
	case ddbavro.Typed:
		if err := e.reload(ctx); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("table %s: unknown encoding %q", table, enc)
	}
	return e, nil
}

// reload sets the model to the newest registered value schema, or a fresh one.
func (e *TableEncoder) reload(ctx context.Context) error {
	id, latest, err := e.reg.Latest(ctx, ValueSubject(e.topic))
	if err != nil {
		return err
	}
	if id == 0 {
		e.model, e.valueID = ddbavro.NewModel(e.table), 0
		return nil
	}
	m, err := ddbavro.ModelFromEnvelope(latest)
	if err != nil {
		return fmt.Errorf("subject %s holds a schema ddb2delta cannot continue: %w", ValueSubject(e.topic), err)
	}
	e.model, e.valueID = m, id
	return nil
}

// ValueSchemaID is the id of the value schema in use (0 before the first typed event).
func (e *TableEncoder) ValueSchemaID() int { return e.valueID }

// Encode returns the wire-format key and value of ev. It calls the registry only when the typed
// model must evolve.
func (e *TableEncoder) Encode(ctx context.Context, key avrov1.Key, ev *ddbavro.Event) (k, v []byte, err error) {
	k, err = ddbavro.AppendKey(AppendHeader(nil, e.keyID), key)
	if err != nil {
		return nil, nil, err
	}
	if e.encoding == ddbavro.Document {
		v, err = ddbavro.AppendDocument(AppendHeader(nil, e.valueID), ev)
		return k, v, err
	}
	if e.valueID != 0 {
		v, err = e.model.AppendTyped(AppendHeader(nil, e.valueID), ev)
		if !errors.Is(err, ddbavro.ErrEvolve) {
			return k, v, err
		}
	}
	if err := e.evolve(ctx, ev); err != nil {
		return nil, nil, err
	}
	v, err = e.model.AppendTyped(AppendHeader(nil, e.valueID), ev)
	return k, v, err
}

// Declare registers, before any event, a schema whose item record can hold item, with the Delta
// column types of columns (attribute → type as schema hints spell it) as schema hints for the
// sink: a writer that knows its items' shape up front (the enricher's projection) publishes it at
// start-up instead of with the first event. Values of item only give their kinds. Typed encoding
// only.
func (e *TableEncoder) Declare(ctx context.Context, item map[string]types.AttributeValue, columns map[string]string) error {
	if e.encoding != ddbavro.Typed {
		return fmt.Errorf("table %s: only the typed encoding declares a schema", e.table)
	}
	return e.grow(ctx, func(next *ddbavro.Model) (bool, error) {
		changed, err := next.Evolve(item)
		if next.SetColumnTypes(columns) {
			changed = true
		}
		return changed || e.valueID == 0, err
	})
}

// evolve grows a copy of the model for ev and registers it.
func (e *TableEncoder) evolve(ctx context.Context, ev *ddbavro.Event) error {
	return e.grow(ctx, func(next *ddbavro.Model) (bool, error) {
		_, err := next.EvolveFor(ev)
		return true, err
	})
}

// grow applies change to a copy of the model and, when it reports a change, registers the copy;
// the model in use changes only once the registry has accepted the new schema, so no record ever
// carries an id of a schema that does not describe it. If the registry refuses because another
// writer evolved the subject meanwhile, it restarts from the registry's newest version once.
func (e *TableEncoder) grow(ctx context.Context, change func(*ddbavro.Model) (bool, error)) error {
	for attempt := 0; ; attempt++ {
		next, err := e.cloneModel()
		if err != nil {
			return err
		}
		changed, err := change(next)
		if err != nil {
			return fmt.Errorf("table %s: %w", e.table, err)
		}
		if !changed {
			return nil
		}
		id, err := e.reg.Register(ctx, ValueSubject(e.topic), next.EnvelopeSchema())
		var inc *IncompatibleError
		if errors.As(err, &inc) && attempt == 0 {
			if err := e.reload(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("table %s: %w", e.table, err)
		}
		e.model, e.valueID = next, id
		return nil
	}
}

func (e *TableEncoder) cloneModel() (*ddbavro.Model, error) {
	s, err := avro.Parse(e.model.EnvelopeSchema())
	if err != nil {
		return nil, fmt.Errorf("table %s: copying the model: %w", e.table, err)
	}
	return ddbavro.ModelFromEnvelope(s)
}

// Decoder reads change events and keys of any table, in either encoding, from wire-format bytes.
// It is safe for concurrent use.
type Decoder struct {
	reg *Registry

	mu     sync.Mutex
	models map[int]*ddbavro.Model // typed schemas by id; nil entry: document encoding
}

// NewDecoder returns a decoder that looks schemas up in reg.
func NewDecoder(reg *Registry) *Decoder {
	return &Decoder{reg: reg, models: map[int]*ddbavro.Model{}}
}

// Decode decodes a change event written by a TableEncoder (or any writer of the same contract).
func (d *Decoder) Decode(ctx context.Context, value []byte) (*ddbavro.Event, int, error) {
	id, payload, err := SplitHeader(value)
	if err != nil {
		return nil, 0, err
	}
	d.mu.Lock()
	m, known := d.models[id]
	d.mu.Unlock()
	if !known {
		s, err := d.reg.Schema(ctx, id)
		if err != nil {
			return nil, id, err
		}
		if isDocument(s) {
			m = nil
		} else if m, err = ddbavro.ModelFromEnvelope(s); err != nil {
			return nil, id, fmt.Errorf("schema id %d: %w", id, err)
		}
		d.mu.Lock()
		d.models[id] = m
		d.mu.Unlock()
	}
	var ev *ddbavro.Event
	if m == nil {
		ev, err = ddbavro.ReadDocument(payload)
	} else {
		ev, err = m.ReadTyped(payload)
	}
	if err != nil {
		return nil, id, fmt.Errorf("schema id %d: %w", id, err)
	}
	return ev, id, nil
}

// DecodeKey decodes a record key.
func (d *Decoder) DecodeKey(key []byte) (avrov1.Key, error) {
	_, payload, err := SplitHeader(key)
	if err != nil {
		return avrov1.Key{}, err
	}
	return ddbavro.ReadKey(payload)
}

// isDocument reports whether s is the document encoding's envelope (images are maps).
func isDocument(s avro.Schema) bool {
	rs, ok := s.(*avro.RecordSchema)
	if !ok {
		return false
	}
	for _, f := range rs.Fields() {
		if f.Name() != "before" {
			continue
		}
		if u, ok := f.Type().(*avro.UnionSchema); ok && len(u.Types()) == 2 {
			return u.Types()[1].Type() == avro.Map
		}
	}
	return false
}
