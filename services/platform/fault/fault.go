// Package fault kills the process at a named point of a commit path, for crash tests that must
// hit one exact instant (the sink: after the Parquet files are written but before the Delta
// commit, after the commit but before the Kafka offsets; the producer and the enricher: with a
// transaction's records produced but the transaction not ended). It is off unless the environment
// variable DDB2DELTA_TEST_FAULT is set to "<point>:<n>": the n-th time the process reaches the
// point, it sends itself SIGKILL, exactly like kill -9.
package fault

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The points the services declare.
const (
	AfterParquet = "after-parquet" // sink: data files written, commit not attempted
	AfterCommit  = "after-commit"  // sink: Delta commit done, Kafka offsets not committed
	// producer and enricher: a transaction's records produced, the transaction not ended
	ProducerInTransaction = "producer-in-transaction"
	EnricherInTransaction = "enricher-in-transaction"
)

var (
	once  sync.Once
	point string
	at    int
	mu    sync.Mutex
	seen  int
)

// Point is called when the process reaches a named point.
func Point(name string) {
	once.Do(func() {
		spec := os.Getenv("DDB2DELTA_TEST_FAULT")
		if p, n, ok := strings.Cut(spec, ":"); ok {
			point = p
			at, _ = strconv.Atoi(n)
		}
	})
	if point != name {
		return
	}
	mu.Lock()
	seen++
	hit := seen == at
	mu.Unlock()
	if hit {
		fmt.Fprintf(os.Stderr, "fault injected: SIGKILL at %s (%d)\n", name, at)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
