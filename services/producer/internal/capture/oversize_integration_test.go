//go:build integration

package capture

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// bigNumberSet is the item of the issue: a number set of 10,000 values near 1E+125, about 40 KB
// in DynamoDB, whose canonical text (every digit) makes a change event of about 1.3 MB.
func bigNumberSet() types.AttributeValue {
	ns := make([]string, 10000)
	for i := range ns {
		ns[i] = fmt.Sprintf("1.%04dE+125", i)
	}
	return &types.AttributeValueMemberNS{Value: ns}
}

// bigBinaryMap is a map holding 395 KB of binary: about 1.05 MB as a document (base64 JSON), and
// 395 KB as a typed record.
func bigBinaryMap() types.AttributeValue {
	b := make([]byte, 395_000)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"blob": &types.AttributeValueMemberB{Value: b}}}
}

// TestOversizeChangesBecomeDeadLetters writes legal DynamoDB items whose change events exceed a
// 1 MiB message limit (Kafka's default), in both encodings: each goes to the dead-letter topic in
// its page's transaction with the whole stream record, and the changes after it on the same shard
// are published. The limit is the producer's topics.max_message_bytes.
func TestOversizeChangesBecomeDeadLetters(t *testing.T) {
	for _, enc := range []ddbavro.Encoding{ddbavro.Typed, ddbavro.Document} {
		t.Run(string(enc), func(t *testing.T) {
			f := newFixture(t)
			ctx := stacktest.Context(t, 3*time.Minute)
			cfg := f.config()
			cfg.Tables[0].Encoding = enc
			cfg.MaxMessageBytes = 1 << 20
			stop, _ := f.startWith(ctx, cfg, prometheus.NewRegistry())
			defer stop()

			f.put(ctx, item("before", 1, nil))
			numbers := item("numbers", 1, map[string]types.AttributeValue{"ns": bigNumberSet()})
			f.put(ctx, numbers)
			f.update(ctx, "numbers", 1, "7") // two images of 1.3 MB each
			binary := item("binary", 1, map[string]types.AttributeValue{"m": bigBinaryMap()})
			f.put(ctx, binary)

			f.update(ctx, "binary", 1, "3") // two images of 527 KB each as a document
			f.put(ctx, item("after", 1, nil))
			f.put(ctx, item("after", 2, nil))

			// The typed record holds the binary as bytes (395 KB per image): it fits. As a
			// document (base64 in JSON) the update's two images do not.
			wantDead := []string{"numbers/INSERT", "numbers/MODIFY"}
			published := []string{"before", "after", "after", "binary", "binary"}
			if enc == ddbavro.Document {
				wantDead = append(wantDead, "binary/MODIFY")
				published = published[:4]
			}
			events := f.consume(ctx, cfg.TopicPrefix+".cdc."+f.table, len(published))
			var got []string
			for _, e := range events {
				got = append(got, e.ev.After["pk"].(*types.AttributeValueMemberS).Value)
			}
			slices.Sort(got)
			slices.Sort(published)
			if !slices.Equal(got, published) {
				t.Fatalf("published %v, want %v", got, published)
			}

			dead := f.deadLetters(ctx, cfg.DeadLetterTopic, len(wantDead))
			var names []string
			for _, d := range dead {
				names = append(names, d.pk+"/"+d.record.EventName)
				if d.dl.ErrorClass != "too_large" || !strings.Contains(d.dl.Reason, "above the 1048576-byte message limit of topic "+cfg.TopicPrefix+".cdc."+f.table) {
					t.Errorf("%s: class %q reason %q", d.pk, d.dl.ErrorClass, d.dl.Reason)
				}
				if d.dl.Source == nil || !strings.HasSuffix(*d.dl.Source, "/"+d.record.Dynamodb.SequenceNumber) {
					t.Errorf("%s: source %v does not end with the sequence number %s", d.pk, d.dl.Source, d.record.Dynamodb.SequenceNumber)
				}
				var want map[string]types.AttributeValue
				switch d.pk {
				case "numbers":
					want = numbers
				case "binary":
					want = binary
				}
				if d.record.EventName == "MODIFY" {
					checkImage(t, d.pk+" old image", d.record.Dynamodb.OldImage, want)
					want = maps.Clone(want)
					want["amount"] = &types.AttributeValueMemberN{Value: map[string]string{"numbers": "7", "binary": "3"}[d.pk]}
				}
				checkImage(t, d.pk+" new image", d.record.Dynamodb.NewImage, want)
			}
			slices.Sort(names)
			slices.Sort(wantDead)
			if !slices.Equal(names, wantDead) {
				t.Fatalf("dead letters %v, want %v", names, wantDead)
			}
		})
	}
}

// TestLargeChangesFitTheDefaultLimit: at the default limit (8 MiB) the same items are published,
// through topics the producer created with a matching max.message.bytes.
func TestLargeChangesFitTheDefaultLimit(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 3*time.Minute)
	cfg := f.config()
	cfg.Tables[0].Encoding = ddbavro.Document
	stop, _ := f.startWith(ctx, cfg, prometheus.NewRegistry())
	defer stop()
	f.put(ctx, item("numbers", 1, map[string]types.AttributeValue{"ns": bigNumberSet()}))
	f.update(ctx, "numbers", 1, "7")
	f.put(ctx, item("binary", 1, map[string]types.AttributeValue{"m": bigBinaryMap()}))
	events := f.consume(ctx, cfg.TopicPrefix+".cdc."+f.table, 3)
	f.checkAgainstTable(ctx, events)
}

// deadLetter is a producer dead letter as a user recovering it reads it.
type deadLetter struct {
	dl     *avrov1.DeadLetter
	pk     string
	record streamRecordJSON
}

// streamRecordJSON is the GetRecords shape the dead letter's value holds.
type streamRecordJSON struct {
	EventID   string `json:"eventID"`
	EventName string `json:"eventName"`
	Dynamodb  struct {
		Keys           map[string]json.RawMessage `json:"Keys"`
		NewImage       map[string]json.RawMessage `json:"NewImage"`
		OldImage       map[string]json.RawMessage `json:"OldImage"`
		SequenceNumber string                     `json:"SequenceNumber"`
		StreamViewType string                     `json:"StreamViewType"`
	} `json:"dynamodb"`
}

// deadLetters reads want dead letters (read_committed) and decodes their payload, plain or zstd
// as the header says.
func (f *fixture) deadLetters(ctx context.Context, topic string, want int) []deadLetter {
	f.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.s.KafkaAddr), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		f.t.Fatal(err)
	}
	defer cl.Close()
	var out []deadLetter
	stacktest.Eventually(f.t, 90*time.Second, fmt.Sprintf("%d dead letters", want), func() error {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		for _, r := range cl.PollFetches(pctx).Records() {
			dl, err := serde.DecodeDeadLetter(r.Value)
			if err != nil {
				f.t.Fatalf("decoding dead letter at offset %d: %v", r.Offset, err)
			}
			if dl.Value == nil {
				f.t.Fatalf("dead letter at offset %d has no payload: %s", r.Offset, dl.Reason)
			}
			payload := *dl.Value
			var encoding string
			for _, h := range r.Headers {
				if h.Key == headerEncoding {
					encoding = string(h.Value)
				}
			}
			switch encoding {
			case encodingJSON:
			case encodingZstd:
				d, _ := zstd.NewReader(nil)
				if payload, err = d.DecodeAll(payload, nil); err != nil {
					f.t.Fatalf("decompressing dead letter at offset %d: %v", r.Offset, err)
				}
				d.Close()
			default:
				f.t.Fatalf("dead letter at offset %d: value encoding %q", r.Offset, encoding)
			}
			var d deadLetter
			d.dl = dl
			if err := json.Unmarshal(payload, &d.record); err != nil {
				f.t.Fatalf("dead letter at offset %d: payload is not JSON: %v", r.Offset, err)
			}
			var keys map[string]map[string]string
			if dl.Key == nil || json.Unmarshal(*dl.Key, &keys) != nil || keys["pk"]["S"] == "" {
				f.t.Fatalf("dead letter at offset %d: key %q is not the item's keys", r.Offset, string(ptrOr(dl.Key)))
			}
			d.pk = keys["pk"]["S"]
			out = append(out, d)
		}
		if len(out) < want {
			return fmt.Errorf("%d so far", len(out))
		}
		return nil
	})
	if len(out) != want {
		f.t.Fatalf("%d dead letters, want %d", len(out), want)
	}
	return out
}

func ptrOr(b *[]byte) []byte {
	if b == nil {
		return nil
	}
	return *b
}

// checkImage compares an image in DynamoDB JSON (as the dead letter holds it) with the item.
func checkImage(t *testing.T, what string, got map[string]json.RawMessage, want map[string]types.AttributeValue) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d attributes, want %d", what, len(got), len(want))
		return
	}
	for name, raw := range got {
		var v struct {
			S  *string
			N  *string
			NS []string
			M  map[string]struct{ B string }
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Errorf("%s.%s: %v", what, name, err)
			continue
		}
		switch w := want[name].(type) {
		case *types.AttributeValueMemberS:
			if v.S == nil || *v.S != w.Value {
				t.Errorf("%s.%s = %s, want %q", what, name, raw, w.Value)
			}
		case *types.AttributeValueMemberN:
			if v.N == nil || !sameNumber(*v.N, w.Value) {
				t.Errorf("%s.%s = %s, want %s", what, name, raw, w.Value)
			}
		case *types.AttributeValueMemberNS:
			if len(v.NS) != len(w.Value) {
				t.Errorf("%s.%s holds %d numbers, want %d", what, name, len(v.NS), len(w.Value))
				continue
			}
			wantSet := map[string]bool{}
			for _, n := range w.Value {
				c, _ := ddbavro.CanonicalNumber(n)
				wantSet[c] = true
			}
			for _, n := range v.NS {
				if c, err := ddbavro.CanonicalNumber(n); err != nil || !wantSet[c] {
					t.Errorf("%s.%s holds %s, not written", what, name, n)
					break
				}
			}
		case *types.AttributeValueMemberM:
			blob, err := base64.StdEncoding.DecodeString(v.M["blob"].B)
			if err != nil || !bytes.Equal(blob, w.Value["blob"].(*types.AttributeValueMemberB).Value) {
				t.Errorf("%s.%s.blob: %d bytes differ from the %d written (%v)", what, name, len(blob), len(w.Value["blob"].(*types.AttributeValueMemberB).Value), err)
			}
		default:
			t.Errorf("%s.%s: unexpected attribute", what, name)
		}
	}
}

func sameNumber(a, b string) bool {
	ca, err1 := ddbavro.CanonicalNumber(a)
	cb, err2 := ddbavro.CanonicalNumber(b)
	return err1 == nil && err2 == nil && ca == cb
}

// TestStalledShardFailsReadiness: while the broker refuses a shard's records (an operator set
// max.message.bytes of the table's topic and of the dead-letter topic below any record: no change
// can be stored, not even as a dead letter) the shard cannot publish: /readyz fails naming it, its
// stalled gauge is 1; once the broker takes records again the shard publishes what waited and is
// ready again.
func TestStalledShardFailsReadiness(t *testing.T) {
	f := newFixture(t)
	ctx := stacktest.Context(t, 3*time.Minute)
	cfg := f.config()
	cfg.StallTimeout = 2 * time.Second
	logs := &logRecorder{}
	f.log = slog.New(logs)
	reg := prometheus.NewRegistry()
	stop, c := f.startWith(ctx, cfg, reg)
	defer stop()
	topic := cfg.TopicPrefix + ".cdc." + f.table
	f.put(ctx, item("first", 1, nil))
	f.consume(ctx, topic, 1)
	if err := c.Ready(ctx); err != nil {
		t.Fatalf("ready after publishing: %v", err)
	}

	acl, err := kgo.NewClient(kgo.SeedBrokers(f.s.KafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer acl.Close()
	adm := kadm.NewClient(acl)
	setMaxMessage := func(v string) {
		t.Helper()
		for _, tp := range []string{topic, cfg.DeadLetterTopic} {
			resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: aws.String(v)}}, tp)
			if err == nil {
				_, err = resp.On(tp, nil)
			}
			if err != nil {
				t.Fatalf("setting max.message.bytes of %s: %v", tp, err)
			}
		}
	}
	setMaxMessage("150") // above a transaction marker (78 bytes), below any record
	f.put(ctx, item("waiting", 1, nil))
	var notReady error
	stacktest.Eventually(t, time.Minute, "readiness to fail", func() error {
		if notReady = c.Ready(ctx); notReady == nil {
			return fmt.Errorf("still ready")
		}
		return nil
	})
	if !strings.Contains(notReady.Error(), "table "+f.table+" shard ") || !strings.Contains(notReady.Error(), "1 records pending") {
		t.Fatalf("readiness error %q does not name the shard and its pending records", notReady)
	}
	stalledShards := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		total := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "ddb2delta_producer_shard_stalled" {
				for _, m := range mf.GetMetric() {
					total += m.GetGauge().GetValue()
				}
			}
		}
		return total
	}
	if n := stalledShards(); n != 1 {
		t.Fatalf("ddb2delta_producer_shard_stalled sums to %v, want 1", n)
	}

	stacktest.Eventually(t, time.Minute, "the stalled shard logged at ERROR", func() error {
		if !logs.has(slog.LevelError, "shard stalled", "MESSAGE_TOO_LARGE") {
			return fmt.Errorf("not logged yet")
		}
		return nil
	})

	setMaxMessage("8388608")
	events := f.consume(ctx, topic, 2)
	if pk := events[1].ev.After["pk"].(*types.AttributeValueMemberS).Value; pk != "waiting" {
		t.Fatalf("second event is %s", pk)
	}
	stacktest.Eventually(t, time.Minute, "readiness to recover", func() error { return c.Ready(ctx) })
	if n := stalledShards(); n != 0 {
		t.Fatalf("ddb2delta_producer_shard_stalled sums to %v after recovery, want 0", n)
	}
}

// logRecorder keeps the records logged through it.
type logRecorder struct {
	mu   sync.Mutex
	recs []string // level, message and attributes as text
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, b.String())
	return nil
}

// has reports whether a record at level holds every one of parts.
func (l *logRecorder) has(level slog.Level, parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if !strings.HasPrefix(r, level.String()+" ") {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(r, p)
		}
		if ok {
			return true
		}
	}
	return false
}
