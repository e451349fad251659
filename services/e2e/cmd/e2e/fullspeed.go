package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/parquet-go/parquet-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/e2e/streamsource"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// Full speed (make bench-e2e): the three real binaries fed by streamsource at production rates.
// The producer reads the generated stream through the Streams API and publishes to Kafka; the
// enricher filters and projects it into a second topic; the sink writes the raw topic to a
// changelog table and the enriched topic to a mirror. Each offered rate is one run with its own
// topics, tables and fresh processes; its line is
//
//	E2E-BENCH offered=<n> achieved=<n> p50_ms=<n> p99_ms=<n> cpu_s=producer:<x>,enricher:<x>,sink:<x> rss_mb=producer:<n>,enricher:<n>,sink:<n>
//
// A rate is sustained when the changelog holds every generated change within sustainDrain of the
// generation's end: the lag stayed bounded by a few seconds of input all along, or it could not
// have drained so fast. After the fixed rates, a bisection between the highest rate sustained and
// the lowest not sustained finds the last line, E2E-BENCH max_sustained=<n>.

type speedOptions struct {
	rates         []int
	duration      time.Duration // generation per fixed rate
	probes        int           // bisection steps after the fixed rates
	probeDuration time.Duration
	drain         time.Duration // longest wait for the tables after the generation
	sustainDrain  time.Duration
	shardLife     time.Duration
	profileRate   int    // capture CPU and heap profiles of the run at this rate (0: none)
	jsonOut       string // append the runs as JSON lines
}

// speedRun is one run's measurements (also its JSON line).
type speedRun struct {
	Offered    int                `json:"offered"`
	Achieved   float64            `json:"achieved"`
	P50ms      int64              `json:"p50_ms"`
	P99ms      int64              `json:"p99_ms"`
	CPUs       map[string]float64 `json:"cpu_s"`
	RSSMiB     map[string]int64   `json:"rss_mb"`
	Generated  uint64             `json:"generated"`
	Rows       int64              `json:"changelog_rows"`
	Seconds    float64            `json:"seconds"`
	DrainS     float64            `json:"drain_s"` // from the generation's end until every change was in the changelog; -1 if never
	Sustained  bool               `json:"sustained"`
	MaxBacklog uint64             `json:"max_stream_backlog"` // generated but not yet read by the producer
	Throttled  int64              `json:"throttled_calls"`
	Shards     int                `json:"shards"`
}

func (r *speedRun) line() string {
	return fmt.Sprintf("E2E-BENCH offered=%d achieved=%.0f p50_ms=%d p99_ms=%d cpu_s=producer:%.1f,enricher:%.1f,sink:%.1f rss_mb=producer:%d,enricher:%d,sink:%d",
		r.Offered, r.Achieved, r.P50ms, r.P99ms, r.CPUs["producer"], r.CPUs["enricher"], r.CPUs["sink"],
		r.RSSMiB["producer"], r.RSSMiB["enricher"], r.RSSMiB["sink"])
}

func fullSpeed(ctx context.Context, o speedOptions) error {
	s, err := stacktest.Load()
	if err != nil {
		return err
	}
	dir := filepath.Join(s.RunDir, "bench-e2e")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	bins, err := buildServices(ctx, s.Root, filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	var jsonl *os.File
	if o.jsonOut != "" {
		if jsonl, err = os.OpenFile(o.jsonOut, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
		defer jsonl.Close()
	}
	run := func(rate int, d time.Duration) (*speedRun, error) {
		say("full speed: %d changes/s for %s", rate, d)
		r, err := speedRunAt(ctx, s, bins, dir, rate, d, o)
		if err != nil {
			return nil, fmt.Errorf("the run at %d changes/s: %w", rate, err)
		}
		fmt.Println(r.line())
		say("%d changes/s: sustained=%v drain_s=%.1f generated=%d rows=%d max_stream_backlog=%d throttled=%d shards=%d",
			rate, r.Sustained, r.DrainS, r.Generated, r.Rows, r.MaxBacklog, r.Throttled, r.Shards)
		if jsonl != nil {
			b, _ := json.Marshal(r)
			_, _ = jsonl.Write(append(b, '\n'))
		}
		return r, nil
	}
	best, worst := 0, 0 // highest rate sustained, lowest not sustained
	for _, rate := range o.rates {
		r, err := run(rate, o.duration)
		if err != nil {
			return err
		}
		if r.Sustained {
			best = max(best, rate)
		} else if worst == 0 || rate < worst {
			worst = rate
		}
	}
	for range o.probes {
		if worst == 0 || worst-best <= 1000 {
			break
		}
		rate := (best + worst) / 2 / 500 * 500
		r, err := run(rate, o.probeDuration)
		if err != nil {
			return err
		}
		if r.Sustained {
			best = rate
		} else {
			worst = rate
		}
	}
	fmt.Printf("E2E-BENCH max_sustained=%d\n", best)
	return nil
}

// buildServices builds the three binaries into dir.
func buildServices(ctx context.Context, root, dir string) (map[string]string, error) {
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator),
		"./services/producer/cmd/producer", "./services/enricher/cmd/enricher", "./services/sink/cmd/sink")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the services: %v\n%s", err, out)
	}
	bins := map[string]string{}
	for _, svc := range []string{"producer", "enricher", "sink"} {
		bins[svc] = filepath.Join(dir, svc)
	}
	return bins, nil
}

func speedRunAt(ctx context.Context, s *stacktest.Stack, bins map[string]string, root string, rate int, d time.Duration, o speedOptions) (*speedRun, error) {
	runID := fmt.Sprintf("speed%d_%d", rate, time.Now().Unix())
	dir := filepath.Join(root, runID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	table := runID + "_items"
	src, err := streamsource.New(streamsource.Config{Tables: []string{table}, Rate: float64(rate), Duration: d,
		ShardLife: o.shardLife, SplitEvery: 4, Keys: 20000})
	if err != nil {
		return nil, err
	}
	upstream, err := url.Parse(s.DynamoDBURL)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: src.Handler(upstream), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	deltaRoot := filepath.Join(dir, "delta")
	confs, err := writeSpeedConfigs(dir, runID, table, deltaRoot)
	if err != nil {
		return nil, err
	}
	env := append(stackEnv(s), "DDB2DELTA_PRODUCER_DYNAMODB_ENDPOINT=http://"+ln.Addr().String())
	f := newFleet(bins, confs, env, dir)
	defer cleanupSpeedRun(s, runID, deltaRoot)
	defer f.stopAll()
	procs := map[string]*replica{}
	for _, svc := range []string{"producer", "enricher", "sink"} {
		r, err := f.start(svc, svc+"-1")
		if err != nil {
			return nil, err
		}
		procs[svc] = r
	}
	if err := f.waitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	// Leases on a fresh lease table take a few rounds: the generation starts once the producer
	// reads every shard, so the first seconds measure the pipeline, not the lease hand-out.
	if err := f.waitMetric(ctx, "producer", "ddb2delta_producer_shards_active", float64(src.Progress().OpenShards), 2*time.Minute); err != nil {
		return nil, err
	}
	cpu0 := map[string]float64{}
	for svc, r := range procs {
		cpu0[svc] = cpuSeconds(r.cmd.Process.Pid)
	}
	src.Begin()
	start := src.Started()
	if o.profileRate == rate {
		go captureProfiles(ctx, procs, filepath.Join(root, "profiles", strconv.Itoa(rate)), min(d/3, 10*time.Second), min(d/2, 30*time.Second))
	}

	res := &speedRun{Offered: rate, DrainS: -1, CPUs: map[string]float64{}, RSSMiB: map[string]int64{}}
	deadline := start.Add(d + o.drain)
	var drainedAt time.Time
	for {
		if r := f.exited(); r != nil {
			return nil, fmt.Errorf("%s exited on its own; its log:\n%s", r.id, tail(r.logPath, 40))
		}
		p := src.Progress()
		res.MaxBacklog = max(res.MaxBacklog, p.Generated-min(p.Read, p.Generated))
		res.Generated, res.Throttled, res.Shards = p.Generated, p.Stats.Throttled, p.Shards
		if p.Done {
			// Drained: every change in the changelog, through the enricher, and every enriched
			// event applied to the mirror (written, or superseded in its batch, or already in).
			sink, enr := procs["sink"].addr, procs["enricher"].addr
			rows := metricWith(sink, "ddb2delta_sink_rows_total", `table="items_changelog"`)
			in := metricSum(enr, "ddb2delta_enricher_events_in_total")
			out := metricSum(enr, "ddb2delta_enricher_events_out_total")
			mirror := metricWith(sink, "ddb2delta_sink_rows_total", `table="items_mirror"`) +
				metricWith(sink, "ddb2delta_sink_stale_total", `table="items_mirror"`) + metricWith(sink, "ddb2delta_sink_skipped_total", `table="items_mirror"`)
			if uint64(rows) >= p.Final && uint64(in) >= p.Final && mirror >= out {
				drainedAt = time.Now()
				break
			}
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second): // the sampling interval
		}
	}
	end := time.Now()
	for svc, r := range procs {
		res.CPUs[svc] = math.Round((cpuSeconds(r.cmd.Process.Pid)-cpu0[svc])*10) / 10
		res.RSSMiB[svc] = peakRSS(r.cmd.Process.Pid) >> 20
	}
	genEnd := start.Add(d)
	if !drainedAt.IsZero() {
		res.DrainS = math.Round(max(0, drainedAt.Sub(genEnd).Seconds())*10) / 10
		res.Sustained = drainedAt.Sub(genEnd) <= o.sustainDrain
	}
	lat, rows, last, err := changelogLatency(filepath.Join(deltaRoot, "items_changelog"))
	if err != nil {
		return nil, err
	}
	res.Rows = rows
	if last.IsZero() {
		last = end
	}
	res.Seconds = math.Round(last.Sub(start).Seconds()*10) / 10
	res.Achieved = float64(rows) / last.Sub(start).Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50ms, res.P99ms = lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res, nil
}

// writeSpeedConfigs writes the three services' configuration for one full-speed run: defaults
// everywhere but the names, as a user would start.
func writeSpeedConfigs(dir, runID, table, deltaRoot string) (map[string]string, error) {
	confs := map[string]string{
		"producer": fmt.Sprintf(`topic_prefix: %[1]s
topics: {partitions: 6, replication_factor: 1}
tables:
  - {name: %[2]s, encoding: typed}
`, runID, table),
		"enricher": fmt.Sprintf(`topic_prefix: %[1]s
consumer_group: %[1]s-enricher
topics: {partitions: 6, replication_factor: 1}
pipelines:
  - name: items_slim
    inputs: [%[1]s.cdc.%[2]s]
    filter: 'item.?region.orValue("") != "eu-west"'
    projection:
      - {name: id, expr: key.id}
      - {name: line, expr: key.line, type: long}
      - {name: written_ms, expr: item.written_ms, type: long}
      - {name: status, expr: item.status}
      - {name: amount, expr: item.amount, type: "decimal(12,2)"}
      - {name: qty, expr: item.qty, type: long}
      - {name: region, expr: item.region}
      - {name: city, expr: item.address.city}
`, runID, table),
		"sink": fmt.Sprintf(`consumer_group: %[1]s-sink
tables_root: %[3]s
dead_letters: %[1]s.dlq.sink
tables:
  - name: items_changelog
    location: items_changelog
    topics: [%[1]s.cdc.%[2]s]
    mode: changelog
    schema_hints: {line: long, written_ms: long, version: long, qty: long, amount: "decimal(12,2)"}
  - {name: items_mirror, location: items_mirror, topics: [%[1]s.enriched.items_slim], mode: mirror}
`, runID, table, deltaRoot),
	}
	return writeConfigFiles(dir, confs)
}

// cleanupSpeedRun deletes a run's topics, lease table and Delta tables (gigabytes at full speed);
// its logs and configuration stay.
func cleanupSpeedRun(s *stacktest.Stack, runID, deltaRoot string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if cl, err := kgo.NewClient(kgo.SeedBrokers(s.KafkaAddr)); err == nil {
		adm := kadm.NewClient(cl)
		if topics, err := adm.ListTopics(ctx); err == nil {
			var mine []string
			for _, t := range topics.Names() {
				if strings.HasPrefix(t, runID) { // its topics and its jobs' (<runID>-<job>.…)
					mine = append(mine, t)
				}
			}
			_, _ = adm.DeleteTopics(ctx, mine...)
		}
		cl.Close()
	}
	ddb := dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	_, _ = ddb.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(runID + "_producer_leases")})
	_ = os.RemoveAll(deltaRoot)
}

// cpuSeconds is a process's user + system CPU time from /proc/<pid>/stat (clock ticks of 1/100 s,
// the Linux default).
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces) start at the state, field 3;
	// utime and stime are fields 14 and 15.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(fields[11], 64)
	k, _ := strconv.ParseFloat(fields[12], 64)
	return (u + k) / 100
}

// peakRSS is a process's peak resident set (VmHWM) in bytes.
func peakRSS(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// captureProfiles takes a CPU profile of each service for d after waiting for `after`, and a heap
// profile at its end, into dir.
func captureProfiles(ctx context.Context, procs map[string]*replica, dir string, after, d time.Duration) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(after):
	}
	fetch := func(svc, addr, path, file string) {
		cl := http.Client{Timeout: d + 30*time.Second}
		resp, err := cl.Get("http://" + addr + path)
		if err != nil {
			say("profile of %s: %v", svc, err)
			return
		}
		defer resp.Body.Close()
		out, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return
		}
		defer out.Close()
		_, _ = io.Copy(out, resp.Body)
	}
	done := make(chan struct{}, len(procs))
	for svc, r := range procs {
		go func() {
			fetch(svc, r.addr, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), svc+".cpu.pprof")
			fetch(svc, r.addr, "/debug/pprof/heap", svc+".heap.pprof")
			done <- struct{}{}
		}()
	}
	for range procs {
		<-done
	}
	say("profiles in %s (go tool pprof -top <file>)", dir)
}

// changelogLatency reads the changelog's data files: for every row with a new image, the time
// from its written_ms to the commit that added the file (in ms), the number of rows, and the
// last commit's time.
func changelogLatency(location string) ([]int64, int64, time.Time, error) {
	times, err := commitTimes(location)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	var lat []int64
	var rows int64
	var last time.Time
	vals := make([]parquet.Value, 4096)
	for path, ts := range times {
		if ts.After(last) {
			last = ts
		}
		f, err := os.Open(filepath.Join(location, path))
		if err != nil {
			return nil, 0, time.Time{}, err
		}
		st, err := f.Stat()
		if err == nil {
			err = readLatencies(f, st.Size(), ts.UnixMilli(), vals, &lat, &rows)
		}
		f.Close()
		if err != nil {
			return nil, 0, time.Time{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	return lat, rows, last, nil
}

func readLatencies(f *os.File, size, commitMs int64, vals []parquet.Value, lat *[]int64, rows *int64) error {
	pf, err := parquet.OpenFile(f, size)
	if err != nil {
		return err
	}
	*rows += pf.NumRows()
	leaf, ok := pf.Schema().Lookup("after", "written_ms")
	if !ok {
		return fmt.Errorf("no after.written_ms column")
	}
	for _, rg := range pf.RowGroups() {
		pages := rg.ColumnChunks()[leaf.ColumnIndex].Pages()
		for {
			p, err := pages.ReadPage()
			if err == io.EOF {
				break
			}
			if err != nil {
				pages.Close()
				return err
			}
			r := p.Values()
			for {
				n, err := r.ReadValues(vals)
				for _, v := range vals[:n] {
					if !v.IsNull() {
						*lat = append(*lat, commitMs-v.Int64())
					}
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					pages.Close()
					return err
				}
			}
			parquet.Release(p)
		}
		pages.Close()
	}
	return nil
}
