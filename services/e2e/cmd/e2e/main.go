// Command e2e proves the whole pipeline on the native stack: it starts the producer, the enricher
// and the sink as separate processes of the real binaries, drives a workload against DynamoDB
// Local (inserts, updates, deletes, transactions, batch writes, items of every attribute type,
// attributes appearing mid-run, two tables joined by the enricher), waits for the pipeline to
// drain, and checks with delta-rs that
//
//   - each mirror Delta table equals a full Scan of its DynamoDB table;
//   - the changelog table holds every stream record exactly once, in per-key order;
//   - the enriched table holds exactly the expected joined rows.
//
// It measures each change's latency from the write (a timestamp the workload puts in the item) to
// the Delta commit that made it visible. The last line is
// `E2E PASS events=<n> tables=<k> mismatches=0 p50_ms=<x> p99_ms=<y>` or `E2E FAIL …`.
//
// With -chaos, a scheduler kills -9 and restarts random services while the workload runs (each
// service at least three times, some at an injected point inside a commit or transaction) and
// scales every service to two replicas and back; the last line is
// `CHAOS PASS kills=<n> events=<m> lost=0 duplicated=0 mismatches=0` or `CHAOS FAIL …`.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

func main() {
	var o options
	flag.BoolVar(&o.chaos, "chaos", false, "kill, restart and scale services during the workload")
	flag.DurationVar(&o.duration, "duration", 40*time.Second, "how long the workload writes")
	flag.IntVar(&o.rate, "rate", 40, "workload operations per second (offered load)")
	flag.IntVar(&o.writers, "writers", 8, "concurrent workload writers")
	flag.DurationVar(&o.drain, "drain", 4*time.Minute, "how long to wait for the Delta tables to match")
	flag.IntVar(&o.customers, "customers", 30, "customers the orders are joined with")
	flag.BoolVar(&o.bench, "bench", false, "also print the throughput and latency as Go benchmark lines (for make bench)")
	flag.BoolVar(&o.foreign, "foreign", true, "Spark and delta-rs also write the orders mirror (OPTIMIZE, ZORDER, DELETE, compact); not with -chaos or -bench")
	flag.BoolVar(&o.sql, "sql", true, "query every Delta table with Spark SQL and delta-rs SQL at the end (not with -chaos or -bench)")
	var so speedOptions
	var rates string
	flag.StringVar(&rates, "fullspeed", "", "comma-separated offered rates (changes/s): run make bench-e2e's full-speed benchmark instead, fed by streamsource")
	flag.DurationVar(&so.duration, "speed-duration", time.Minute, "full speed: generation at each fixed rate")
	flag.IntVar(&so.probes, "speed-probes", 3, "full speed: bisection runs for the highest rate sustained")
	flag.DurationVar(&so.probeDuration, "speed-probe-duration", 30*time.Second, "full speed: generation of each bisection run")
	flag.DurationVar(&so.drain, "speed-drain", time.Minute, "full speed: longest wait for the tables after the generation")
	flag.DurationVar(&so.sustainDrain, "speed-sustain-drain", 10*time.Second, "full speed: a rate is sustained when every change is in the changelog this soon after the generation")
	flag.DurationVar(&so.shardLife, "speed-shard-life", 40*time.Second, "full speed: how long a generated shard lives before it rolls over (every fourth splits)")
	flag.IntVar(&so.profileRate, "speed-profile-rate", 0, "full speed: take CPU and heap profiles of every service during the run at this rate")
	flag.StringVar(&so.jsonOut, "speed-json", "", "full speed: append each run as a JSON line to this file")
	peer := flag.Bool("peer", false, "run make bench-e2e's peer benchmark instead: each job by ddb2delta and by Spark on one pre-filled topic")
	var po peerOptions
	flag.StringVar(&po.jobs, "peer-jobs", "", "peer: only these jobs (comma-separated: sink-changelog, sink-mirror, enricher)")
	flag.BoolVar(&po.spark, "peer-spark", true, "peer: run Spark's side too")
	flag.StringVar(&po.reuse, "peer-reuse", "", "peer: reuse the topic of a run kept with -peer-keep (its run id)")
	flag.BoolVar(&po.keep, "peer-keep", false, "peer: keep the filled topic for -peer-reuse")
	flag.DurationVar(&po.limit, "peer-limit", 10*time.Minute, "peer: a job still running after this is measured on the rows it did")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *peer {
		if err := peerBench(ctx, po); err != nil {
			fmt.Printf("PEER-BENCH FAIL error=%q\n", err.Error())
			os.Exit(1)
		}
		return
	}
	if rates != "" {
		for _, r := range strings.Split(rates, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(r))
			if err != nil || n <= 0 {
				fmt.Printf("E2E-BENCH FAIL error=%q\n", "bad rate "+r)
				os.Exit(2)
			}
			so.rates = append(so.rates, n)
		}
		if err := fullSpeed(ctx, so); err != nil {
			fmt.Printf("E2E-BENCH FAIL error=%q\n", err.Error())
			os.Exit(1)
		}
		return
	}
	res, err := run(ctx, o)
	word := "E2E"
	if o.chaos {
		word = "CHAOS"
	}
	if err != nil {
		fmt.Printf("%s FAIL error=%q\n", word, err.Error())
		os.Exit(1)
	}
	for _, d := range res.diffs {
		fmt.Println("  " + d)
	}
	verdict := "PASS"
	if !res.ok() {
		verdict = "FAIL"
	}
	if o.bench {
		// Grouped by benchreport: the offered load is the baseline, the Delta side the variant.
		group := fmt.Sprintf("BenchmarkEndToEnd/rate%dops", o.rate)
		fmt.Printf("%s/baseline-offered 1 %.0f ns/op %.1f events/s\n", group, 1e9/res.offered, res.offered)
		fmt.Printf("%s/pipeline 1 %.0f ns/op %.1f events/s %d p50-ms %d p99-ms\n", group, 1e9/res.achieved, res.achieved,
			res.p50.Milliseconds(), res.p99.Milliseconds())
	}
	if o.chaos {
		fmt.Printf("CHAOS %s kills=%d events=%d lost=%d duplicated=%d mismatches=%d\n", verdict, res.kills, res.events, res.lost, res.duplicated, res.mismatches)
	} else {
		fmt.Printf("E2E %s events=%d tables=%d mismatches=%d p50_ms=%d p99_ms=%d\n", verdict, res.events, res.tables,
			res.mismatches+res.lost+res.duplicated+res.disorder, res.p50.Milliseconds(), res.p99.Milliseconds())
	}
	if !res.ok() {
		os.Exit(1)
	}
}

type options struct {
	chaos     bool
	duration  time.Duration
	rate      int
	writers   int
	drain     time.Duration
	customers int
	bench     bool
	foreign   bool
	sql       bool
}

type result struct {
	events, tables                         int
	mismatches, lost, duplicated, disorder int
	kills                                  int
	p50, p99                               time.Duration
	diffs                                  []string
	// offered: orders' stream records per second of the workload; achieved: changelog rows per
	// second from the first write to the last commit.
	offered, achieved float64
}

func (r *result) ok() bool { return r.mismatches+r.lost+r.duplicated+r.disorder == 0 }

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[e2e %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o options) (*result, error) {
	s, err := stacktest.Load()
	if err != nil {
		return nil, err
	}
	name := "e2e"
	if o.chaos {
		name = "chaos"
	}
	runID := fmt.Sprintf("%s%d", name, time.Now().Unix())
	dir := filepath.Join(s.RunDir, "e2e", runID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	say("run %s, logs and tables in %s", runID, dir)

	bins, err := buildServices(ctx, s.Root, filepath.Join(dir, "bin"))
	if err != nil {
		return nil, err
	}

	ddb := dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	orders, customers := runID+"_orders", runID+"_customers"
	ordersARN, err := createTable(ctx, ddb, orders, "order_id", "line")
	if err != nil {
		return nil, err
	}
	customersARN, err := createTable(ctx, ddb, customers, "customer_id", "")
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, t := range []string{orders, customers, runID + "_producer_leases"} {
			_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(t)})
		}
	}()

	deltaRoot := filepath.Join(dir, "delta")
	confs, err := writeConfigs(dir, runID, orders, customers, deltaRoot)
	if err != nil {
		return nil, err
	}
	env := []string{
		"AWS_ACCESS_KEY_ID=" + s.Env["STACK_AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY=" + s.Env["STACK_AWS_SECRET_ACCESS_KEY"],
		"AWS_REGION=" + s.Env["STACK_AWS_REGION"], "AWS_EC2_METADATA_DISABLED=true",
	}
	for _, svc := range []string{"PRODUCER", "ENRICHER", "SINK"} {
		env = append(env, "DDB2DELTA_"+svc+"_KAFKA_BROKERS="+s.KafkaAddr, "DDB2DELTA_"+svc+"_SCHEMA_REGISTRY_URL="+s.RegistryURL)
	}
	env = append(env, "DDB2DELTA_PRODUCER_DYNAMODB_ENDPOINT="+s.DynamoDBURL, "DDB2DELTA_ENRICHER_DYNAMODB_ENDPOINT="+s.DynamoDBURL)
	f := newFleet(bins, confs, env, dir)
	defer f.stopAll()
	ids := map[string]string{"producer": "producer-1", "enricher": "enricher-1", "sink": "sink-1"}
	for _, svc := range []string{"producer", "enricher", "sink"} {
		if _, err := f.start(svc, ids[svc]); err != nil {
			return nil, err
		}
	}
	if err := f.waitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	say("services ready; writing %d customers, then orders at %d/s for %s", o.customers, o.rate, o.duration)

	w := &workload{ddb: ddb, orders: orders, customers: customers, rate: o.rate, writers: o.writers, customerN: o.customers,
		seed: uint64(time.Now().UnixNano())}
	if err := w.writeCustomers(ctx); err != nil {
		return nil, err
	}
	// The enricher joins an order with its customer as the customer is when the order is
	// processed (a lookup, not a stream-stream join): the orders start once it holds them all.
	if err := f.waitMetric(ctx, "enricher", "ddb2delta_enricher_state_entries", float64(o.customers), 2*time.Minute); err != nil {
		return nil, err
	}
	// The workload runs for the duration, and in chaos mode until the whole schedule is done.
	wctx, stopWatch := context.WithCancel(ctx)
	chaosDone := make(chan error, 1)
	scheduleDone := make(chan struct{})
	foreign := o.foreign && !o.chaos && !o.bench
	foreignDone := make(chan error, 1)
	var frep *foreignReport
	switch {
	case o.chaos:
		go func() { chaosDone <- chaos(ctx, f, ids, o.duration); close(scheduleDone) }()
	case foreign: // the workload runs until the other writers are done
		go func() { chaosDone <- watch(wctx, f) }()
		go func() {
			var err error
			frep, err = foreignWriters(ctx, s, ddb, w, filepath.Join(deltaRoot, "orders_mirror"), dir)
			foreignDone <- err
			close(scheduleDone)
		}()
	default:
		close(scheduleDone)
		go func() { chaosDone <- watch(wctx, f) }()
	}
	werr := w.run(ctx, o.duration, scheduleDone)
	stopWatch()
	if err := <-chaosDone; err != nil {
		return nil, err
	}
	if foreign {
		if err := <-foreignDone; err != nil {
			return nil, fmt.Errorf("other writers of orders_mirror: %w", err)
		}
	}
	if werr != nil {
		return nil, werr
	}
	if o.chaos {
		say("kills (SIGKILL or an injected fault) per service: %v", f.kills)
		for _, svc := range []string{"producer", "enricher", "sink"} {
			if f.kills[svc] < 3 {
				return nil, fmt.Errorf("the schedule killed %s %d times, not at least 3", svc, f.kills[svc])
			}
		}
	}
	say("workload done: %v, %d orders live", w.ops, w.live)
	// Every service runs at least one replica for the drain.
	for _, svc := range []string{"producer", "enricher", "sink"} {
		if len(f.running(svc)) == 0 {
			if _, err := f.start(svc, ids[svc]); err != nil {
				return nil, err
			}
		}
	}

	streams := dynamodbstreams.NewFromConfig(s.AWSConfig(), func(o *dynamodbstreams.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	c := &checker{s: s, ddb: ddb, streams: streams, root: deltaRoot, orders: orders, customers: customers,
		ordersARN: ordersARN, customersARN: customersARN}
	deadline := time.Now().Add(o.drain)
	var res *result
	for {
		if r := f.exited(); r != nil {
			return nil, fmt.Errorf("%s exited on its own during the drain; its log:\n%s", r.id, tail(r.logPath, 40))
		}
		res, err = c.check(ctx)
		if err == nil && res.ok() {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return nil, err
			}
			break
		}
		if err != nil {
			say("not drained yet: %v", err)
		} else {
			say("not drained yet: mismatches=%d lost=%d duplicated=%d disorder=%d", res.mismatches, res.lost, res.duplicated, res.disorder)
		}
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second): // the drain's polling interval
		}
	}
	if foreign && res.ok() {
		missing, err := checkForeignLog(filepath.Join(deltaRoot, "orders_mirror"), frep)
		if err != nil {
			return nil, err
		}
		res.mismatches += len(missing)
		res.diffs = append(res.diffs, missing...)
	}
	if o.sql && !o.chaos && !o.bench && res.ok() {
		var tables []string
		for _, t := range []string{"orders_mirror", "orders_changelog", "customers_mirror", "orders_enriched"} {
			tables = append(tables, filepath.Join(deltaRoot, t))
		}
		say("querying %d tables with Spark SQL and delta-rs SQL", len(tables))
		bad, err := s.SQLConformance(ctx, tables, nil)
		if err != nil {
			return nil, err
		}
		res.mismatches += len(bad)
		res.diffs = append(res.diffs, bad...)
		if len(bad) == 0 {
			say("Spark SQL and delta-rs SQL agree with full scans on every column of %d tables", len(tables))
		}
	}
	res.offered = float64(c.ordersEvents) / w.end.Sub(w.start).Seconds()
	res.achieved = float64(c.changelogRows) / c.lastCommit.Sub(w.start).Seconds()
	res.kills = 0
	for _, k := range f.kills {
		res.kills += k
	}
	if !res.ok() {
		for _, svc := range []string{"producer", "enricher", "sink"} {
			for _, r := range f.running(svc) {
				res.diffs = append(res.diffs, fmt.Sprintf("log of %s: %s", r.id, r.logPath))
			}
		}
	}
	return res, nil
}

// chaos runs the kill and scale schedule over d: every service is killed with SIGKILL at least
// three times (once of them at an injected point inside a commit or transaction, which the
// restarted process reaches by itself), and every service is scaled to two replicas and back,
// the extra replica stopped with SIGTERM or SIGKILL.
func chaos(ctx context.Context, f *fleet, ids map[string]string, d time.Duration) error {
	type action struct {
		svc  string
		kind string // kill, fault, scale-up, scale-down
	}
	var plan []action
	for round := range 3 {
		svcs := []string{"producer", "enricher", "sink"}
		rand.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
		for _, svc := range svcs {
			kind := "kill"
			if round == 1 {
				kind = "fault"
			}
			plan = append(plan, action{svc, kind})
		}
		if round < 3 {
			plan = append(plan, action{[]string{"producer", "enricher", "sink"}[round], "scale-up"})
		}
	}
	// Scale-downs go in after their scale-ups, a few actions later.
	for i := len(plan) - 1; i >= 0; i-- {
		if plan[i].kind == "scale-up" {
			at := min(len(plan), i+3)
			plan = slices.Insert(plan, at, action{plan[i].svc, "scale-down"})
		}
	}
	faults := map[string]string{"producer": "producer-in-transaction:3", "enricher": "enricher-in-transaction:3", "sink": "after-parquet:2"}
	gap := d / time.Duration(len(plan)+1)
	for i, a := range plan {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(gap):
		}
		if r := f.exited(); r != nil {
			return fmt.Errorf("%s exited on its own; its log:\n%s", r.id, tail(r.logPath, 40))
		}
		rs := f.running(a.svc)
		say("chaos %d/%d: %s %s (%d running)", i+1, len(plan), a.kind, a.svc, len(rs))
		switch a.kind {
		case "kill", "fault":
			if len(rs) == 0 {
				continue
			}
			var victim *replica
			for _, r := range rs {
				if r.id == ids[a.svc] {
					victim = r
				}
			}
			if victim == nil {
				victim = rs[rand.IntN(len(rs))]
			}
			f.kill(victim)
			if a.kind == "kill" {
				if _, err := f.start(a.svc, victim.id); err != nil {
					return err
				}
				continue
			}
			// The restarted process kills itself at the point; then it is started once more.
			r, err := f.start(a.svc, victim.id, "DDB2DELTA_TEST_FAULT="+faults[a.svc])
			if err != nil {
				return err
			}
			select {
			case <-r.done:
				f.remove(r)
				f.mu.Lock()
				f.kills[a.svc]++
				f.mu.Unlock()
				say("chaos: %s died at its fault point", r.id)
			case <-time.After(45 * time.Second):
				say("chaos: %s did not reach its fault point; killing it", r.id)
				f.kill(r)
			case <-ctx.Done():
				f.kill(r)
			}
			if _, err := f.start(a.svc, victim.id); err != nil {
				return err
			}
		case "scale-up":
			if _, err := f.start(a.svc, a.svc+"-2"); err != nil {
				return err
			}
		case "scale-down":
			for _, r := range rs {
				if r.id == a.svc+"-2" {
					if rand.IntN(2) == 0 {
						f.stop(r)
					} else {
						f.kill(r)
					}
				}
			}
		}
	}
	return nil
}

// writeConfigs writes each service's configuration for this run.
func writeConfigs(dir, runID, orders, customers, deltaRoot string) (map[string]string, error) {
	confs := map[string]string{
		"producer": fmt.Sprintf(`topic_prefix: %[1]s
topics: {partitions: 3, replication_factor: 1}
polling: {min_interval: 20ms, max_idle: 250ms}
rescan_interval: 1s
leases: {duration: 6s}
tables:
  - {name: %[2]s, encoding: typed}
  - {name: %[3]s, encoding: typed}
`, runID, orders, customers),
		"enricher": fmt.Sprintf(`topic_prefix: %[1]s
consumer_group: %[1]s-enricher
topics: {partitions: 3, replication_factor: 1}
transaction_timeout: 10s
global_tables: [{name: customers, topic: %[1]s.cdc.%[3]s}]
pipelines:
  - name: orders_enriched
    inputs: [%[1]s.cdc.%[2]s]
    joins: [{as: customer, global_table: customers, on: {customer_id: item.customer_id}, type: inner}]
    projection:
      - {name: order_id, expr: key.order_id}
      - {name: line, expr: key.line, type: long}
      - {name: customer_id, expr: item.customer_id}
      - {name: customer_name, expr: customer.name}
      - {name: tier, expr: customer.tier}
      - {name: status, expr: item.status}
      - {name: amount, expr: item.amount, type: "decimal(20,2)"}   # the sink's column type: others rescued
`, runID, orders, customers),
		"sink": fmt.Sprintf(`consumer_group: %[1]s-sink
tables_root: %[4]s
dead_letters: %[1]s.dlq.sink
batch: {max_age: 500ms}
tables:
  - name: orders_mirror
    location: orders_mirror
    topics: [%[1]s.cdc.%[2]s]
    mode: mirror
    schema_hints: {line: long, qty: long, written_ms: long, address.inner.floor: int, address.geo: array<double>}
  - {name: orders_changelog, location: orders_changelog, topics: [%[1]s.cdc.%[2]s], mode: changelog, schema_hints: {line: long, written_ms: long}}
  - {name: customers_mirror, location: customers_mirror, topics: [%[1]s.cdc.%[3]s], mode: mirror, mirror_strategy: copy_on_write}
  - {name: orders_enriched, location: orders_enriched, topics: [%[1]s.enriched.orders_enriched], mode: mirror}
`, runID, orders, customers, deltaRoot),
	}
	return writeConfigFiles(dir, confs)
}

// writeConfigFiles writes each service's configuration as <dir>/<service>.yaml and returns the
// paths by service.
func writeConfigFiles(dir string, confs map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for svc, body := range confs {
		p := filepath.Join(dir, svc+".yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			return nil, err
		}
		out[svc] = p
	}
	return out, nil
}
