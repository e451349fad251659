//go:build integration

package proc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// orderLoad writes orders until stopped and remembers the event ids the enriched topic must hold
// exactly once: amount of 100 or more, customer c1 or c2 (c3 does not exist).
type orderLoad struct {
	mu   sync.Mutex
	want map[string]bool
	n    int
	stop context.CancelFunc
	done chan struct{}
}

func startOrderLoad(t *testing.T, ctx context.Context, s *stacktest.Stack, prefix string) *orderLoad {
	t.Helper()
	reg := testRegistry(t, s)
	customers := newChangeFeed(t, ctx, s, reg, prefix+".cdc.customers", "customers", 2, true)
	customers.put(ctx, "c", "c1", nil, map[string]types.AttributeValue{"id": str("c1"), "name": str("Ada"), "tier": str("gold")})
	customers.put(ctx, "c", "c2", nil, map[string]types.AttributeValue{"id": str("c2"), "name": str("Bob"), "tier": str("silver")})
	orders := newChangeFeed(t, ctx, s, reg, prefix+".cdc.orders", "orders", 3, false)
	wctx, stop := context.WithCancel(ctx)
	l := &orderLoad{want: map[string]bool{}, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(5 * time.Millisecond) // the load's pace, ~200 orders/s
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			customer := []string{"c1", "c2", "c3"}[rand.IntN(3)]
			amount := rand.IntN(300)
			// Updates of earlier orders too: per-key order matters downstream.
			id := "o" + strconv.Itoa(i)
			op := "c"
			if i > 10 && rand.IntN(4) == 0 {
				id, op = "o"+strconv.Itoa(rand.IntN(i)), "u"
			}
			ev := orders.put(wctx, op, id, nil, map[string]types.AttributeValue{"id": str(id), "customer_id": str(customer),
				"sku": str([]string{"p1", "p2", "p3"}[rand.IntN(3)]), "amount": num(strconv.Itoa(amount))})
			l.mu.Lock() // put returns once the record is in the topic, stopped or not: count it
			l.n++
			if amount >= 100 && customer != "c3" {
				l.want[ev] = true
			}
			l.mu.Unlock()
		}
	}()
	return l
}

// finish stops the load and returns the event ids expected in the output.
func (l *orderLoad) finish(t *testing.T) map[string]bool {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d orders written, %d expected in the enriched topic", l.n, len(l.want))
	return l.want
}

func enricherTestSetup(t *testing.T) (*stacktest.Stack, context.Context, string, *enricherRun) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	ctx := stacktest.Context(t, 6*time.Minute)
	prefix := fmt.Sprintf("enrichx%d", time.Now().UnixNano())
	ddb := dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	createProducts(t, ctx, ddb, prefix+"_products", map[string]string{"p1": "books", "p2": "games"})
	return s, ctx, prefix, newEnricherRun(t, s, enrichedOrdersConfig(prefix, prefix+"_products"))
}

// TestEnricherKilledExactlyOnce SIGKILLs the enricher three times at random moments while orders
// keep coming, restarting it each time (same replica id and state directory): the enriched topic,
// read read_committed, holds every expected order change once and nothing else.
func TestEnricherKilledExactlyOnce(t *testing.T) {
	s, ctx, prefix, run := enricherTestSetup(t)
	load := startOrderLoad(t, ctx, s, prefix)
	p := run.start("e1")
	seen := 0.0
	for kill := range 3 {
		seen = run.committed(p, seen)
		pause(t, ctx, time.Duration(rand.IntN(1500))*time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, _ = p.Wait(30 * time.Second)
		t.Logf("kill %d after %g records committed by this incarnation", kill+1, seen)
		p, seen = run.start("e1"), 0
	}
	run.committed(p, 0)
	want := load.finish(t)
	got := consumeExactlyOnce(t, ctx, s, []string{prefix + ".enriched.big_orders"}, want, nil)
	t.Logf("%d enriched changes, each once", got)
}

// TestEnricherScalesOneThreeOne runs one replica, adds two (the group rebalances onto three),
// then stops one with SIGTERM and kills the other with SIGKILL, while orders keep coming: nothing
// lost, nothing duplicated.
func TestEnricherScalesOneThreeOne(t *testing.T) {
	s, ctx, prefix, run := enricherTestSetup(t)
	load := startOrderLoad(t, ctx, s, prefix)
	r1 := run.start("r1")
	run.committed(r1, 0)
	r2, r3 := run.start("r2"), run.start("r3")
	run.committed(r2, 0)
	run.committed(r3, 0)
	if code, err := r2.Stop(syscall.SIGTERM, 30*time.Second); err != nil || code != 0 {
		t.Fatalf("r2 after SIGTERM: exit %d, %v\n%s", code, err, r2.Output())
	}
	if err := r3.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	before := metricSum(t, run.addrs[r1], "ddb2delta_enricher_records_committed_total")
	run.committed(r1, before+200) // r1 alone carries on, r3's partitions included
	want := load.finish(t)
	got := consumeExactlyOnce(t, ctx, s, []string{prefix + ".enriched.big_orders"}, want, nil)
	t.Logf("%d enriched changes, each once", got)
}
