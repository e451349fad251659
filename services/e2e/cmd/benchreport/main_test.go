package main

import (
	"math"
	"strings"
	"testing"
)

const sample = `goos: linux
cpu: AMD EPYC
BenchmarkEnc/baseline-x-2   100   1000 ns/op   50.0 MB/s   7 allocs/op
BenchmarkEnc/baseline-x-2   100   3000 ns/op   50.0 MB/s   7 allocs/op
BenchmarkEnc/ours-2         100   4000 ns/op   10.0 MB/s   14 allocs/op
BenchmarkEnc/ours-2         100   4000 ns/op   10.0 MB/s   14 allocs/op
BenchmarkSolo-2             10    5 ns/op
E2E-BENCH offered=5000 achieved=4980 p50_ms=800 p99_ms=1500 cpu_s=producer:3.0,enricher:2.0,sink:9.0 rss_mb=producer:60,enricher:80,sink:200
PEER-BENCH job=sink-changelog ddb2delta_rows_per_cpu_s=40000 spark_rows_per_cpu_s=10000 ratio=4.00
SINK-BENCH table_rows=1000000 strategy=deletion_vectors batch_vs_append=1.40 rows_per_cpu_s=30000 rss_mb=400
PASS
`

func TestParseComputesMediansAndRatios(t *testing.T) {
	rep, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if rep.CPU != "AMD EPYC" || len(rep.Results) != 3 {
		t.Fatalf("report = %+v", rep)
	}
	base, ours, solo := rep.Results[0], rep.Results[1], rep.Results[2]
	if base.Metrics["ns/op"] != 2000 || base.Runs != 2 || base.Variant != "baseline-x" {
		t.Fatalf("baseline = %+v", base)
	}
	if ours.Baseline != "baseline-x" || math.Abs(ours.RatioNsPerOp-2) > 1e-9 || ours.RatioAllocsOp != 2 {
		t.Fatalf("ours = %+v", ours)
	}
	if solo.Group != "Solo" || solo.Baseline != "" {
		t.Fatalf("solo = %+v", solo)
	}
	if len(rep.Systems) != 3 || rep.Systems[0]["bench"] != "E2E-BENCH" || rep.Systems[0]["p99_ms"] != "1500" ||
		rep.Systems[1]["job"] != "sink-changelog" || rep.Systems[1]["ratio"] != "4.00" || rep.Systems[2]["batch_vs_append"] != "1.40" {
		t.Fatalf("system lines = %v", rep.Systems)
	}
	if _, err := parse(strings.NewReader("PASS\n")); err == nil {
		t.Fatal("no results accepted")
	}
}
