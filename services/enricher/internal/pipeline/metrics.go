package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pipelines' metrics.
type Metrics struct {
	in, out, filtered, dropped *prometheus.CounterVec
	deadLetters                *prometheus.CounterVec
	joins                      *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ddb2delta_enricher_" + name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	return &Metrics{
		in:       counter("events_in_total", "Input events a pipeline received.", "pipeline"),
		out:      counter("events_out_total", "Enriched events a pipeline produced.", "pipeline"),
		filtered: counter("events_filtered_total", "Events a pipeline's filter dropped.", "pipeline"),
		dropped:  counter("events_unmatched_total", "Events an inner join dropped for want of a match.", "pipeline"),
		deadLetters: counter("dead_letters_total", "Events sent to the dead-letter topic, by class: decode, expression, join, schema, key.",
			"pipeline", "class"),
		joins: counter("join_lookups_total", "Join lookups by result: hit or miss.", "pipeline", "join", "result"),
	}
}
