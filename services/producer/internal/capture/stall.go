package capture

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// stalls tracks, per shard (and snapshot segment), whether it is making progress. A shard that has
// read records it has not published, or whose runs keep failing, since longer than the limit is
// stalled: /readyz fails naming it, ddb2delta_producer_shard_stalled is 1 for it, and each failure
// is logged at ERROR. The state outlives a shard's run, which restarts from its checkpoint after a
// failure: a shard that fails the same page forever stays stalled however often it restarts.
type stalls struct {
	limit   time.Duration
	now     func() time.Time
	stalled *prometheus.GaugeVec
	log     *slog.Logger

	mu     sync.Mutex
	shards map[[2]string]*stallState // by table, shard
}

type stallState struct {
	since    time.Time // when records became pending (or the first failure) without progress since
	pending  int
	failures int
	lastErr  error
	retryAt  time.Time // a failed shard is restarted from then on (backoff)
}

// restartBackoff spaces the restarts of a failing shard: 500ms doubling to 30s.
func restartBackoff(failures int) time.Duration {
	return min(500*time.Millisecond<<min(failures-1, 10), 30*time.Second)
}

func newStalls(limit time.Duration, stalled *prometheus.GaugeVec, log *slog.Logger) *stalls {
	return &stalls{limit: limit, now: time.Now, stalled: stalled, log: log, shards: map[[2]string]*stallState{}}
}

func (s *stalls) state(table, shard string) *stallState {
	k := [2]string{table, shard}
	st := s.shards[k]
	if st == nil {
		st = &stallState{}
		s.shards[k] = st
	}
	return st
}

// read records that a shard holds n records it has not published yet.
func (s *stalls) read(table, shard string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(table, shard)
	if st.since.IsZero() {
		st.since = s.now()
	}
	st.pending = n
}

// progressed records that a shard published everything it had read.
func (s *stalls) progressed(table, shard string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.shards[[2]string{table, shard}]; st != nil && !st.since.IsZero() {
		if st.failures > 0 {
			s.log.Info("shard publishing again", "table", table, "shard", shard, "after_failures", st.failures, "stuck_for", s.now().Sub(st.since).Round(time.Second))
		}
		*st = stallState{}
		s.stalled.WithLabelValues(table, shard).Set(0)
	}
}

// failed records that a shard's run ended with err; it restarts from its checkpoint.
func (s *stalls) failed(table, shard string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(table, shard)
	now := s.now()
	if st.since.IsZero() {
		st.since = now
	}
	st.failures++
	st.lastErr = err
	st.retryAt = now.Add(restartBackoff(st.failures))
	if d := now.Sub(st.since); d >= s.limit {
		s.stalled.WithLabelValues(table, shard).Set(1)
		s.log.Error("shard stalled: it cannot publish; retrying from its checkpoint", "table", table, "shard", shard,
			"stuck_for", d.Round(time.Second), "pending", st.pending, "failures", st.failures, "retry_in", st.retryAt.Sub(now), "error", err)
		return
	}
	s.log.Warn("shard stopped; it restarts from its checkpoint", "table", table, "shard", shard, "retry_in", st.retryAt.Sub(now), "error", err)
}

// mayStart reports whether a shard may be (re)started now: not while it backs off after a failure.
func (s *stalls) mayStart(table, shard string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.shards[[2]string{table, shard}]
	return st == nil || !s.now().Before(st.retryAt)
}

// forget drops a shard this replica no longer reads (its lease went elsewhere, or it finished).
func (s *stalls) forget(table, shard string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.shards, [2]string{table, shard})
	s.stalled.DeleteLabelValues(table, shard)
}

// Check is the readiness check: it fails while any shard is stalled, naming each.
func (s *stalls) Check(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var bad []string
	for k, st := range s.shards {
		if st.since.IsZero() {
			continue
		}
		d := now.Sub(st.since)
		if d < s.limit {
			continue
		}
		s.stalled.WithLabelValues(k[0], k[1]).Set(1)
		msg := fmt.Sprintf("table %s shard %s: no progress for %s (%d records pending, %d failures)", k[0], k[1], d.Round(time.Second), st.pending, st.failures)
		if st.lastErr != nil {
			msg += ": " + st.lastErr.Error()
		}
		bad = append(bad, msg)
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("%d shard(s) stalled: %s", len(bad), strings.Join(bad, "; "))
}
