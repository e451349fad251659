package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/e2e/streamsource"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// The peer benchmark (make bench-e2e, after the full-speed runs): one topic pre-filled by the real
// producer with about 1,000,000 typed change events (half inserts, then one update of every item)
// from streamsource, then each job done alone on it, first by ddb2delta's service, then by Apache
// Spark Structured Streaming (pyspark + delta-spark, Spark's own Kafka and Avro connectors) doing
// what a Databricks team would write instead:
//
//   - sink-changelog: append every event to a Delta table;
//   - sink-mirror: upsert and delete by key into a Delta table, the newest sequence number winning
//     (foreachBatch + MERGE with a sequence guard);
//   - enricher: filter and project every event into another topic, Avro in the Confluent wire
//     format.
//
// Each job's figure is rows per CPU-second of its process (Spark's JVM, measured from its query's
// start, so the JVM's start-up is not counted against it); the line is
//
//	PEER-BENCH job=<job> ddb2delta_rows_per_cpu_s=<x> spark_rows_per_cpu_s=<x> ratio=<x>
//
// The fill also measures the producer alone reading a backlog (SERVICE-BENCH service=producer).

// peerRows is the size of the pre-filled topic: 32 shards of 31,250 records.
const (
	peerShards = 32
	peerRows   = 1000000
)

// peerBatchRows is both systems' batch size: the sink's batch.max_rows default, and Spark's
// maxOffsetsPerTrigger.
const peerBatchRows = 100000

// peerOptions narrow the peer benchmark while working on one job.
type peerOptions struct {
	jobs  string // comma-separated jobs; "" for all
	spark bool   // run Spark's side too
	reuse string // the run id of a topic filled by an earlier run kept with keep
	keep  bool   // keep the topic (and print its run id) for reuse
	limit time.Duration
}

func peerBench(ctx context.Context, o peerOptions) error {
	s, err := stacktest.Load()
	if err != nil {
		return err
	}
	runID := fmt.Sprintf("peer%d", time.Now().Unix())
	if o.reuse != "" {
		runID = o.reuse
	}
	dir := filepath.Join(s.RunDir, "bench-e2e", runID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	bins, err := buildServices(ctx, s.Root, filepath.Join(s.RunDir, "bench-e2e", "bin"))
	if err != nil {
		return err
	}
	if o.keep {
		say("keeping the filled topic: reuse it with -peer-reuse %s", runID)
	} else {
		defer cleanupSpeedRun(s, runID, filepath.Join(dir, "delta"))
	}
	table := runID + "_items"
	topic := runID + ".cdc." + table
	var n uint64
	if o.reuse != "" {
		raw, err := os.ReadFile(filepath.Join(dir, "rows"))
		if err != nil {
			return fmt.Errorf("reusing %s: %w", runID, err)
		}
		if _, err := fmt.Sscan(string(raw), &n); err != nil {
			return fmt.Errorf("reusing %s: %w", runID, err)
		}
	} else {
		if n, err = fillPeerTopic(ctx, s, bins, dir, runID, table); err != nil {
			return fmt.Errorf("filling the topic: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "rows"), []byte(fmt.Sprint(n)), 0o640); err != nil {
			return err
		}
	}
	jobs := []struct{ job, mode string }{{"sink-changelog", "changelog"}, {"sink-mirror", "mirror"}, {"enricher", ""}}
	for _, j := range jobs {
		if o.jobs != "" && !slices.Contains(strings.Split(o.jobs, ","), j.job) {
			continue
		}
		say("peer %s: ddb2delta", j.job)
		ours, err := peerOurs(ctx, s, bins, dir, runID, topic, j.job, j.mode, n, o.limit)
		if err != nil {
			return fmt.Errorf("%s, ddb2delta: %w", j.job, err)
		}
		if !o.spark {
			fmt.Printf("PEER-BENCH job=%s ddb2delta_rows_per_cpu_s=%.0f\n", j.job, ours)
			continue
		}
		say("peer %s: Spark", j.job)
		spark, err := peerSpark(ctx, s, dir, runID, topic, j.job, n, o.limit)
		if err != nil {
			return fmt.Errorf("%s, Spark: %w", j.job, err)
		}
		fmt.Printf("PEER-BENCH job=%s ddb2delta_rows_per_cpu_s=%.0f spark_rows_per_cpu_s=%.0f ratio=%.2f\n",
			j.job, ours, spark, ours/spark)
	}
	return nil
}

// fillPeerTopic generates the whole backlog first, then starts the producer on it: the time the
// producer takes, alone, is its records per CPU-second from Streams pages to acknowledged Kafka
// records.
func fillPeerTopic(ctx context.Context, s *stacktest.Stack, bins map[string]string, dir, runID, table string) (uint64, error) {
	src, err := streamsource.New(streamsource.Config{Tables: []string{table}, Rate: peerRows, Shards: peerShards,
		Duration: time.Second, Keys: peerRows / peerShards / 2, DeleteEvery: -1})
	if err != nil {
		return 0, err
	}
	src.Begin()
	var final uint64
	for p := src.Progress(); ; p = src.Progress() {
		if p.Done {
			final = p.Final
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond): // the generation takes a second
		}
	}
	upstream, err := url.Parse(s.DynamoDBURL)
	if err != nil {
		return 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: src.Handler(upstream), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	confs, err := writeSpeedConfigs(dir, runID, table, filepath.Join(dir, "delta"))
	if err != nil {
		return 0, err
	}
	env := append(stackEnv(s), "DDB2DELTA_PRODUCER_DYNAMODB_ENDPOINT=http://"+ln.Addr().String())
	f := newFleet(bins, confs, env, dir)
	defer f.stopAll()
	r, err := f.start("producer", "producer-1")
	if err != nil {
		return 0, err
	}
	go captureProfiles(ctx, map[string]*replica{"producer": r}, filepath.Join(s.RunDir, "bench-e2e", "profiles", "peer"), 10*time.Second, 20*time.Second)
	cpu, err := waitCounter(ctx, f, r, "ddb2delta_producer_records_total", "", float64(final), 10*time.Minute)
	if err != nil {
		return 0, err
	}
	say("producer: %d records in %.1f CPU-seconds", final, cpu)
	fmt.Printf("SERVICE-BENCH service=producer records=%d cpu_s=%.1f records_per_cpu_s=%.0f rss_mb=%d\n",
		final, cpu, float64(final)/cpu, peakRSS(r.cmd.Process.Pid)>>20)
	return final, nil
}

// stackEnv is the environment every service needs to reach the stack.
func stackEnv(s *stacktest.Stack) []string {
	env := []string{
		"AWS_ACCESS_KEY_ID=" + s.Env["STACK_AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY=" + s.Env["STACK_AWS_SECRET_ACCESS_KEY"],
		"AWS_REGION=" + s.Env["STACK_AWS_REGION"], "AWS_EC2_METADATA_DISABLED=true",
		"DDB2DELTA_ENRICHER_DYNAMODB_ENDPOINT=" + s.DynamoDBURL,
	}
	for _, svc := range []string{"PRODUCER", "ENRICHER", "SINK"} {
		env = append(env, "DDB2DELTA_"+svc+"_KAFKA_BROKERS="+s.KafkaAddr, "DDB2DELTA_"+svc+"_SCHEMA_REGISTRY_URL="+s.RegistryURL,
			"DDB2DELTA_"+svc+"_HTTP_PPROF=true")
	}
	return env
}

// waitCounter waits until a metric of r (its series with label, "" for all) reaches want, and
// returns r's CPU seconds at that moment.
func waitCounter(ctx context.Context, f *fleet, r *replica, metric, label string, want float64, timeout time.Duration) (float64, error) {
	deadline := time.Now().Add(timeout)
	for {
		if x := f.exited(); x != nil {
			return 0, fmt.Errorf("%s exited; its log:\n%s", x.id, tail(x.logPath, 40))
		}
		got := metricWith(r.addr, metric, label)
		if got >= want {
			return cpuSeconds(r.cmd.Process.Pid), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: %s is %.0f after %s, want %.0f", r.id, metric, got, timeout, want)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// peerOurs runs one job with ddb2delta's service alone on the topic and returns its rows per
// CPU-second.
func peerOurs(ctx context.Context, s *stacktest.Stack, bins map[string]string, dir, runID, topic, job, mode string, n uint64, limit time.Duration) (float64, error) {
	// Each job starts empty: its own tables, consumer group and output topic, also when the
	// filled topic is reused.
	jobDir := filepath.Join(dir, job)
	if err := os.RemoveAll(filepath.Join(dir, "delta", job)); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(jobDir, 0o750); err != nil {
		return 0, err
	}
	jobID := fmt.Sprintf("%s-%s%d", runID, job, time.Now().Unix())
	confs, err := writeSpeedConfigs(jobDir, jobID, strings.TrimPrefix(topic, runID+".cdc."), filepath.Join(dir, "delta", job))
	if err != nil {
		return 0, err
	}
	svc := "enricher"
	if mode != "" {
		svc = "sink"
		body := fmt.Sprintf("consumer_group: %s\ntables_root: %s\ndead_letters: %s.dlq.sink\n"+
			"tables:\n  - {name: items, location: items, topics: [%s], mode: %s, schema_hints: {line: long, written_ms: long, version: long, qty: long, amount: \"decimal(12,2)\"}}\n",
			jobID, filepath.Join(dir, "delta", job), runID, topic, mode)
		if err := os.WriteFile(confs["sink"], []byte(body), 0o600); err != nil {
			return 0, err
		}
	} else {
		// The enricher's pipeline reads <runID>-enricher.cdc.<table>: point it at the filled topic.
		raw, err := os.ReadFile(confs["enricher"])
		if err != nil {
			return 0, err
		}
		body := strings.Replace(string(raw), "inputs: ["+jobID+".cdc.", "inputs: ["+runID+".cdc.", 1)
		if err := os.WriteFile(confs["enricher"], []byte(body), 0o600); err != nil {
			return 0, err
		}
	}
	f := newFleet(bins, confs, stackEnv(s), jobDir)
	defer f.stopAll()
	r, err := f.start(svc, svc+"-"+job)
	if err != nil {
		return 0, err
	}
	// Rows done: changelog rows written; mirror events applied (written, superseded in their
	// batch, or already in the table); enricher input records committed.
	done := func() float64 {
		switch mode {
		case "changelog":
			return metricSum(r.addr, "ddb2delta_sink_rows_total")
		case "mirror":
			return metricSum(r.addr, "ddb2delta_sink_rows_total") + metricSum(r.addr, "ddb2delta_sink_stale_total") +
				metricSum(r.addr, "ddb2delta_sink_skipped_total")
		}
		return metricSum(r.addr, "ddb2delta_enricher_records_committed_total")
	}
	go captureProfiles(ctx, map[string]*replica{job: r}, filepath.Join(s.RunDir, "bench-e2e", "profiles", "peer"), 5*time.Second, 20*time.Second)
	// A job that has not finished within the limit is measured on what it did by then.
	deadline := time.Now().Add(limit)
	var rows, cpu float64
	for {
		if x := f.exited(); x != nil {
			return 0, fmt.Errorf("%s exited; its log:\n%s", x.id, tail(x.logPath, 40))
		}
		rows = done()
		if rows >= float64(n) || time.Now().After(deadline) {
			cpu = cpuSeconds(r.cmd.Process.Pid)
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if rows < float64(n) {
		say("ddb2delta %s: stopped at the %s limit after %.0f of %d rows", job, limit, rows, n)
	}
	say("ddb2delta %s: %.0f rows in %.1f CPU-seconds, peak RSS %d MiB", job, rows, cpu, peakRSS(r.cmd.Process.Pid)>>20)
	return rows / cpu, nil
}

// peerSpark runs one job with Spark (scripts/python/spark_peer.py in the Spark venv) and returns
// its rows per CPU-second.
func peerSpark(ctx context.Context, s *stacktest.Stack, dir, runID, topic, job string, n uint64, limit time.Duration) (float64, error) {
	if job == "enricher" { // the broker creates no topic on its own
		if err := createTopic(ctx, s, runID+".spark.items_slim", 6); err != nil {
			return 0, err
		}
	}
	py := filepath.Join(s.RunDir, "spark-venv", "bin", "python")
	out := filepath.Join(dir, "spark", job)
	cmd := exec.CommandContext(ctx, py, filepath.Join(s.Root, "scripts", "python", "spark_peer.py"), "--job", job,
		"--bootstrap", s.KafkaAddr, "--registry", s.RegistryURL, "--topic", topic, "--out", out,
		"--out-topic", runID+".spark.items_slim", "--count", fmt.Sprint(n), "--max-offsets", fmt.Sprint(peerBatchRows), "--limit-s", fmt.Sprint(int(limit.Seconds())))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%v\n%s", err, tailText(stderr.String(), 30))
	}
	var res struct {
		Rows  uint64  `json:"rows"`
		CPUs  float64 `json:"cpu_s"`
		Wall  float64 `json:"wall_s"`
		RSSMB int64   `json:"rss_mb"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &res); err != nil {
		return 0, fmt.Errorf("reading its result %q: %w", stdout.String(), err)
	}
	if res.Rows > n || res.Rows == 0 {
		return 0, fmt.Errorf("the Spark job %s processed %d rows, the topic holds %d", job, res.Rows, n)
	}
	if res.Rows < n {
		say("Spark %s: stopped at the %s limit after %d of %d rows", job, limit, res.Rows, n)
	}
	say("Spark %s: %d rows in %.1f CPU-seconds (%.1f s wall), peak RSS %d MiB", job, res.Rows, res.CPUs, res.Wall, res.RSSMB)
	return float64(res.Rows) / res.CPUs, nil
}

func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// createTopic creates a topic (an existing one is fine).
func createTopic(ctx context.Context, s *stacktest.Stack, topic string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, -1, nil, topic)
	if err == nil && resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	return nil
}
