//go:build integration

package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// clock is a shared fake clock: lease expiry is a matter of observed time, which the test advances.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func coordinators(t *testing.T, names ...string) ([]*Coordinator, *clock, []string) {
	s := stacktest.Require(t, stacktest.DynamoDB)
	ddb := dynamodb.NewFromConfig(s.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.DynamoDBURL) })
	table := fmt.Sprintf("leases_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	clk := &clock{t: time.Unix(1795500000, 0)}
	var keys []string
	for i := range 6 {
		keys = append(keys, Key("arn:stream", fmt.Sprintf("shard-%d", i)))
	}
	var cs []*Coordinator
	for _, n := range names {
		c := New(ddb, Config{Table: table, Owner: n, Duration: 10 * time.Second}, slog.New(slog.DiscardHandler))
		c.now = clk.now
		if err := c.EnsureTable(stacktest.Context(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
		c.Offer(keys)
		cs = append(cs, c)
	}
	return cs, clk, keys
}

// owners runs one round of every live coordinator and returns how many leases each holds, failing
// if a lease is held by none of them or by two after the round.
func round(t *testing.T, cs []*Coordinator, keys []string) map[string]int {
	t.Helper()
	ctx := stacktest.Context(t, time.Minute)
	for _, c := range cs {
		if err := c.Round(ctx); err != nil {
			t.Fatal(err)
		}
	}
	count := map[string]int{}
	for _, c := range cs {
		for _, k := range keys {
			if c.Held(k) {
				count[c.cfg.Owner]++
			}
		}
	}
	return count
}

func balanced(count map[string]int, want ...int) bool {
	var got []int
	for _, n := range count {
		got = append(got, n)
	}
	sort.Ints(got)
	return fmt.Sprint(got) == fmt.Sprint(want)
}

func TestLeasesBalanceTakeOverAndHandOver(t *testing.T) {
	cs, clk, keys := coordinators(t, "a", "b", "c")
	var count map[string]int
	for r := 0; r < 20 && !balanced(count, 2, 2, 2); r++ {
		count = round(t, cs, keys)
		clk.t = clk.t.Add(time.Second)
	}
	if !balanced(count, 2, 2, 2) {
		t.Fatalf("three replicas after 20 rounds hold %v, want 2 each", count)
	}
	// Every lease is held by exactly one replica, as the table says.
	for _, k := range keys {
		n := 0
		for _, c := range cs {
			if c.Held(k) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("lease %s held by %d replicas", k, n)
		}
	}

	// Held leases cost no writes: a round of each replica writes its heartbeat only.
	writes := &countingWrites{API: cs[0].api}
	for _, c := range cs {
		c.api = writes
	}
	count = round(t, cs, keys)
	if n := writes.n.Load(); n != int64(len(cs)) || !balanced(count, 2, 2, 2) {
		t.Fatalf("a balanced round of %d replicas holding %v made %d writes, want one heartbeat each", len(cs), count, n)
	}

	// c dies (stops heartbeating): once its heartbeat has not moved for the lease duration, as a
	// and b observe it (from the first scan after c's last heartbeat), they take its leases over.
	live := cs[:2]
	rounds := 0
	for ; rounds < 20 && !balanced(count, 3, 3); rounds++ {
		count = round(t, live, keys)
		clk.t = clk.t.Add(2 * time.Second)
	}
	if rounds < 6 {
		t.Fatalf("c's leases were taken after %d rounds (%ds), before the 10s lease duration", rounds, 2*rounds)
	}
	if !balanced(count, 3, 3) {
		t.Fatalf("after c died, a and b hold %v, want 3 each", count)
	}

	// b shuts down gracefully: it releases its leases and a takes them at once, without waiting
	// for the lease duration.
	cs[1].releaseAll()
	count = round(t, live[:1], keys)
	if count["a"] != 6 {
		t.Fatalf("after b released, a holds %d, want 6", count["a"])
	}

	// a restarts under the same id (after a crash): Register waits until the earlier process's
	// heartbeat has not moved for the lease duration, then the new one takes back the leases its
	// earlier incarnation held at once, without waiting for them to expire.
	ctx := stacktest.Context(t, time.Minute)
	zombie := cs[0]
	restarted := New(cs[0].api, cs[0].cfg, slog.New(slog.DiscardHandler))
	restarted.now = clk.now
	waited := time.Duration(0)
	restarted.sleep = func(_ context.Context, d time.Duration) error { clk.t = clk.t.Add(d); waited += d; return nil }
	if err := restarted.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if waited < restarted.cfg.Duration {
		t.Fatalf("Register took the worker over after %s, before the lease duration", waited)
	}
	restarted.Offer(keys)
	cs[0] = restarted
	if count = round(t, cs[:1], keys); count["a"] != 6 {
		t.Fatalf("restarted a holds %d, want its 6 back at once", count["a"])
	}
	// The earlier process was only paused: on its next round it finds its id taken, holds
	// nothing, and says so on Fatal.
	if err := zombie.Round(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-zombie.Fatal():
		if !errors.Is(err, ErrDuplicateReplica) {
			t.Fatalf("Fatal = %v", err)
		}
	default:
		t.Fatal("a process whose replica id was taken over reports nothing")
	}
	for _, k := range keys {
		if zombie.Held(k) {
			t.Fatalf("the paused process still holds %s", k)
		}
	}

	// A second process started with a's id while a runs is refused.
	dup := New(cs[0].api, cs[0].cfg, slog.New(slog.DiscardHandler))
	dup.now = clk.now
	dup.sleep = func(ctx context.Context, d time.Duration) error {
		clk.t = clk.t.Add(d)
		return restarted.Round(ctx) // a keeps heartbeating
	}
	if err := dup.Register(ctx); !errors.Is(err, ErrDuplicateReplica) || !strings.Contains(err.Error(), `replica_id "a" is in use`) {
		t.Fatalf("Register of a second process with a live id = %v", err)
	}

	// A finished shard's lease is not taken again.
	if err := cs[0].Finish(stacktest.Context(t, time.Minute), keys[0]); err != nil {
		t.Fatal(err)
	}
	count = round(t, live[:1], keys)
	if count["a"] != 5 || cs[0].Held(keys[0]) {
		t.Fatalf("after finishing one, a holds %d (finished held: %v)", count["a"], cs[0].Held(keys[0]))
	}
}

// countingWrites counts the lease-table writes.
type countingWrites struct {
	API
	n atomic.Int64
}

func (c *countingWrites) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.n.Add(1)
	return c.API.UpdateItem(ctx, in, opts...)
}

func (c *countingWrites) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.n.Add(1)
	return c.API.PutItem(ctx, in, opts...)
}

// failing makes a replica lose DynamoDB: while down, every call fails.
type failing struct {
	API
	down bool
}

func (f *failing) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	return f.API.UpdateItem(ctx, in, opts...)
}

func (f *failing) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	return f.API.Scan(ctx, in, opts...)
}

// TestFailingHeartbeatsGiveLeasesUp: a replica that cannot heartbeat stops using its leases (Held
// is false) before the lease duration has passed since its last heartbeat, which is the earliest
// any other replica can take them; once the others take them over, it does not take them back.
func TestFailingHeartbeatsGiveLeasesUp(t *testing.T) {
	cs, clk, keys := coordinators(t, "a", "b")
	var count map[string]int
	for r := 0; r < 20 && !balanced(count, 3, 3); r++ {
		count = round(t, cs, keys)
		clk.t = clk.t.Add(time.Second)
	}
	f := &failing{API: cs[0].api}
	cs[0].api = f
	f.down = true
	lastBeat := clk.t
	ctx := stacktest.Context(t, time.Minute)
	for clk.t.Sub(lastBeat) < cs[0].cfg.Duration {
		_ = cs[0].Round(ctx)
		if err := cs[1].Round(ctx); err != nil {
			t.Fatal(err)
		}
		held := 0
		for _, k := range keys {
			if cs[0].Held(k) {
				held++
				if cs[1].Held(k) {
					t.Fatalf("at %s both replicas hold %s", clk.t.Sub(lastBeat), k)
				}
			}
		}
		if held > 0 && clk.t.Sub(lastBeat) >= cs[0].cfg.Duration*2/3 {
			t.Fatalf("a still uses %d leases %s after its last heartbeat", held, clk.t.Sub(lastBeat))
		}
		clk.t = clk.t.Add(time.Second)
	}
	for r := 0; r < 10 && count["b"] != 6; r++ {
		_ = cs[0].Round(ctx)
		count = round(t, cs[1:], keys)
		clk.t = clk.t.Add(time.Second)
	}
	if count["b"] != 6 {
		t.Fatalf("b holds %v after a lost DynamoDB, want all 6", count)
	}
	f.down = false
	// A stolen lease is used only after its previous owner's next scan: a third of the duration
	// and a tenth more.
	for r := 0; r < 10; r++ {
		count = round(t, cs, keys)
		clk.t = clk.t.Add(time.Second)
	}
	// Back, a balances again by the rules (a steal of at most one per round), never by taking
	// leases b holds alive.
	if count["a"]+count["b"] != 6 || count["a"] == 0 {
		t.Fatalf("after a is back: %v", count)
	}
}
