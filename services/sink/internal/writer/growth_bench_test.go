package writer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/maintenance"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// simStore is a local store whose objects carry the simulated time they were written at (List
// reports it as their modification time), so that retention runs on the benchmark's clock.
type simStore struct {
	*storage.Local
	now     func() time.Time
	mu      sync.Mutex
	written map[string]time.Time
}

func (s *simStore) mark(name string) {
	s.mu.Lock()
	s.written[name] = s.now()
	s.mu.Unlock()
}

func (s *simStore) Write(ctx context.Context, name string, data []byte) error {
	s.mark(name)
	return s.Local.Write(ctx, name, data)
}

func (s *simStore) WriteIfAbsent(ctx context.Context, name string, data []byte) error {
	err := s.Local.WriteIfAbsent(ctx, name, data)
	if err == nil {
		s.mark(name)
	}
	return err
}

func (s *simStore) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	delete(s.written, name)
	s.mu.Unlock()
	return s.Local.Delete(ctx, name)
}

func (s *simStore) List(ctx context.Context, prefix, startAfter string) ([]storage.Object, error) {
	objs, err := s.Local.List(ctx, prefix, startAfter)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range objs {
		if t, ok := s.written[objs[i].Name]; ok {
			objs[i].Modified = t
		}
	}
	return objs, err
}

// growth is what a long run of a mirror measured over its last window of commits.
type growth struct {
	p50, p99       time.Duration
	rssMB, heapMB  float64
	logFiles, live int
}

// runGrowth commits n small batches (3 updates of random keys among 200) to a mirror, on a
// simulated clock advancing 10 s per commit, with the table's file and log retention at one
// hour, a checkpoint every 10 commits, and maintenance (compaction, vacuum, log cleanup) every
// simulated hour, as the sink's maintenance loop does. It measures the last 1,000 commits.
func runGrowth(b *testing.B, n int) growth {
	ctx := context.Background()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	local, err := storage.NewLocal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	st := &simStore{Local: local, now: now, written: map[string]time.Time{}}
	quiet := slog.New(slog.DiscardHandler)
	w := New(Config{Name: "growth", Mode: layout.Mirror, Buckets: 4, Properties: map[string]string{
		delta.ConfDeletedFileRetention: "interval 1 hour", delta.ConfLogRetention: "interval 1 hour"}}, st, quiet)
	w.Table().Now = now
	mcfg := maintenance.Config{Name: "growth", Retention: time.Hour, MinFiles: 8}
	mt := delta.NewTable(st)
	mt.Now = now
	const keys = 200
	var off int64
	seq := 0
	load := make([]Change, 0, keys)
	for i := range keys {
		seq++
		off++
		load = append(load, benchChange(i, seq, off))
	}
	if _, err := w.Write(ctx, load, nil); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	window := min(n, 1000)
	lat := make([]time.Duration, 0, window)
	for c := 1; c <= n; c++ {
		clock = clock.Add(10 * time.Second)
		batch := make([]Change, 3)
		for i := range batch {
			seq++
			off++
			batch[i] = benchChange(rng.IntN(keys), seq, off)
		}
		start := time.Now()
		if _, err := w.Write(ctx, batch, nil); err != nil {
			b.Fatal(err)
		}
		if c > n-window {
			lat = append(lat, time.Since(start))
		}
		if c%360 == 0 { // a simulated hour
			if _, err := w.Table().WaitCheckpoint(); err != nil {
				b.Fatal(err)
			}
			if _, err := maintenance.Compact(ctx, mt, mcfg, quiet); err != nil {
				b.Fatal(err)
			}
			if _, err := maintenance.Vacuum(ctx, mt, mcfg, clock, quiet); err != nil {
				b.Fatal(err)
			}
			if _, err := maintenance.CleanLog(ctx, mt, "growth", clock, quiet); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := w.Table().WaitCheckpoint(); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	g := growth{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], rssMB: rssMB(), live: len(w.Snapshot().Files)}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	g.heapMB = float64(ms.HeapInuse) / 1e6
	objs, err := st.List(ctx, delta.LogDir, "")
	if err != nil {
		b.Fatal(err)
	}
	g.logFiles = len(objs)
	return g
}

// rssMB is this process's resident set size (Linux), 0 where unknown.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1e3
		}
	}
	return 0
}

// BenchmarkMirrorGrowth: a mirror committing small batches every 10 simulated seconds for 1,000,
// 10,000 and 50,000 commits (2.8 hours to 5.8 days of simulated time, retention one hour): commit
// latency (p50, p99 of the last 1,000 commits), memory (RSS, and heap in use after a GC) and the
// _delta_log file count stay flat once the retention is reached. The 1,000-commit run is the
// baseline. Run on its own (scripts/bench does, with -count 1): 61,000 commits take minutes.
func BenchmarkMirrorGrowth(b *testing.B) {
	sizes := []int{1000, 10000, 50000}
	if v, err := strconv.Atoi(os.Getenv("GROWTH_COMMITS")); err == nil && v > 0 { // one size, for profiling
		sizes = []int{v}
	}
	for _, n := range sizes {
		name := fmt.Sprintf("commits-%dk", n/1000)
		if n == 1000 {
			name = "baseline-" + name
		}
		b.Run(name, func(b *testing.B) {
			var g growth
			for range b.N {
				g = runGrowth(b, n)
			}
			b.ReportMetric(float64(g.p50.Microseconds())/1e3, "p50-ms")
			b.ReportMetric(float64(g.p99.Microseconds())/1e3, "p99-ms")
			b.ReportMetric(g.rssMB, "rss-MB")
			b.ReportMetric(g.heapMB, "heap-MB")
			b.ReportMetric(float64(g.logFiles), "log-files")
			b.ReportMetric(float64(g.live), "live-files")
		})
	}
}
