package capture

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// Dead letters of the producer keep the whole change, so that it can be recovered: the value
// field holds the stream record as JSON in GetRecords' shape (a snapshot row: the item as
// DynamoDB JSON), and the key field the item's key attributes as DynamoDB JSON. When the JSON does
// not fit the dead-letter topic it is stored zstd-compressed; the header ddb2delta.value-encoding
// says which (json or zstd+json).
const (
	headerError    = "ddb2delta.error"
	headerTable    = "ddb2delta.table"
	headerEncoding = "ddb2delta.value-encoding"
	encodingJSON   = "json"
	encodingZstd   = "zstd+json"
)

// origin is where a change came from, and how to render it for a dead letter (only done for one).
type origin struct {
	where   string // stream ARN/shard/sequence number, or snapshot stream/segment
	eventID string
	keys    func() ([]byte, error)
	whole   func() ([]byte, error)
}

var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	return e
})

// encode returns the Kafka record of a converted event, or a dead letter when conversion (convErr)
// or encoding failed on the data, or when the record would exceed the topic's message limit. It
// fails only when the schema registry or the broker (for a topic's limit) cannot be reached: the
// caller retries, such records must not be dead-lettered. The caller holds encMu.
func (tc *tableCapture) encode(ctx context.Context, ev *ddbavro.Event, key avrov1.Key, convErr error, now time.Time, o origin) (*kgo.Record, int, error) {
	err, class := convErr, "mapping"
	if err == nil {
		var k, v []byte
		k, v, err = tc.enc.Encode(ctx, key, ev)
		var inc *serde.IncompatibleError
		if err != nil && !errors.Is(err, ddbavro.ErrNumber) && !errors.As(err, &inc) && !errors.Is(err, ddbavro.ErrMalformed) {
			return nil, 0, err
		}
		if err == nil {
			rec := &kgo.Record{Topic: tc.topic, Key: k, Value: v}
			limit, lerr := tc.c.limits.limit(ctx, tc.topic)
			if lerr != nil {
				return nil, 0, lerr
			}
			size := recordSize(rec)
			if size <= limit {
				return rec, len(k) + len(v), nil
			}
			err = fmt.Errorf("the change event encodes to %d bytes, above the %d-byte message limit of topic %s (topics.max_message_bytes, or the topic's smaller max.message.bytes)", size, limit, tc.topic)
			class = "too_large"
		}
	}
	rec, derr := tc.deadLetter(ctx, err, class, now, o)
	return rec, 0, derr
}

// deadLetter returns the dead letter of a change: the reason, where it came from, and the whole
// change (plain JSON, or compressed when that does not fit the dead-letter topic). If even the
// compressed change does not fit, the dead letter keeps its keys and origin and says so: the
// change cannot be stored in Kafka at this limit, and it is logged at ERROR.
func (tc *tableCapture) deadLetter(ctx context.Context, reason error, class string, now time.Time, o origin) (*kgo.Record, error) {
	limit, err := tc.c.limits.limit(ctx, tc.c.cfg.DeadLetterTopic)
	if err != nil {
		return nil, err
	}
	keys, kerr := o.keys()
	whole, werr := o.whole()
	if err := errors.Join(kerr, werr); err != nil {
		// Only a value of a type the SDK does not know: keep what can be kept.
		reason = fmt.Errorf("%w (the change could not be rendered as JSON: %v)", reason, err)
	}
	tc.c.metrics.deadLetters.WithLabelValues(tc.t.Name).Inc()
	encoding := encodingJSON
	build := func(value []byte, why error) (*kgo.Record, error) {
		dl := &avrov1.DeadLetter{
			Service: "producer", Reason: why.Error(), ErrorClass: class,
			Source: aws.String(o.where), FailedAtMs: now.UTC().Truncate(time.Millisecond),
		}
		if keys != nil {
			dl.Key = &keys
		}
		if value != nil {
			dl.Value = &value
		}
		b, err := tc.dlq.Encode(dl)
		if err != nil {
			return nil, err
		}
		return &kgo.Record{Topic: tc.c.cfg.DeadLetterTopic, Key: keys, Value: b, Headers: []kgo.RecordHeader{
			{Key: headerError, Value: []byte(why.Error())}, {Key: headerTable, Value: []byte(tc.t.Name)},
			{Key: headerEncoding, Value: []byte(encoding)}}}, nil
	}
	rec, err := build(whole, reason)
	if err != nil || recordSize(rec) <= limit {
		tc.logDeadLetter(o, reason, len(whole), encoding)
		return rec, err
	}
	encoding = encodingZstd
	if rec, err = build(zstdEncoder().EncodeAll(whole, nil), reason); err != nil || recordSize(rec) <= limit {
		tc.logDeadLetter(o, reason, len(whole), encoding)
		return rec, err
	}
	encoding = ""
	lost := fmt.Errorf("%w; the change itself (%d bytes of JSON, %d compressed) does not fit the %d-byte limit of topic %s and is not stored",
		reason, len(whole), len(rec.Value), limit, tc.c.cfg.DeadLetterTopic)
	tc.logDeadLetter(o, lost, len(whole), encoding)
	return build(nil, lost)
}

func (tc *tableCapture) logDeadLetter(o origin, reason error, size int, encoding string) {
	tc.c.log.Error("dead-lettering a change", "table", tc.t.Name, "origin", o.where, "event_id", o.eventID,
		"json_bytes", size, "stored_as", encoding, "error", reason)
}
