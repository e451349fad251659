package writer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/benchutil"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// BenchmarkMirrorScale measures what a batch of 10,000 updates of random keys costs a mirror of
// 1,000,000 or 10,000,000 rows (~500-byte items), per strategy, beside appending the same batch
// to a changelog in the same process. The table is loaded in batches of 500,000 new keys (in key
// order, so copy-on-write appends too), then the updates run: three batches, the median reported
// (one for copy-on-write at 10,000,000 rows, which rewrites the whole table each time). It prints
//
//	SINK-BENCH table_rows=<n> strategy=<s> batch_vs_append=<x> rows_per_cpu_s=<n> rss_mb=<n>
//
// with the CPU of the update batch over the CPU of the append, the update batch's rows per
// CPU-second, and the process's peak RSS from the end of the load on (key index included). scripts/bench runs each case in
// its own process: go test -bench 'BenchmarkMirrorScale/^1000000$/^deletion_vectors$' -benchtime 1x.
func BenchmarkMirrorScale(b *testing.B) {
	for _, rows := range []int{1_000_000, 10_000_000} {
		b.Run(strconv.Itoa(rows), func(b *testing.B) {
			for _, strategy := range []string{StrategyDeletionVectors, StrategyCopyOnWrite} {
				b.Run(strategy, func(b *testing.B) { mirrorScale(b, rows, strategy) })
			}
		})
	}
}

func mirrorScale(b *testing.B, size int, strategy string) {
	const batch, load = 10_000, 500_000
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	st, err := storage.NewLocal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	w := New(Config{Name: "bench", Mode: layout.Mirror, MirrorStrategy: strategy}, st, quiet)
	b.Cleanup(w.Close)
	seq, off := 0, int64(0)
	began := time.Now()
	for start := 0; start < size; start += load {
		changes := make([]Change, 0, load)
		for i := start; i < min(start+load, size); i++ {
			seq++
			off++
			changes = append(changes, benchChange(i, seq, off))
		}
		if _, err := w.Write(ctx, changes, nil); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	b.Logf("loaded %d rows in %d files in %s", size, len(w.Snapshot().Files), time.Since(began).Round(time.Second))
	// The peak RSS reported is that of the updates (the key index, the batches), not the load's.
	debug.FreeOSMemory()
	resetPeakRSS()

	cst, err := storage.NewLocal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cl := New(Config{Name: "append", Mode: layout.Changelog}, cst, quiet)
	b.Cleanup(cl.Close)
	rounds := 3
	if strategy == StrategyCopyOnWrite && size > 1_000_000 {
		rounds = 1
	}
	rng := rand.New(rand.NewPCG(uint64(size), 2))
	var ratios, rates []float64
	b.ResetTimer()
	for range max(rounds, b.N) {
		upd := make([]Change, batch)
		for i := range upd {
			seq++
			off++
			upd[i] = benchChange(rng.IntN(size), seq, off)
		}
		cpu := benchutil.CPUTime()
		res, err := w.Write(ctx, upd, nil)
		w.Close() // its checkpoint, if one was due, is part of its cost
		mine := benchutil.CPUTime() - cpu
		if err != nil {
			b.Fatal(err)
		}
		cpu = benchutil.CPUTime() // the same batch, appended
		if _, err := cl.Write(ctx, upd, nil); err != nil {
			b.Fatal(err)
		}
		cl.Close()
		appended := benchutil.CPUTime() - cpu
		ratios = append(ratios, mine.Seconds()/appended.Seconds())
		rates = append(rates, float64(batch)/mine.Seconds())
		b.Logf("batch: %s CPU (%d files touched, %d written), append: %s CPU", mine.Round(time.Millisecond), res.Rewritten, res.Files, appended.Round(time.Millisecond))
	}
	b.StopTimer()
	fmt.Printf("SINK-BENCH table_rows=%d strategy=%s batch_vs_append=%.2f rows_per_cpu_s=%.0f rss_mb=%d\n",
		size, strategy, median(ratios), median(rates), peakRSSMB())
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

// resetPeakRSS starts the process's peak resident set (VmHWM) anew from its current one.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSSMB is the process's peak resident set (VmHWM), in MiB; 0 where /proc is absent.
func peakRSSMB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb / 1024
		}
	}
	return 0
}
