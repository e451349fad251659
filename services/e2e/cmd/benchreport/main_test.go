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
	if _, err := parse(strings.NewReader("PASS\n")); err == nil {
		t.Fatal("no results accepted")
	}
}
