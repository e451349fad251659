//go:build integration

package lease

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
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

	// c dies (stops renewing): once its leases have not moved for the lease duration, as a and b
	// observe it (from the first scan after c's last renewal), they take them over.
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

	// a restarts under the same id (after a crash): it holds nothing yet, and takes back the
	// leases its earlier incarnation held at once, without waiting for them to expire.
	restarted := New(cs[0].api, cs[0].cfg, slog.New(slog.DiscardHandler))
	restarted.now = clk.now
	restarted.Offer(keys)
	cs[0] = restarted
	if count = round(t, cs[:1], keys); count["a"] != 6 {
		t.Fatalf("restarted a holds %d, want its 6 back at once", count["a"])
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
