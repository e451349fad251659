//go:build integration

package monitoring

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/e2e/proc"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestQueriesUseExportedMetrics runs the three real binaries on the stack with a small workload
// that reaches every metric family the dashboards and alerts use (a join on a global table and a
// lookup, a filtered event, an unmatched one, a record no one can decode, dead-lettered by the
// enricher and the sink), scrapes their /metrics, and checks every expression of the dashboards
// and the alert rules against what they export.
func TestQueriesUseExportedMetrics(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 10*time.Minute)
	bins := proc.Build(t, s.Root, "producer", "enricher", "sink")
	w := newWorkload(t, ctx, s)

	producer := w.start("producer", bins["producer"], fmt.Sprintf(`topic_prefix: %[1]s
topics: {partitions: 2, replication_factor: 1}
polling: {min_interval: 20ms, max_idle: 250ms}
rescan_interval: 1s
leases: {duration: 6s}
tables:
  - {name: %[2]s, encoding: typed}
  - {name: %[3]s, encoding: typed}
`, w.run, w.orders, w.customers))
	w.putCustomers()
	// The enricher restores its global table from the customers' topic before it is ready.
	producer.waitFor("customers published", `ddb2delta_producer_records_total{table="`+w.customers+`"}`, 2)

	enricher := w.start("enricher", bins["enricher"], fmt.Sprintf(`topic_prefix: %[1]s
consumer_group: %[1]s-enricher
topics: {partitions: 2, replication_factor: 1}
transaction_timeout: 10s
global_tables: [{name: customers, topic: %[1]s.cdc.%[3]s}]
lookups: [{name: profiles, table: %[3]s}]
pipelines:
  - name: orders_enriched
    inputs: [%[1]s.cdc.%[2]s]
    filter: 'item.?status.orValue("") != "draft"'
    joins:
      - {as: customer, global_table: customers, on: {customer_id: item.customer_id}, type: inner}
      - {as: profile, lookup: profiles, on: {customer_id: item.customer_id}}
    projection:
      - {name: order_id, expr: key.id}
      - {name: customer_name, expr: customer.name}
      - {name: tier, expr: 'profile.?tier.orValue("none")'}
`, w.run, w.orders, w.customers))
	sink := w.start("sink", bins["sink"], fmt.Sprintf(`consumer_group: %[1]s-sink
tables_root: %[3]s
dead_letters: %[1]s.dlq.sink
batch: {max_age: 200ms}
tables:
  - {name: orders_mirror, location: orders_mirror, topics: [%[1]s.cdc.%[2]s], mode: mirror}
  - {name: orders_enriched, location: orders_enriched, topics: [%[1]s.enriched.orders_enriched], mode: changelog}
`, w.run, w.orders, t.TempDir()))

	w.putOrders()
	w.produceUndecodable(w.run + ".cdc." + w.orders)

	producer.waitFor("orders published", `ddb2delta_producer_records_total{table="`+w.orders+`"}`, 5)
	enricher.waitFor("enriched events", "ddb2delta_enricher_events_out_total", 3)
	enricher.waitFor("a filtered event", "ddb2delta_enricher_events_filtered_total", 1)
	enricher.waitFor("an unmatched event", "ddb2delta_enricher_events_unmatched_total", 1)
	enricher.waitFor("a dead letter", `ddb2delta_enricher_dead_letters_total{class="decode"}`, 1)
	enricher.waitFor("a lookup", `ddb2delta_enricher_lookup_requests_total{result="ok"}`, 1)
	sink.waitFor("the mirror committed", `ddb2delta_sink_commit_seconds_count{table="orders_mirror"}`, 1)
	sink.waitFor("the enriched table committed", `ddb2delta_sink_end_to_end_seconds_count{table="orders_enriched"}`, 1)
	sink.waitFor("a dead letter", `ddb2delta_sink_dead_letters_total{class="decode"}`, 1)

	c := &catalog{series: map[string]map[string]bool{}, targetLabels: prometheusTargetLabels(t, s.Root)}
	c.addFamily("up", "gauge", nil) // Prometheus' own, one per target
	for _, svc := range []*service{producer, enricher, sink} {
		fams := svc.scrape()
		if _, ok := fams["ddb2delta_"+svc.name+"_build_info"]; !ok {
			t.Fatalf("%s exports no ddb2delta_%s_build_info", svc.name, svc.name)
		}
		for name, f := range fams {
			c.addFamily(name, kindOf(f), labelNames(f))
		}
	}

	t.Run("dashboards and alerts", func(t *testing.T) {
		qs, errs := allQueries(t, s.Root)
		for _, q := range qs {
			errs = append(errs, c.check(q)...)
		}
		for _, err := range errs {
			t.Error(err)
		}
		t.Logf("%d expressions checked against %d series of the three services", len(qs), len(c.series))
	})
	// The READMEs' tables are what the unit tests check the queries against: they must not
	// document a metric or a label the services do not export.
	t.Run("documented metrics", func(t *testing.T) {
		doc := documentedCatalog(t, s.Root)
		for _, name := range slices.Sorted(maps.Keys(doc.series)) {
			got, ok := c.series[name]
			if !ok {
				t.Errorf("%s is documented but not exported", name)
				continue
			}
			for l := range doc.series[name] {
				if !got[l] {
					t.Errorf("%s: label %q is documented but not exported (exported: %v)", name, l, slices.Sorted(maps.Keys(got)))
				}
			}
		}
	})
}

// workload is the run's tables and topics, and the services started on them.
type workload struct {
	t                 *testing.T
	ctx               context.Context
	s                 *stacktest.Stack
	ddb               *dynamodb.Client
	run               string // topic prefix, and the prefix of the tables' names
	orders, customers string
	dir               string
}

func newWorkload(t *testing.T, ctx context.Context, s *stacktest.Stack) *workload {
	t.Helper()
	run := fmt.Sprintf("mon%d", time.Now().UnixNano())
	w := &workload{t: t, ctx: ctx, s: s, run: run, orders: run + "_orders", customers: run + "_customers", dir: t.TempDir(),
		ddb: dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })}
	w.table(w.orders, "id")
	w.table(w.customers, "customer_id")
	t.Cleanup(func() { // the producer creates its lease table
		_, _ = w.ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(run + "_producer_leases")})
	})
	return w
}

// table creates a table keyed by key, with a stream of new and old images, deleted at the end.
func (w *workload) table(name, key string) {
	w.t.Helper()
	_, err := w.ddb.CreateTable(w.ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(key), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(key), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
		StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	})
	if err != nil {
		w.t.Fatalf("creating table %s: %v", name, err)
	}
	w.t.Cleanup(func() {
		_, _ = w.ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	})
}

func (w *workload) put(table string, item map[string]string) {
	w.t.Helper()
	av := map[string]types.AttributeValue{}
	for k, v := range item {
		av[k] = &types.AttributeValueMemberS{Value: v}
	}
	if _, err := w.ddb.PutItem(w.ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: av}); err != nil {
		w.t.Fatalf("writing %v to %s: %v", item, table, err)
	}
}

func (w *workload) putCustomers() {
	w.put(w.customers, map[string]string{"customer_id": "c1", "name": "Ada", "tier": "gold"})
	w.put(w.customers, map[string]string{"customer_id": "c2", "name": "Bob", "tier": "silver"})
}

// putOrders writes five changes: three the enricher outputs, one its filter drops (a draft) and
// one its inner join drops (no such customer).
func (w *workload) putOrders() {
	w.put(w.orders, map[string]string{"id": "o1", "customer_id": "c1", "status": "placed"})
	w.put(w.orders, map[string]string{"id": "o2", "customer_id": "c2", "status": "placed"})
	w.put(w.orders, map[string]string{"id": "o3", "customer_id": "c9", "status": "placed"})
	w.put(w.orders, map[string]string{"id": "o4", "customer_id": "c1", "status": "draft"})
	w.put(w.orders, map[string]string{"id": "o1", "customer_id": "c1", "status": "shipped"})
}

// produceUndecodable writes a record that is no change event to topic: the enricher and the sink
// each dead-letter it.
func (w *workload) produceUndecodable(topic string) {
	w.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.s.KafkaAddr))
	if err != nil {
		w.t.Fatal(err)
	}
	defer cl.Close()
	rec := &kgo.Record{Topic: topic, Key: []byte("not a key"), Value: []byte("not a change event")}
	if err := cl.ProduceSync(w.ctx, rec).FirstErr(); err != nil {
		w.t.Fatalf("producing to %s: %v", topic, err)
	}
}

// service is a running service binary.
type service struct {
	t    *testing.T
	name string
	p    *proc.Process
	base string // http://host:port
}

// start writes config as the service's configuration file, starts the binary on the stack and
// waits until it is ready.
func (w *workload) start(name, bin, config string) *service {
	w.t.Helper()
	conf := filepath.Join(w.dir, name+".yaml")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		w.t.Fatal(err)
	}
	addr := proc.FreeAddr(w.t)
	prefix := "DDB2DELTA_" + strings.ToUpper(name) + "_"
	env := append(proc.AWSEnv(w.s), prefix+"KAFKA_BROKERS="+w.s.KafkaAddr, prefix+"SCHEMA_REGISTRY_URL="+w.s.RegistryURL,
		prefix+"HTTP_LISTEN="+addr)
	switch name {
	case "producer":
		env = append(env, prefix+"DYNAMODB_ENDPOINT="+w.s.DynamoDBURL, prefix+"REPLICA_ID="+w.run+"-producer")
	case "enricher":
		env = append(env, prefix+"DYNAMODB_ENDPOINT="+w.s.DynamoDBURL, prefix+"REPLICA_ID="+w.run+"-enricher",
			prefix+"STATE_DIR="+filepath.Join(w.dir, "enricher-state"))
	}
	svc := &service{t: w.t, name: name, p: proc.Start(w.t, name, bin, []string{"-config", conf}, env), base: "http://" + addr}
	proc.WaitReady(w.t, svc.p, svc.base)
	return svc
}

// scrape reads the service's /metrics with Prometheus' text parser.
func (s *service) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	code, body, err := proc.Get(s.base + "/metrics")
	if err != nil || code != 200 {
		s.t.Fatalf("%s /metrics: %d %v", s.name, code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("%s /metrics does not parse: %v", s.name, err)
	}
	return fams
}

// waitFor polls the service's metrics until the series a selector names (a metric with optional
// label="value" matchers) add up to at least min.
func (s *service) waitFor(what, selector string, min float64) {
	s.t.Helper()
	name, want, _ := strings.Cut(strings.TrimSuffix(selector, "}"), "{")
	matchers := map[string]string{}
	for _, m := range strings.Split(want, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(m), "="); ok {
			matchers[k] = strings.Trim(v, `"`)
		}
	}
	stacktest.Eventually(s.t, 2*time.Minute, s.name+": "+what, func() error {
		if s.p.Exited() {
			s.t.Fatalf("%s exited", s.name)
		}
		fams := s.scrape()
		fam := fams[name]
		if fam == nil { // a histogram's or summary's _count: the family's sample count
			fam = fams[strings.TrimSuffix(name, "_count")]
		}
		if fam == nil {
			return fmt.Errorf("%s is not exported yet", name)
		}
		sum, n := 0.0, 0
		for _, m := range fam.GetMetric() {
			if hasLabels(m, matchers) {
				sum += value(m)
				n++
			}
		}
		if n == 0 || sum < min {
			return fmt.Errorf("%s = %g over %d series, want at least %g", selector, sum, n, min)
		}
		return nil
	})
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(want)
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Summary != nil:
		return float64(m.Summary.GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func kindOf(f *dto.MetricFamily) string {
	switch f.GetType() {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return "histogram"
	case dto.MetricType_SUMMARY:
		return "summary"
	}
	return "counter"
}

func labelNames(f *dto.MetricFamily) []string {
	set := map[string]bool{}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			set[l.GetName()] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
