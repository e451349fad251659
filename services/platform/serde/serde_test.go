package serde

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

type fakeRegistry struct {
	*srfake.Registry
	requests atomic.Int64
	failNext atomic.Int64 // answer this many requests with 503
}

func newFake(t *testing.T) (*fakeRegistry, *Registry) {
	t.Helper()
	f := &fakeRegistry{Registry: srfake.New()}
	t.Cleanup(f.Close)
	f.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		f.requests.Add(1)
		if f.failNext.Load() > 0 {
			f.failNext.Add(-1)
			http.Error(w, `{"error_code":50301,"message":"try later"}`, http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	cl, err := sr.NewClient(sr.URLs(f.URL()))
	if err != nil {
		t.Fatal(err)
	}
	return f, NewRegistry(cl, slog.New(slog.DiscardHandler))
}

func TestWireHeader(t *testing.T) {
	b := AppendHeader([]byte{}, 258)
	id, payload, err := SplitHeader(append(b, 'x'))
	if err != nil || id != 258 || string(payload) != "x" {
		t.Fatalf("SplitHeader = %d %q %v", id, payload, err)
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {1, 0, 0, 0, 1, 2}} {
		if _, _, err := SplitHeader(bad); !errors.Is(err, ErrNotWireFormat) {
			t.Errorf("SplitHeader(%v) = %v", bad, err)
		}
	}
}

func TestEncodersEvolveAndDecode(t *testing.T) {
	for _, enc := range []ddbavro.Encoding{ddbavro.Typed, ddbavro.Document} {
		t.Run(string(enc), func(t *testing.T) {
			f, reg := newFake(t)
			ctx := context.Background()
			topic := "ddb2delta.cdc.orders"
			e, err := NewTableEncoder(ctx, reg, topic, "orders", enc)
			if err != nil {
				t.Fatal(err)
			}
			dec := NewDecoder(reg)
			key, err := ddbavro.KeyOf(shapes[0], "id", "")
			if err != nil {
				t.Fatal(err)
			}
			var firstKey []byte
			ids := map[int]bool{}
			for i := range shapes {
				ev := shapeEvent(i)
				k, v, err := e.Encode(ctx, key, ev)
				if err != nil {
					t.Fatalf("shape %d: %v", i, err)
				}
				if firstKey == nil {
					firstKey = k
				} else if string(k) != string(firstKey) {
					t.Fatalf("shape %d: the item's key bytes changed", i)
				}
				got, id, err := dec.Decode(ctx, v)
				if err != nil {
					t.Fatalf("shape %d: decode: %v", i, err)
				}
				ids[id] = true
				if !reflect.DeepEqual(got.After, canonicalItem(ev.After)) || !reflect.DeepEqual(got.Before, canonicalItem(ev.Before)) || got.Op != ev.Op || got.Source.EventID == nil {
					t.Fatalf("shape %d did not round-trip:\nwant %#v\n got %#v", i, ev.After, got.After)
				}
				gotKey, err := dec.DecodeKey(k)
				if err != nil || *gotKey.PartitionKey.S != "order-1" {
					t.Fatalf("key = %+v, %v", gotKey, err)
				}
			}
			wantVersions := 1
			if enc == ddbavro.Typed {
				wantVersions = len(shapes)
			}
			if len(ids) != wantVersions {
				t.Fatalf("%d value schema ids used, want %d", len(ids), wantVersions)
			}

			// The hot path: shapes already known make no registry call, to encode or to decode.
			before := f.requests.Load()
			for range 100 {
				for i := range shapes {
					_, v, err := e.Encode(ctx, key, shapeEvent(i))
					if err != nil {
						t.Fatal(err)
					}
					if _, _, err := dec.Decode(ctx, v); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := f.requests.Load() - before; got != 0 {
				t.Fatalf("%d registry requests on the hot path, want 0", got)
			}

			// A restarted encoder resumes from the registry's newest version: no new version.
			e2, err := NewTableEncoder(ctx, reg, topic, "orders", enc)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := e2.Encode(ctx, key, shapeEvent(len(shapes)-1)); err != nil {
				t.Fatal(err)
			}
			if e2.ValueSchemaID() != e.ValueSchemaID() {
				t.Fatalf("restarted encoder uses schema %d, want %d", e2.ValueSchemaID(), e.ValueSchemaID())
			}
		})
	}
}

// TestRegisteredSchemasKeepDefaults guards against registering hamba's canonical form, which drops
// field defaults (and with them every reader's ability to resolve older records).
func TestRegisteredSchemasKeepDefaults(t *testing.T) {
	f, reg := newFake(t)
	ctx := context.Background()
	e, err := NewTableEncoder(ctx, reg, "t", "t", ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Encode(ctx, mustKey(t), shapeEvent(1)); err != nil {
		t.Fatal(err)
	}
	cl, _ := sr.NewClient(sr.URLs(f.URL()))
	for _, subject := range []string{KeySubject("t"), ValueSubject("t")} {
		ss, err := cl.SchemaByVersion(ctx, subject, -1)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(ss.Schema.Schema, `"default":null`) || !strings.Contains(ss.Schema.Schema, `"doc":`) {
			t.Errorf("subject %s was registered without defaults or docs:\n%s", subject, ss.Schema.Schema)
		}
	}
}

// TestWaitReadyWaitsForTheRegistry: at start-up a service waits out an unavailable registry.
func TestWaitReadyWaitsForTheRegistry(t *testing.T) {
	f, reg := newFake(t)
	f.failNext.Store(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if n := f.requests.Load(); n != 4 {
		t.Fatalf("%d requests, want 3 failures and 1 success", n)
	}
	f.failNext.Store(1 << 30)
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if err := reg.WaitReady(short); err == nil || !strings.Contains(err.Error(), "waiting for the schema registry") || !strings.Contains(err.Error(), "last error: try later") {
		t.Fatalf("WaitReady on a registry that never answers = %v", err)
	}
}

func TestRegistryRetriesTransientFailures(t *testing.T) {
	f, reg := newFake(t)
	f.failNext.Store(3)
	id, err := reg.Register(context.Background(), "t-key", ddbavro.SchemaJSON(ddbavro.KeySchema()))
	if err != nil || id == 0 {
		t.Fatalf("Register after transient 503s = %d, %v", id, err)
	}
	if err := reg.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryGivesUpOnPersistentFailure(t *testing.T) {
	f, reg := newFake(t)
	reg.retryMin = time.Millisecond
	f.failNext.Store(1000)
	_, err := reg.Register(context.Background(), "t-key", ddbavro.SchemaJSON(ddbavro.KeySchema()))
	if err == nil || !strings.Contains(err.Error(), "giving up after 6 attempts") {
		t.Fatalf("Register against a failing registry = %v", err)
	}
	if n := f.requests.Load(); n != MaxAttempts {
		t.Fatalf("%d requests, want %d", n, MaxAttempts)
	}
}

func TestRegisterRejectsInvalidSchemaLocally(t *testing.T) {
	_, reg := newFake(t)
	_, err := reg.Register(context.Background(), "t-value", `{"type":"record","name":"X","fields":[{"name":"a","type":"nope"}]}`)
	if err == nil || !strings.Contains(err.Error(), "not valid Avro") {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodeReportsUnknownSchemaAndBadBytes(t *testing.T) {
	_, reg := newFake(t)
	dec := NewDecoder(reg)
	ctx := context.Background()
	if _, _, err := dec.Decode(ctx, []byte("plain json")); !errors.Is(err, ErrNotWireFormat) {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := dec.Decode(ctx, AppendHeader(nil, 424242)); err == nil || !strings.Contains(err.Error(), "424242") {
		t.Fatalf("unknown schema id: %v", err)
	}
	e, err := NewTableEncoder(ctx, reg, "t", "t", ddbavro.Document)
	if err != nil {
		t.Fatal(err)
	}
	_, v, err := e.Encode(ctx, mustKey(t), shapeEvent(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dec.Decode(ctx, v[:len(v)-3]); !errors.Is(err, ddbavro.ErrMalformed) {
		t.Fatalf("truncated record: %v", err)
	}
}

func mustKey(t *testing.T) avrov1.Key {
	t.Helper()
	k, err := ddbavro.KeyOf(shapes[0], "id", "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("x: %w", ErrNotWireFormat), false},
		{fmt.Errorf("x: %w", ddbavro.ErrMalformed), false},
		{&sr.ResponseError{StatusCode: 404}, false},
		{fmt.Errorf("fetching schema id 9: %w", &sr.ResponseError{StatusCode: 503}), true},
		{fmt.Errorf("fetching: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{errors.New("schema id 3: not a change event"), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
