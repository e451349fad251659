// Package serde writes and reads ddb2delta's Kafka records: Avro in the Confluent wire format
// (magic byte 0, 4-byte big-endian schema id, Avro binary), with schemas registered in a
// Confluent-compatible schema registry under TopicNameStrategy subjects (<topic>-key,
// <topic>-value), each set to BACKWARD_TRANSITIVE.
//
// Registration and lookups are cached: encoding or decoding with a schema id already seen makes no
// registry call.
package serde

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// ErrNotWireFormat is returned (wrapped) for bytes that do not start with the wire format header.
var ErrNotWireFormat = errors.New("not Confluent wire format")

// AppendHeader appends the wire format header for schema id.
func AppendHeader(b []byte, id int) []byte {
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, uint32(id)) //nolint:gosec // registry ids are positive int32s
}

// SplitHeader returns the schema id and the Avro payload of wire-format bytes.
func SplitHeader(b []byte) (int, []byte, error) {
	if len(b) < 5 || b[0] != 0 {
		return 0, nil, fmt.Errorf("%w: %d bytes, first byte %#x", ErrNotWireFormat, len(b), firstByte(b))
	}
	return int(binary.BigEndian.Uint32(b[1:5])), b[5:], nil
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// IncompatibleError is returned when the registry refuses a schema as incompatible with an earlier
// version of its subject. Detail names what broke, from a local check against each version.
type IncompatibleError struct {
	Subject string
	Version int    // the earlier version the schema cannot read, 0 if unknown
	Detail  string // e.g. "reader field qty is missing in writer schema and has no default"
	Message string // the registry's own message
}

func (e *IncompatibleError) Error() string {
	msg := fmt.Sprintf("schema registry refused a schema for subject %s as incompatible", e.Subject)
	if e.Version > 0 {
		msg += fmt.Sprintf(" with version %d", e.Version)
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Message != "" {
		msg += " (registry: " + e.Message + ")"
	}
	return msg
}

// Registry is a caching client of a Confluent-compatible schema registry.
type Registry struct {
	cl       *sr.Client
	log      *slog.Logger
	retryMin time.Duration // first retry wait; tests shorten it

	mu        sync.Mutex
	byID      map[int]avro.Schema
	ids       map[string]int // subject + "\x00" + schema text → id
	compatSet map[string]bool
}

// NewRegistry wraps cl.
func NewRegistry(cl *sr.Client, log *slog.Logger) *Registry {
	return &Registry{cl: cl, log: log, retryMin: 100 * time.Millisecond, byID: map[int]avro.Schema{}, ids: map[string]int{}, compatSet: map[string]bool{}}
}

// WaitReady retries until the registry answers or ctx is done, logging each failure: at start-up
// the registry may still be coming up, and a service should wait rather than crash-loop.
func (r *Registry) WaitReady(ctx context.Context) error {
	b := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for {
		_, last := r.cl.Subjects(ctx)
		if last == nil {
			return nil
		}
		r.log.Warn("schema registry not reachable yet; retrying", "error", last)
		if err := backoff.Sleep(ctx, b.Next()); err != nil {
			return fmt.Errorf("waiting for the schema registry: %w (last error: %v)", err, last)
		}
	}
}

// retryable reports whether a registry call failed for a reason that may pass: the network or a
// 5xx answer. 4xx answers (incompatible, invalid) are final.
func retryable(err error) bool {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// MaxAttempts bounds how often one registry call is tried when it fails with a network error or a
// 5xx answer: some 5xx answers are not transient (a registry bug on one schema), and the caller
// must then get the error rather than wait for ever.
const MaxAttempts = 6

// call runs fn until it succeeds, fails with a final error, runs out of attempts, or ctx is done.
func (r *Registry) call(ctx context.Context, what string, fn func() error) error {
	b := backoff.Backoff{Min: r.retryMin, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !retryable(err) {
			return err
		}
		if attempt == MaxAttempts {
			return fmt.Errorf("%s: giving up after %d attempts: %w", what, attempt, err)
		}
		r.log.Warn("schema registry call failed; retrying", "call", what, "attempt", attempt, "error", err)
		if serr := backoff.Sleep(ctx, b.Next()); serr != nil {
			return fmt.Errorf("%s: %w (last error: %v)", what, serr, err)
		}
	}
}

// Register registers schema (Avro JSON) under subject and returns its id. The first time it sees a
// subject it sets the subject's compatibility to BACKWARD_TRANSITIVE. A refusal for
// incompatibility is an *IncompatibleError naming what broke.
func (r *Registry) Register(ctx context.Context, subject, schema string) (int, error) {
	key := subject + "\x00" + schema
	r.mu.Lock()
	id, ok := r.ids[key]
	compat := r.compatSet[subject]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	parsed, err := avro.Parse(schema)
	if err != nil {
		return 0, fmt.Errorf("registering a schema for subject %s: the schema is not valid Avro: %w", subject, err)
	}
	if !compat {
		err := r.call(ctx, "setting compatibility of "+subject, func() error {
			res := r.cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatBackwardTransitive}, subject)
			if len(res) != 1 {
				return fmt.Errorf("setting compatibility of %s: %d results", subject, len(res))
			}
			return res[0].Err
		})
		if err != nil {
			return 0, fmt.Errorf("setting compatibility of subject %s to BACKWARD_TRANSITIVE: %w", subject, err)
		}
	}
	var ss sr.SubjectSchema
	err = r.call(ctx, "registering under "+subject, func() error {
		var err error
		ss, err = r.cl.CreateSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
		return err
	})
	var re *sr.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusConflict {
		// Two writers registering the same new subject at once can get a conflict from the
		// registry (Apicurio creates the subject's artifact on first registration). Registering
		// an identical schema again is idempotent, so try once more before calling it
		// incompatible.
		if serr := backoff.Sleep(ctx, r.retryMin); serr != nil {
			return 0, serr
		}
		ss, err = r.cl.CreateSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
		if errors.As(err, &re) && re.StatusCode == http.StatusConflict {
			return 0, r.explain(ctx, subject, parsed, re.Message)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("registering a schema under subject %s: %w", subject, err)
	}
	r.mu.Lock()
	r.ids[key] = ss.ID
	r.byID[ss.ID] = parsed
	r.compatSet[subject] = true
	r.mu.Unlock()
	return ss.ID, nil
}

// explain finds which earlier version of subject the refused schema cannot read, and why.
func (r *Registry) explain(ctx context.Context, subject string, refused avro.Schema, message string) error {
	e := &IncompatibleError{Subject: subject, Message: message}
	versions, err := r.cl.Schemas(ctx, subject)
	if err != nil {
		return e
	}
	compat := avro.NewSchemaCompatibility()
	for _, v := range versions {
		old, err := avro.Parse(v.Schema.Schema)
		if err != nil {
			continue
		}
		if err := compat.Compatible(refused, old); err != nil {
			e.Version, e.Detail = v.Version, err.Error()
			break
		}
	}
	return e
}

// Schema returns the parsed schema of id, from the cache or the registry.
func (r *Registry) Schema(ctx context.Context, id int) (avro.Schema, error) {
	r.mu.Lock()
	s, ok := r.byID[id]
	r.mu.Unlock()
	if ok {
		return s, nil
	}
	var raw sr.Schema
	err := r.call(ctx, fmt.Sprintf("fetching schema %d", id), func() error {
		var err error
		raw, err = r.cl.SchemaByID(ctx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fetching schema id %d: %w", id, err)
	}
	s, err = avro.Parse(raw.Schema)
	if err != nil {
		return nil, fmt.Errorf("parsing schema id %d: %w", id, err)
	}
	r.mu.Lock()
	r.byID[id] = s
	r.mu.Unlock()
	return s, nil
}

// Latest returns the newest schema registered under subject and its id, or id 0 when the subject
// does not exist.
func (r *Registry) Latest(ctx context.Context, subject string) (int, avro.Schema, error) {
	var ss sr.SubjectSchema
	err := r.call(ctx, "fetching the latest schema of "+subject, func() error {
		var err error
		ss, err = r.cl.SchemaByVersion(ctx, subject, -1)
		return err
	})
	var re *sr.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("fetching the latest schema of subject %s: %w", subject, err)
	}
	s, err := avro.Parse(ss.Schema.Schema)
	if err != nil {
		return 0, nil, fmt.Errorf("parsing the latest schema of subject %s: %w", subject, err)
	}
	r.mu.Lock()
	r.byID[ss.ID] = s
	r.ids[subject+"\x00"+ss.Schema.Schema] = ss.ID
	r.mu.Unlock()
	return ss.ID, s, nil
}

// Transient reports whether a decode or registry error may pass when retried: the registry was
// unreachable or answered 5xx. Malformed bytes, unknown schema ids and schemas outside the
// contract are final: such a record belongs in a dead-letter topic, not in a retry loop.
func Transient(err error) bool {
	if err == nil || errors.Is(err, ErrNotWireFormat) || errors.Is(err, ddbavro.ErrMalformed) || errors.Is(err, ddbavro.ErrNumber) {
		return false
	}
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return retryable(re)
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED)
}
