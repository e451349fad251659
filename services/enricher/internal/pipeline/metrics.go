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

// deadLetterClasses are the classes a dead letter's failure has (see fail).
var deadLetterClasses = []string{"decode", "expression", "join", "key", "schema"}

// init creates a pipeline's series at zero when it is compiled: a dashboard shows every pipeline
// from the start, and increase() sees a counter's first event (a series born at 1 has no increase).
func (m *Metrics) init(c *compiled) {
	for _, v := range []*prometheus.CounterVec{m.in, m.out, m.filtered, m.dropped} {
		v.WithLabelValues(c.name)
	}
	for _, class := range deadLetterClasses {
		m.deadLetters.WithLabelValues(c.name, class)
	}
	for _, j := range c.joins {
		m.joins.WithLabelValues(c.name, j.as, "hit")
		m.joins.WithLabelValues(c.name, j.as, "miss")
	}
}
