//go:build integration

package proc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// changeFeed writes change events of one table to its topic the way the producer does (typed
// encoding, keyed by the primary key), so enricher tests control exactly what arrives.
type changeFeed struct {
	t     *testing.T
	topic string
	table string
	enc   *serde.TableEncoder
	cl    *kgo.Client

	mu  sync.Mutex
	seq int64
}

func newChangeFeed(t *testing.T, ctx context.Context, s *stacktest.Stack, reg *serde.Registry, topic, table string, partitions int32, compact bool) *changeFeed {
	t.Helper()
	adm := kadm.NewClient(kafkaClient(t, s))
	configs := map[string]*string{}
	if compact {
		configs["cleanup.policy"] = aws.String("compact")
	}
	if _, err := adm.CreateTopic(ctx, partitions, 1, configs, topic); err != nil {
		t.Fatal(err)
	}
	enc, err := serde.NewTableEncoder(ctx, reg, topic, table, ddbavro.Typed)
	if err != nil {
		t.Fatal(err)
	}
	return &changeFeed{t: t, topic: topic, table: table, enc: enc, cl: kafkaClient(t, s)}
}

// put writes one change of the item with key id=<id>; it returns the change's event id.
func (f *changeFeed) put(ctx context.Context, op, id string, before, after map[string]types.AttributeValue) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	eventID := fmt.Sprintf("%s-%d", f.table, f.seq)
	ev := &ddbavro.Event{Op: op, Before: before, After: after, TsMs: time.Now().UTC().Truncate(time.Millisecond),
		Source: avrov1.Source{Table: f.table, SequenceNumber: aws.String(strconv.FormatInt(1000+f.seq, 10)), EventID: aws.String(eventID),
			ApproximateCreationMs: time.Now().UTC().Truncate(time.Millisecond), StreamViewType: "NEW_AND_OLD_IMAGES"}}
	k, v, err := f.enc.Encode(context.WithoutCancel(ctx), avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(id)}}, ev)
	if err != nil {
		f.t.Errorf("encoding a change of %s: %v", id, err) // Errorf: put also runs in load goroutines
		return eventID
	}
	// Not cancelled midway: a put that started is in the topic when it returns, so a load that
	// stops can count exactly what it wrote.
	if err := f.cl.ProduceSync(context.WithoutCancel(ctx), &kgo.Record{Topic: f.topic, Key: k, Value: v}).FirstErr(); err != nil {
		f.t.Errorf("producing to %s: %v", f.topic, err)
	}
	return eventID
}

// raw writes bytes that are no change event at all.
func (f *changeFeed) raw(ctx context.Context, key, value []byte) {
	if err := f.cl.ProduceSync(ctx, &kgo.Record{Topic: f.topic, Key: key, Value: value}).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
}

func kafkaClient(t *testing.T, s *stacktest.Stack, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(s.KafkaAddr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testRegistry(t *testing.T, s *stacktest.Stack) *serde.Registry {
	t.Helper()
	srcl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	return serde.NewRegistry(srcl, slog.New(slog.DiscardHandler))
}

// enricherRun starts enricher replicas of one configuration.
type enricherRun struct {
	t     *testing.T
	s     *stacktest.Stack
	bin   string
	conf  string
	addrs map[*Process]string
}

func newEnricherRun(t *testing.T, s *stacktest.Stack, body string) *enricherRun {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "enricher.yaml")
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &enricherRun{t: t, s: s, bin: Build(t, s.Root, "enricher")["enricher"], conf: conf, addrs: map[*Process]string{}}
}

// start runs replica id (its own state directory, kept across restarts of the same id).
func (r *enricherRun) start(id string) *Process {
	r.t.Helper()
	addr := FreeAddr(r.t)
	state := filepath.Join(os.TempDir(), fmt.Sprintf("enricher-%s-%s", strings.ReplaceAll(r.t.Name(), "/", "_"), id))
	r.t.Cleanup(func() { os.RemoveAll(state) })
	p := Start(r.t, id, r.bin, []string{"-config", r.conf}, append(AWSEnv(r.s),
		"DDB2DELTA_ENRICHER_KAFKA_BROKERS="+r.s.KafkaAddr, "DDB2DELTA_ENRICHER_SCHEMA_REGISTRY_URL="+r.s.RegistryURL,
		"DDB2DELTA_ENRICHER_DYNAMODB_ENDPOINT="+r.s.DynamoDBURL, "DDB2DELTA_ENRICHER_HTTP_LISTEN="+addr,
		"DDB2DELTA_ENRICHER_REPLICA_ID="+id, "DDB2DELTA_ENRICHER_STATE_DIR="+state))
	r.addrs[p] = addr
	return p
}

// committed waits until replica p has committed more than n input records, and returns the count.
func (r *enricherRun) committed(p *Process, n float64) float64 {
	r.t.Helper()
	var got float64
	stacktest.Eventually(r.t, 2*time.Minute, p.Name+" commits", func() error {
		if p.Exited() {
			r.t.Fatalf("%s exited:\n%s", p.Name, p.Output())
		}
		if got = metricSum(r.t, r.addrs[p], "ddb2delta_enricher_records_committed_total"); got <= n {
			return fmt.Errorf("%s committed %g records", p.Name, got)
		}
		return nil
	})
	return got
}
