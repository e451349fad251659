//go:build integration

package serde

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

func realRegistry(t *testing.T, s *stacktest.Stack) (*sr.Client, *Registry) {
	t.Helper()
	cl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry(cl, slog.New(slog.DiscardHandler))
	if err := reg.WaitReady(stacktest.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	return cl, reg
}

// TestEvolutionThroughRealRegistryAndForeignConsumer writes six successive item shapes of one table
// through the real registry and Kafka, in both encodings, then checks that:
//   - the typed encoding registered one version per shape, on a BACKWARD_TRANSITIVE subject;
//   - our decoder reads every record back exactly;
//   - a consumer with no ddb2delta code (Python confluent-kafka + fastavro) decodes every record
//     with its writer schema, and again with the newest schema as reader, and sees the same values.
func TestEvolutionThroughRealRegistryAndForeignConsumer(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry)
	ctx := stacktest.Context(t, 3*time.Minute)
	cl, reg := realRegistry(t, s)
	kc, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	adm := kadm.NewClient(kc)

	for _, enc := range []ddbavro.Encoding{ddbavro.Typed, ddbavro.Document} {
		t.Run(string(enc), func(t *testing.T) {
			topic := fmt.Sprintf("stacktest.cdc.orders_%s_%d", enc, time.Now().UnixNano())
			if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
				t.Fatalf("creating %s: %v", topic, err)
			}
			t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
			e, err := NewTableEncoder(ctx, reg, topic, "orders", enc)
			if err != nil {
				t.Fatal(err)
			}
			dec := NewDecoder(reg)
			key := mustKey(t)
			var events []*ddbavro.Event
			for i := range shapes {
				ev := shapeEvent(i)
				k, v, err := e.Encode(ctx, key, ev)
				if err != nil {
					t.Fatalf("shape %d: %v", i, err)
				}
				if err := kc.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: k, Value: v}).FirstErr(); err != nil {
					t.Fatalf("producing shape %d: %v", i, err)
				}
				got, _, err := dec.Decode(ctx, v)
				if err != nil {
					t.Fatalf("shape %d: decode: %v", i, err)
				}
				if !reflect.DeepEqual(got.After, canonicalItem(ev.After)) {
					t.Fatalf("shape %d did not round-trip through the registry:\nwant %#v\n got %#v", i, ev.After, got.After)
				}
				events = append(events, ev)
			}

			versions, err := cl.Schemas(ctx, ValueSubject(topic))
			if err != nil {
				t.Fatal(err)
			}
			wantVersions := 1
			if enc == ddbavro.Typed {
				wantVersions = len(shapes)
			}
			if len(versions) != wantVersions {
				t.Fatalf("subject %s has %d versions, want %d", ValueSubject(topic), len(versions), wantVersions)
			}
			level := cl.Compatibility(ctx, ValueSubject(topic))
			if len(level) != 1 || level[0].Err != nil || level[0].Level != sr.CompatBackwardTransitive {
				t.Fatalf("subject compatibility = %+v, want BACKWARD_TRANSITIVE", level)
			}

			// The writer's view of each record, and the newest schema's view of every record.
			latestID, latestSchema, err := reg.Latest(ctx, ValueSubject(topic))
			if err != nil || latestID == 0 {
				t.Fatalf("latest schema: %d, %v", latestID, err)
			}
			var latest *ddbavro.Model
			if enc == ddbavro.Typed {
				if latest, err = ddbavro.ModelFromEnvelope(latestSchema); err != nil {
					t.Fatal(err)
				}
			}
			writers := make([]*ddbavro.Model, len(versions))
			for i, v := range versions {
				if enc == ddbavro.Typed {
					ws, err := reg.Schema(ctx, v.ID)
					if err != nil {
						t.Fatal(err)
					}
					if writers[i], err = ddbavro.ModelFromEnvelope(ws); err != nil {
						t.Fatal(err)
					}
				}
			}
			raw, err := cl.SchemaByVersion(ctx, ValueSubject(topic), -1)
			if err != nil {
				t.Fatal(err)
			}
			schemaFile := filepath.Join(t.TempDir(), "latest.avsc")
			if err := os.WriteFile(schemaFile, []byte(raw.Schema.Schema), 0o600); err != nil {
				t.Fatal(err)
			}

			for _, mode := range []struct {
				name  string
				args  []string
				model func(i int) *ddbavro.Model
			}{
				{"writer schema", nil, func(i int) *ddbavro.Model {
					if enc == ddbavro.Document {
						return nil
					}
					return writers[i]
				}},
				{"newest schema as reader", []string{"--reader-schema", schemaFile}, func(int) *ddbavro.Model { return latest }},
			} {
				t.Run(mode.name, func(t *testing.T) {
					got := s.ForeignConsume(t, topic, len(events), mode.args...)
					for i, ev := range events {
						want := map[string]any{"key": keyPlain(), "value": mode.model(i).Plain(ev)}
						if !sameJSON(t, want, got[i]) {
							w, _ := json.Marshal(want)
							g, _ := json.Marshal(got[i])
							t.Fatalf("record %d as the foreign consumer sees it:\n got %s\nwant %s", i, g, w)
						}
					}
				})
			}
		})
	}
}

func keyPlain() map[string]any {
	return map[string]any{"partition_key": map[string]any{"name": "id", "s": "order-1", "n": nil, "b": nil}, "sort_key": nil}
}

// sameJSON compares two values by their JSON, numbers as exact decimal text.
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	norm := func(v any) any {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// TestIncompatibleSchemaIsRefusedWithTheField registers a schema and then one that adds a required
// field: the real registry refuses it and the error names the field.
func TestIncompatibleSchemaIsRefusedWithTheField(t *testing.T) {
	s := stacktest.Require(t, stacktest.Registry)
	ctx := stacktest.Context(t, time.Minute)
	_, reg := realRegistry(t, s)
	subject := fmt.Sprintf("stacktest.incompatible.%d-value", time.Now().UnixNano())
	v1 := `{"type":"record","name":"Item","namespace":"stacktest","fields":[{"name":"pk","type":"string"}]}`
	if _, err := reg.Register(ctx, subject, v1); err != nil {
		t.Fatal(err)
	}
	bad := `{"type":"record","name":"Item","namespace":"stacktest","fields":[{"name":"pk","type":"string"},{"name":"qty","type":"long"}]}`
	_, err := reg.Register(ctx, subject, bad)
	var inc *IncompatibleError
	if !errors.As(err, &inc) {
		t.Fatalf("Register = %v, want an *IncompatibleError", err)
	}
	if inc.Subject != subject || inc.Version != 1 || !strings.Contains(inc.Detail, "qty") {
		t.Fatalf("error does not name the subject, version and field: %v", err)
	}
	t.Logf("refusal as reported: %v", err)
}
