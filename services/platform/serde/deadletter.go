package serde

import (
	"context"
	"fmt"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// DeadLetterEncoder writes io.ddb2delta.dlq.DeadLetter records for one dead-letter topic.
type DeadLetterEncoder struct {
	id int
}

// NewDeadLetterEncoder registers the dead-letter schema under topic's value subject.
func NewDeadLetterEncoder(ctx context.Context, reg *Registry, topic string) (*DeadLetterEncoder, error) {
	id, err := reg.Register(ctx, ValueSubject(topic), ddbavro.SchemaJSON(avrov1.MustParse().DeadLetter))
	if err != nil {
		return nil, err
	}
	return &DeadLetterEncoder{id: id}, nil
}

// Encode returns the wire-format value of dl.
func (e *DeadLetterEncoder) Encode(dl *avrov1.DeadLetter) ([]byte, error) {
	b, err := avro.Marshal(avrov1.MustParse().DeadLetter, dl)
	if err != nil {
		return nil, fmt.Errorf("encoding dead letter: %w", err)
	}
	return append(AppendHeader(nil, e.id), b...), nil
}

// Record returns the dead letter of a Kafka record that service could not handle, for topic: its
// reason and class, its origin (topic, partition, offset) and its original key and value bytes;
// the header ddb2delta.error repeats the reason.
func (e *DeadLetterEncoder) Record(topic, service, class string, reason error, r *kgo.Record) (*kgo.Record, error) {
	part := int(r.Partition)
	dl := &avrov1.DeadLetter{Service: service, Reason: reason.Error(), ErrorClass: class,
		Topic: &r.Topic, Partition: &part, Offset: &r.Offset, FailedAtMs: time.Now().UTC().Truncate(time.Millisecond)}
	if r.Key != nil {
		k := r.Key
		dl.Key = &k
	}
	if r.Value != nil {
		v := r.Value
		dl.Value = &v
	}
	b, err := e.Encode(dl)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: topic, Key: r.Key, Value: b,
		Headers: []kgo.RecordHeader{{Key: "ddb2delta.error", Value: []byte(reason.Error())}}}, nil
}

// DecodeDeadLetter decodes a dead letter written by any ddb2delta service (the schema is fixed, so
// no registry lookup is needed).
func DecodeDeadLetter(value []byte) (*avrov1.DeadLetter, error) {
	_, payload, err := SplitHeader(value)
	if err != nil {
		return nil, err
	}
	var dl avrov1.DeadLetter
	if err := avro.Unmarshal(avrov1.MustParse().DeadLetter, payload, &dl); err != nil {
		return nil, fmt.Errorf("decoding dead letter: %w: %v", ddbavro.ErrMalformed, err)
	}
	return &dl, nil
}
