package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/twmb/franz-go/pkg/kgo"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/expr"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/keys"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/lookup"
	"github.com/ddb2delta/ddb2delta/services/enricher/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// Engine runs every pipeline of a process over batches of input records.
type Engine struct {
	pipelines []*compiled
	byTopic   map[string][]*compiled
	needs     map[string]map[string]bool // by topic: the variables its pipelines read
	dec       *serde.Decoder
	dlq       *serde.DeadLetterEncoder
	dlqTopic  string
	metrics   *Metrics
	log       *slog.Logger
}

// New compiles every pipeline (an error names the pipeline and expression) and registers each
// output's key schema and, for the fields whose types are known, its value schema.
func New(ctx context.Context, s *settings.Settings, src Sources, reg *serde.Registry, dlq *serde.DeadLetterEncoder, m *Metrics, log *slog.Logger) (*Engine, error) {
	e := &Engine{byTopic: map[string][]*compiled{}, needs: map[string]map[string]bool{}, dec: serde.NewDecoder(reg), dlq: dlq, dlqTopic: s.DeadLetters, metrics: m, log: log}
	for _, p := range s.Pipelines {
		c, err := compile(s, p, src)
		if err != nil {
			return nil, err
		}
		e.pipelines = append(e.pipelines, c)
		m.init(c)
		for _, in := range p.Inputs {
			e.byTopic[in] = append(e.byTopic[in], c)
			if e.needs[in] == nil {
				e.needs[in] = map[string]bool{}
			}
			maps.Copy(e.needs[in], c.refs)
		}
	}
	for _, c := range e.pipelines {
		var err error
		if c.enc, err = serde.NewTableEncoder(ctx, reg, c.output, c.name, ddbavro.Typed); err != nil {
			return nil, fmt.Errorf("pipeline %s: registering the output's schemas: %w", c.name, err)
		}
		if item, columns := declared(c.fields); len(item)+len(columns) > 0 {
			if err := c.enc.Declare(ctx, item, columns); err != nil {
				return nil, fmt.Errorf("pipeline %s: registering the output's schema: %w", c.name, err)
			}
		}
	}
	return e, nil
}

// Inputs returns every input topic.
func (e *Engine) Inputs() []string { return slices.Sorted(maps.Keys(e.byTopic)) }

// Outputs returns every output topic.
func (e *Engine) Outputs() []string {
	var out []string
	for _, c := range e.pipelines {
		out = append(out, c.output)
	}
	return out
}

// ErrTransient is returned (wrapped) when a batch could not be processed because a service did not
// answer: the caller aborts the transaction and tries the batch again.
var ErrTransient = errors.New("transient failure")

// failure is a dead letter's cause.
type failure struct {
	class string // decode, expression, join, schema, key
	err   error
}

func fail(class string, err error) *failure { return &failure{class: class, err: err} }

// work is one input event in one pipeline.
type work struct {
	rec  *kgo.Record
	key  avrov1.Key
	ev   *ddbavro.Event
	vars map[string]any
	raw  map[string]map[string]types.AttributeValue // after, before, item and each join: the images as they came
	dead *failure
	drop bool // filtered out or missed by an inner join
	// bare: a delete from a stream without old images. Nothing is known of the item, so no
	// filter or join can judge it: it passes as a delete of the key (harmless downstream when
	// the item was never output; needed when it was).
	bare bool
	out  *kgo.Record
}

// Process turns records into output records: for each input record in order, the enriched
// events of the pipelines reading its topic, or dead letters. Output order follows input order,
// so per-key order is kept. An error wrapping ErrTransient leaves nothing produced.
func (e *Engine) Process(ctx context.Context, recs []*kgo.Record) ([]*kgo.Record, error) {
	type decoded struct {
		key  avrov1.Key
		ev   *ddbavro.Event
		vars map[string]any
		dead *failure
	}
	dec := make([]decoded, len(recs))
	for i, r := range recs {
		d := &dec[i]
		if r.Value == nil {
			continue // a compaction tombstone: no change to enrich
		}
		var err error
		if d.key, err = e.dec.DecodeKey(r.Key); err != nil {
			d.dead = fail("decode", fmt.Errorf("key: %w", err))
			continue
		}
		d.ev, _, err = e.dec.Decode(ctx, r.Value)
		if serde.Transient(err) {
			return nil, fmt.Errorf("%w: decoding %s/%d@%d: %v", ErrTransient, r.Topic, r.Partition, r.Offset, err)
		}
		if err != nil {
			d.dead = fail("decode", err)
			continue
		}
		if d.vars, err = expr.VarsFor(d.ev, d.key, e.needs[r.Topic]); err != nil {
			d.dead = fail("decode", err)
		}
	}
	// Each pipeline's works, in input order.
	per := map[*compiled][]*work{}
	for i, r := range recs {
		d := &dec[i]
		if r.Value == nil {
			continue
		}
		for _, c := range e.byTopic[r.Topic] {
			w := &work{rec: r, key: d.key, ev: d.ev, dead: d.dead}
			if d.dead == nil {
				w.vars, w.raw = bind(d.ev, d.vars)
				w.bare = d.ev.Op == "d" && len(d.ev.Before) == 0
			}
			per[c] = append(per[c], w)
		}
	}
	for _, c := range e.pipelines {
		if err := e.run(ctx, c, per[c]); err != nil {
			return nil, err
		}
	}
	// Emit in input order.
	byRec := map[*kgo.Record][]*work{}
	for _, c := range e.pipelines {
		for _, w := range per[c] {
			byRec[w.rec] = append(byRec[w.rec], w)
		}
	}
	var out []*kgo.Record
	for _, r := range recs {
		dlqDone := false
		for _, w := range byRec[r] {
			switch {
			case w.dead != nil && !dlqDone:
				// One dead letter per input record, even when several pipelines read it and failed.
				dl, err := e.deadLetter(w)
				if err != nil {
					return nil, err
				}
				out = append(out, dl)
				dlqDone = true
			case w.out != nil:
				out = append(out, w.out)
			}
		}
	}
	return out, nil
}

// bind returns the variables of one pipeline's work (a copy: joins add theirs) and the images
// as they came, for copying attributes exactly.
func bind(ev *ddbavro.Event, base map[string]any) (map[string]any, map[string]map[string]types.AttributeValue) {
	raw := map[string]map[string]types.AttributeValue{"after": ev.After, "before": ev.Before, "item": ev.After}
	if ev.Op == "d" {
		raw["item"] = ev.Before
	}
	return maps.Clone(base), raw
}

// run takes one pipeline's works through filter, joins, projection and encoding.
func (e *Engine) run(ctx context.Context, c *compiled, works []*work) error {
	m := e.metrics
	m.in.WithLabelValues(c.name).Add(float64(len(works)))
	active := func(bare bool) []*work {
		var a []*work
		for _, w := range works {
			if w.dead == nil && !w.drop && (bare || !w.bare) {
				a = append(a, w)
			}
		}
		return a
	}
	filter := func() {
		for _, w := range active(false) {
			ok, err := c.filter.Bool(w.vars)
			if err != nil {
				w.dead = fail("expression", err)
			} else if !ok {
				w.drop = true
				m.filtered.WithLabelValues(c.name).Inc()
			}
		}
	}
	if c.filter != nil && !c.filterAfterJoins {
		filter()
	}
	for _, j := range c.joins {
		if err := e.join(ctx, c, j, active(false)); err != nil {
			return err
		}
	}
	if c.filter != nil && c.filterAfterJoins {
		filter()
	}
	for _, w := range active(true) {
		if err := e.emit(ctx, c, w); err != nil {
			return err
		}
	}
	for _, w := range works {
		if w.dead != nil {
			m.deadLetters.WithLabelValues(c.name, w.dead.class).Inc()
			e.log.Error("dead-lettering an event", "pipeline", c.name, "topic", w.rec.Topic, "partition", w.rec.Partition,
				"offset", w.rec.Offset, "class", w.dead.class, "error", w.dead.err)
		}
	}
	return nil
}

// join binds j's item to every active work: the keys of all of them are resolved at once.
func (e *Engine) join(ctx context.Context, c *compiled, j *join, works []*work) error {
	matches := make([][]byte, len(works))
	var reqs []lookup.Request
	for i, w := range works {
		key := map[string]types.AttributeValue{}
		for _, f := range j.on {
			v, err := value(f, w)
			if err == nil && v == nil {
				err = fmt.Errorf("pipeline %s, join %s, on %s: %q has no value", c.name, j.as, f.name, f.prog.Source)
			}
			if err == nil {
				err = keyKind(v)
			}
			if err != nil {
				w.dead = fail("join", fmt.Errorf("pipeline %s, join %s: %w", c.name, j.as, err))
				break
			}
			key[f.name] = v
		}
		if w.dead != nil {
			continue
		}
		if err := j.source.Check(key); err != nil {
			w.dead = fail("join", fmt.Errorf("pipeline %s, join %s: %w", c.name, j.as, err))
			continue
		}
		match, err := keys.Encode(key)
		if err != nil {
			w.dead = fail("join", fmt.Errorf("pipeline %s, join %s: %w", c.name, j.as, err))
			continue
		}
		matches[i] = match
		reqs = append(reqs, lookup.Request{Key: key, Match: match})
	}
	if len(reqs) == 0 {
		return nil
	}
	found, bad, err := j.source.Resolve(ctx, reqs)
	if err != nil {
		return fmt.Errorf("%w: pipeline %s, join %s (%s): %v", ErrTransient, c.name, j.as, j.what, err)
	}
	for i, w := range works {
		if matches[i] == nil {
			continue
		}
		if err := bad[string(matches[i])]; err != nil {
			w.dead = fail("join", fmt.Errorf("pipeline %s, join %s: %w", c.name, j.as, err))
			continue
		}
		item, ok := found[string(matches[i])]
		if ok {
			e.metrics.joins.WithLabelValues(c.name, j.as, "hit").Inc()
		} else {
			e.metrics.joins.WithLabelValues(c.name, j.as, "miss").Inc()
			// A delete always passes: dropping it would leave the item in a mirror downstream.
			if j.inner && w.ev.Op != "d" {
				w.drop = true
				e.metrics.dropped.WithLabelValues(c.name).Inc()
				continue
			}
		}
		w.vars[j.as], w.raw[j.as] = expr.Item(item), item
	}
	return nil
}

// keyKind checks that v can be part of a key.
func keyKind(v types.AttributeValue) error {
	switch v.(type) {
	case *types.AttributeValueMemberS, *types.AttributeValueMemberN, *types.AttributeValueMemberB:
		return nil
	}
	return fmt.Errorf("a key is a string, number or bytes, not %s", expr.Kind(v))
}

// value evaluates f for w: nil (and no error) when the result is an empty optional or a null
// the field does not keep. An expression that only names an attribute copies it as it is.
func value(f *field, w *work) (types.AttributeValue, error) {
	var v types.AttributeValue
	img, bound := map[string]types.AttributeValue(nil), false
	if cp := f.prog.Copy; cp != nil {
		img, bound = w.raw[cp.Var]
	}
	if bound {
		got, ok := img[f.prog.Copy.Name]
		if !ok {
			return nil, fmt.Errorf("%s: evaluating %q: no such key: %s", f.prog.Where, f.prog.Source, f.prog.Copy.Name)
		}
		v = got
	} else {
		res, err := f.prog.Eval(w.vars)
		if err != nil {
			return nil, err
		}
		a, ok, err := expr.Attribute(res)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", f.prog.Where, f.prog.Source, err)
		}
		if !ok {
			return nil, nil
		}
		v = a
	}
	return fit(f, v)
}

// fit checks v against the field's kind: a null of a typed field is left out, a list of strings
// or numbers becomes the set the field declares.
func fit(f *field, v types.AttributeValue) (types.AttributeValue, error) {
	got := expr.Kind(v)
	if f.kind == "" || got == f.kind {
		return v, nil
	}
	if got == "NULL" {
		return nil, nil
	}
	if l, ok := v.(*types.AttributeValueMemberL); ok && (f.kind == "SS" || f.kind == "NS") {
		if len(l.Value) == 0 {
			return nil, nil // DynamoDB has no empty sets
		}
		elem := map[string]string{"SS": "S", "NS": "N"}[f.kind]
		var out []string
		seen := map[string]bool{}
		for i, x := range l.Value {
			if expr.Kind(x) != elem {
				return nil, fmt.Errorf("%s: element %d of %q is %s; a %s holds only %s", f.prog.Where, i, f.prog.Source, expr.Kind(x), f.kind, elem)
			}
			s := ""
			if elem == "S" {
				s = x.(*types.AttributeValueMemberS).Value
			} else {
				s = x.(*types.AttributeValueMemberN).Value
			}
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
		if f.kind == "SS" {
			return &types.AttributeValueMemberSS{Value: out}, nil
		}
		return &types.AttributeValueMemberNS{Value: out}, nil
	}
	return nil, fmt.Errorf("%s: %q gave a %s; the field's type is %s", f.prog.Where, f.prog.Source, got, f.kind)
}

// emit builds w's output event and record.
func (e *Engine) emit(ctx context.Context, c *compiled, w *work) error {
	out := &ddbavro.Event{Op: w.ev.Op, TsMs: w.ev.TsMs, Source: w.ev.Source}
	if len(c.fields) == 0 {
		out.Before, out.After = w.ev.Before, w.ev.After
	} else if len(w.raw["item"]) > 0 {
		item := map[string]types.AttributeValue{}
		for _, f := range c.fields {
			v, err := value(f, w)
			if err != nil {
				w.dead = fail("expression", err)
				return nil
			}
			if v != nil {
				item[f.name] = v
			}
		}
		if w.ev.Op == "d" {
			out.Before = item
		} else {
			out.After = item
		}
	}
	key := w.key
	if len(c.key) > 0 {
		var err error
		if key, err = outputKey(c, w); err != nil {
			w.dead = fail("key", err)
			return nil
		}
	}
	k, v, err := c.enc.Encode(ctx, key, out)
	if serde.Transient(err) {
		return fmt.Errorf("%w: pipeline %s: encoding: %v", ErrTransient, c.name, err)
	}
	if err != nil {
		w.dead = fail("schema", fmt.Errorf("pipeline %s: encoding the output: %w", c.name, err))
		return nil
	}
	w.out = &kgo.Record{Topic: c.output, Key: k, Value: v}
	e.metrics.out.WithLabelValues(c.name).Inc()
	return nil
}

// outputKey evaluates the pipeline's key fields.
func outputKey(c *compiled, w *work) (avrov1.Key, error) {
	var k avrov1.Key
	for i, f := range c.key {
		v, err := value(f, w)
		if err == nil && v == nil {
			err = fmt.Errorf("%s: %q has no value", f.prog.Where, f.prog.Source)
		}
		if err == nil {
			err = keyKind(v)
		}
		if err != nil {
			return k, err
		}
		a := avrov1.KeyAttribute{Name: f.name}
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			a.S = &v.Value
		case *types.AttributeValueMemberN:
			n, err := ddbavro.CanonicalNumber(v.Value)
			if err != nil {
				return k, fmt.Errorf("%s: %w", f.prog.Where, err)
			}
			a.N = &n
		case *types.AttributeValueMemberB:
			a.B = &v.Value
		}
		if i == 0 {
			k.PartitionKey = a
		} else {
			k.SortKey = &a
		}
	}
	return k, nil
}

// deadLetter returns w's dead letter: the reason, and the original record's bytes and origin.
func (e *Engine) deadLetter(w *work) (*kgo.Record, error) {
	dl, err := e.dlq.Record(e.dlqTopic, "enricher", w.dead.class, w.dead.err, w.rec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTransient, err)
	}
	return dl, nil
}
