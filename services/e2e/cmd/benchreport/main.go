// Command benchreport turns `go test -bench -benchmem` output into a table where each benchmark is
// set beside the baseline measured in the same run, as a ratio, and writes the results as JSON.
//
//	go test -run '^$' -bench . -benchmem -count 5 work | benchreport -json results.json
//
// Benchmarks are grouped by the part of their name before the last '/'; in each group the variant
// whose name starts with "baseline" is the baseline. Each figure is the median of the runs.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Result is one benchmark's medians.
type Result struct {
	Group         string             `json:"group"`
	Variant       string             `json:"variant"`
	Runs          int                `json:"runs"`
	Metrics       map[string]float64 `json:"metrics"` // ns/op, B/op, allocs/op, MB/s, custom units
	Baseline      string             `json:"baseline,omitempty"`
	RatioNsPerOp  float64            `json:"ratio_ns_per_op_vs_baseline,omitempty"`
	RatioAllocsOp float64            `json:"ratio_allocs_per_op_vs_baseline,omitempty"`
}

// Report is the JSON document.
type Report struct {
	When    time.Time `json:"when"`
	CPU     string    `json:"cpu"`
	Cores   int       `json:"cores"`
	GoOS    string    `json:"goos"`
	Results []Result  `json:"results"`
	// Systems are the key=value lines of the system benchmarks (E2E-BENCH, PEER-BENCH,
	// SERVICE-BENCH, SINK-BENCH), as their pairs with the kind under "bench".
	Systems []map[string]string `json:"systems,omitempty"`
}

// systemKinds are the prefixes of the system benchmarks' lines.
var systemKinds = []string{"E2E-BENCH", "PEER-BENCH", "SERVICE-BENCH", "SINK-BENCH"}

func main() {
	jsonOut := flag.String("json", "", "write the report as JSON to this file")
	flag.Parse()
	rep, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	printTable(os.Stdout, rep)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
	}
}

func parse(r io.Reader) (*Report, error) {
	rep := &Report{When: time.Now().UTC(), Cores: runtime.NumCPU(), GoOS: runtime.GOOS + "/" + runtime.GOARCH}
	samples := map[string]map[string][]float64{} // name → unit → values
	var order []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if cpu, ok := strings.CutPrefix(line, "cpu: "); ok {
			rep.CPU = cpu
			continue
		}
		if kind, rest, ok := strings.Cut(line, " "); ok && slices.Contains(systemKinds, kind) {
			m := map[string]string{"bench": kind}
			for _, kv := range strings.Fields(rest) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					m[k] = v
				}
			}
			rep.Systems = append(rep.Systems, m)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the GOMAXPROCS suffix
			}
		}
		if samples[name] == nil {
			samples[name] = map[string][]float64{}
			order = append(order, name)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %q: %w", line, err)
			}
			samples[name][f[i+1]] = append(samples[name][f[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(order) == 0 && len(rep.Systems) == 0 {
		return nil, fmt.Errorf("no benchmark results in the input")
	}
	for _, name := range order {
		group, variant := strings.TrimPrefix(name, "Benchmark"), ""
		if i := strings.LastIndexByte(group, '/'); i >= 0 {
			group, variant = group[:i], group[i+1:]
		}
		res := Result{Group: group, Variant: variant, Metrics: map[string]float64{}}
		for unit, vs := range samples[name] {
			res.Metrics[unit] = median(vs)
			res.Runs = len(vs)
		}
		rep.Results = append(rep.Results, res)
	}
	for i := range rep.Results {
		r := &rep.Results[i]
		for _, b := range rep.Results {
			if b.Group == r.Group && strings.HasPrefix(b.Variant, "baseline") && b.Variant != r.Variant {
				r.Baseline = b.Variant
				if b.Metrics["ns/op"] > 0 {
					r.RatioNsPerOp = r.Metrics["ns/op"] / b.Metrics["ns/op"]
				}
				if b.Metrics["allocs/op"] > 0 {
					r.RatioAllocsOp = r.Metrics["allocs/op"] / b.Metrics["allocs/op"]
				}
			}
		}
	}
	return rep, nil
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printTable(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\nbenchmarks on %s (%d cores), medians of the runs; ratio = ns/op ÷ the group's in-run baseline\n\n", rep.CPU, rep.Cores)
	fmt.Fprintf(w, "%-34s %-26s %14s %10s %12s %10s %9s  %s\n", "group", "variant", "ns/op", "MB/s", "B/op", "allocs/op", "ratio", "other")
	for _, r := range rep.Results {
		ratio := "baseline"
		if r.Baseline != "" {
			ratio = fmt.Sprintf("%.2fx", r.RatioNsPerOp)
		} else if !strings.HasPrefix(r.Variant, "baseline") {
			ratio = "-"
		}
		var other []string
		for unit, v := range r.Metrics {
			switch unit {
			case "ns/op", "MB/s", "B/op", "allocs/op":
			default:
				other = append(other, fmt.Sprintf("%s=%.0f", unit, v))
			}
		}
		sort.Strings(other)
		fmt.Fprintf(w, "%-34s %-26s %14.0f %10.1f %12.0f %10.0f %9s  %s\n", r.Group, r.Variant,
			r.Metrics["ns/op"], r.Metrics["MB/s"], r.Metrics["B/op"], r.Metrics["allocs/op"], ratio, strings.Join(other, " "))
	}
	if len(rep.Systems) > 0 {
		fmt.Fprintf(w, "\nthe whole pipeline at full speed, and beside Spark\n\n")
		for _, m := range rep.Systems {
			var kv []string
			for k, v := range m {
				if k != "bench" {
					kv = append(kv, k+"="+v)
				}
			}
			sort.Strings(kv)
			fmt.Fprintf(w, "%-10s %s\n", m["bench"], strings.Join(kv, " "))
		}
	}
}
