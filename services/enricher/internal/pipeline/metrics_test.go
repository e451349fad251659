package pipeline

import (
	"context"
	"log/slog"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// TestMetricsExistBeforeTheFirstEvent: once the pipelines are compiled, each one's counters are
// exported at zero (every dead-letter class, each join's hits and misses), so an increase() alert
// sees the first event.
func TestMetricsExistBeforeTheFirstEvent(t *testing.T) {
	ctx := context.Background()
	reg := registry(t)
	st := load(t, pipelineYAML)
	dlq, err := serde.NewDeadLetterEncoder(ctx, reg, st.DeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	src := Sources{
		Global:  map[string]Source{"customers": &mapSource{names: []string{"id"}, items: map[string]map[string]types.AttributeValue{}}},
		Lookups: map[string]Source{"products": &mapSource{names: []string{"sku"}, items: map[string]map[string]types.AttributeValue{}}},
	}
	pr := prometheus.NewPedanticRegistry()
	if _, err := New(ctx, st, src, reg, dlq, NewMetrics(pr), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{ // family → series, for big_orders (two joins) and by_customer (one)
		"ddb2delta_enricher_events_in_total":        2,
		"ddb2delta_enricher_events_out_total":       2,
		"ddb2delta_enricher_events_filtered_total":  2,
		"ddb2delta_enricher_events_unmatched_total": 2,
		"ddb2delta_enricher_dead_letters_total":     2 * len(deadLetterClasses),
		"ddb2delta_enricher_join_lookups_total":     2 * 3,
	}
	for name, n := range want {
		if got := testutil.CollectAndCount(pr, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
}
