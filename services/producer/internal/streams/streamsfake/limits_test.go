package streamsfake

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
)

func TestWindowAdmitsAtMostNPerSlidingSecond(t *testing.T) {
	w := window{n: 2}
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, step := range []struct {
		ms   int
		want bool
	}{
		{0, true}, {400, true}, {500, false}, // two in (−600ms, 400ms]
		{999, false}, {1000, true}, // the call at 0 left the window at 1000
		{1300, false}, {1400, true}, {1401, false},
		{5000, true}, {5000, true}, {5000, false},
	} {
		if got := w.allow(at(step.ms)); got != step.want {
			t.Fatalf("allow at %dms = %v, want %v", step.ms, got, step.want)
		}
	}
	unlimited := window{}
	for range 1000 {
		if !unlimited.allow(t0) {
			t.Fatal("n = 0 must admit everything")
		}
	}
}

func TestDescribeStreamLimitIsSharedByTheAccount(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now, Limits: Limits{DescribeStreamPerSecond: 10}})
	s1, s2 := a.NewStream("orders"), a.NewStream("users")
	call := func(i int) error {
		// Alternate streams, and calls through the account and straight to the stream: one budget.
		s := []*Stream{s1, s2}[i%2]
		in := &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)}
		var err error
		if i%3 == 0 {
			_, err = a.DescribeStream(testCtx(t), in)
		} else {
			_, err = s.DescribeStream(testCtx(t), in)
		}
		return err
	}
	for i := range 10 {
		if err := call(i); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if err := call(10); !isThrottled(err) {
		t.Fatalf("11th call in the second: %v, want LimitExceededException", err)
	}
	c.Add(999 * time.Millisecond)
	if err := call(11); !isThrottled(err) {
		t.Fatalf("call 999ms later: %v", err)
	}
	c.Add(time.Millisecond)
	for i := range 10 {
		if err := call(i); err != nil {
			t.Fatalf("next second, call %d: %v", i, err)
		}
	}
	st := a.Stats()
	if st.DescribeStream.Calls != 22 || st.DescribeStream.Throttled != 2 {
		t.Fatalf("stats = %+v", st.DescribeStream)
	}
	// Throttled calls count in the peak of calls received: (-1ms, 999ms] holds the 11 calls at t0
	// and the one at 999ms.
	if st.DescribeStreamPeak != 12 {
		t.Fatalf("peak = %d, want 12", st.DescribeStreamPeak)
	}
}

func TestDescribeStreamPeakIsASlidingSecond(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now})
	s := a.NewStream("orders")
	burst := func(n int) {
		for range n {
			describe(t, a, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)})
		}
	}
	burst(3)                      // t = 0
	c.Add(600 * time.Millisecond) //
	burst(3)                      // t = 0.6: 6 in the last second
	c.Add(600 * time.Millisecond) //
	burst(2)                      // t = 1.2: 5 in (0.2, 1.2]
	c.Add(10 * time.Second)       //
	burst(1)                      //
	if got := a.Stats().DescribeStreamPeak; got != 6 {
		t.Fatalf("peak = %d, want 6", got)
	}
}

func TestListStreamsLimit(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now, Limits: AWSLimits()})
	a.NewStream("orders")
	for i := range 6 {
		_, err := a.ListStreams(testCtx(t), &dynamodbstreams.ListStreamsInput{})
		if (i < 5) != (err == nil) || i == 5 && !isThrottled(err) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	c.Add(time.Second)
	if _, err := a.ListStreams(testCtx(t), &dynamodbstreams.ListStreamsInput{}); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats().ListStreams; st.Calls != 7 || st.Throttled != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestGetRecordsRateIsPerShard(t *testing.T) {
	c := newClock()
	a := NewAccount(Options{Now: c.Now, Limits: Limits{GetRecordsPerSecond: 5}})
	s := a.NewStream("orders")
	s.Split("shard-0000", "shard-0001", "shard-0002")
	get := func(shard string) error {
		_, err := a.GetRecords(testCtx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: iter(t, a, s.ARN, shard)})
		return err
	}
	for i := range 5 {
		if err := get("shard-0001"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if err := get("shard-0001"); !isThrottled(err) {
		t.Fatalf("6th call on the shard: %v", err)
	}
	if err := get("shard-0002"); err != nil {
		t.Fatalf("another shard has its own budget: %v", err)
	}
	c.Add(time.Second)
	if err := get("shard-0001"); err != nil {
		t.Fatalf("next second: %v", err)
	}
	if st := a.Stats().GetRecords; st.Calls != 8 || st.Throttled != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// gate is an Options.Sleep that holds calls until released, so tests control what is in flight.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 100), release: make(chan struct{})} }

func (g *gate) sleep(ctx context.Context, _ time.Duration) error {
	g.entered <- struct{}{}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestGetRecordsInFlightPerShard(t *testing.T) {
	g := newGate()
	a := NewAccount(Options{Limits: Limits{GetRecordsInFlight: 2}, GetRecordsLatency: time.Second, Sleep: g.sleep})
	s := a.NewStream("orders")
	s.Put("shard-0000", insert("a"))
	it := iter(t, a, s.ARN, "shard-0000")
	get := func() error {
		_, err := a.GetRecords(testCtx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it})
		return err
	}

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() { errs <- get() })
	}
	<-g.entered
	<-g.entered
	// Two calls are in flight: a third is refused at once, without waiting for latency.
	if err := get(); !isThrottled(err) {
		t.Fatalf("third concurrent call: %v", err)
	}
	close(g.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("held call: %v", err)
		}
	}
	if err := get(); err != nil {
		t.Fatalf("after the others returned: %v", err)
	}
	if st := a.Stats().GetRecords; st.Calls != 4 || st.Throttled != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestGetRecordsLatencyHonorsContext(t *testing.T) {
	g := newGate()
	a := NewAccount(Options{Limits: Limits{GetRecordsInFlight: 1}, GetRecordsLatency: time.Hour, Sleep: g.sleep})
	s := a.NewStream("orders")
	it := iter(t, a, s.ARN, "shard-0000")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := a.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: it})
		done <- err
	}()
	<-g.entered
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("cancelled call: %v", err)
	}
	// The cancelled call no longer counts as in flight.
	close(g.release)
	if _, err := a.GetRecords(testCtx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it}); err != nil {
		t.Fatal(err)
	}
}

func TestThrottleCountsAsThrottled(t *testing.T) {
	s := New("orders")
	s.Throttle(2)
	for i := range 3 {
		_, err := s.DescribeStream(testCtx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)})
		if (i < 2) != isThrottled(err) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if st := s.Stats().DescribeStream; st.Calls != 3 || st.Throttled != 2 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestStatsAreSafeForConcurrentUse(t *testing.T) {
	a := NewAccount(Options{Limits: AWSLimits(), Now: func() time.Time { return t0 }}) // all calls in one instant
	s := a.NewStreamWithShards("orders", 4, Sim{})
	shards := s.OpenShards()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				_, _ = a.DescribeStream(context.Background(), &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.ARN)})
				out, err := a.GetShardIterator(context.Background(), &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(s.ARN), ShardId: aws.String(shards[i%4]), ShardIteratorType: "TRIM_HORIZON"})
				if err == nil {
					_, _ = a.GetRecords(context.Background(), &dynamodbstreams.GetRecordsInput{ShardIterator: out.ShardIterator})
				}
				s.PutRandom(1)
				_ = a.Stats()
			}
		})
	}
	wg.Wait()
	st := a.Stats()
	if st.DescribeStream.Calls != 400 || st.DescribeStream.Throttled != 390 || st.GetRecords.Calls != 400 || st.GetRecords.Throttled != 400-4*5 || st.DescribeStreamPeak != 400 {
		t.Fatalf("stats = %+v", st)
	}
}
