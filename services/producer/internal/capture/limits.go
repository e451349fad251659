package capture

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// batchOverhead bounds what Kafka adds around one record in a batch of its own: the record batch
// header (61 bytes) and the record's varint lengths, attributes and deltas.
const batchOverhead = 61 + 32

// messageLimits knows the largest record each topic takes: the smaller of the configured
// topics.max_message_bytes and the topic's own max.message.bytes (an existing topic, or a broker
// default, may be smaller than what the producer would create).
type messageLimits struct {
	adm        *kadm.Client
	configured int

	mu      sync.Mutex
	byTopic map[string]int
}

func newMessageLimits(adm *kadm.Client, configured int) *messageLimits {
	return &messageLimits{adm: adm, configured: configured, byTopic: map[string]int{}}
}

// limit returns topic's limit, asking the broker the first time (and after forget).
func (l *messageLimits) limit(ctx context.Context, topic string) (int, error) {
	l.mu.Lock()
	n, ok := l.byTopic[topic]
	l.mu.Unlock()
	if ok {
		return n, nil
	}
	rcs, err := l.adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("reading the configuration of topic %s: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return 0, fmt.Errorf("reading the configuration of topic %s: %w", topic, err)
	}
	n = l.configured
	for _, c := range rc.Configs {
		if c.Key != "max.message.bytes" || c.Value == nil {
			continue
		}
		if v, err := strconv.Atoi(*c.Value); err == nil && v < n {
			n = v
		}
	}
	l.mu.Lock()
	l.byTopic[topic] = n
	l.mu.Unlock()
	return n, nil
}

// known returns topic's limit if it was read already, else the configured one: franz-go asks for
// a topic's batch limit when it first produces to it, after limit has been called for the topic.
// franz-go takes limits from 512 bytes: a topic set below that gets 512, and the broker refuses
// what does not fit.
func (l *messageLimits) known(topic string) int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.byTopic[topic]
	if !ok {
		n = l.configured
	}
	return int32(max(n, 512))
}

// forget drops what is known of topics, so that the next limit asks the broker again (after the
// broker refused a record as too large: someone lowered the topic's max.message.bytes).
func (l *messageLimits) forget(topics ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range topics {
		delete(l.byTopic, t)
	}
}

// recordSize bounds the bytes r takes in a record batch of its own.
func recordSize(r *kgo.Record) int {
	n := batchOverhead + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// topicConfigs are the configs of a topic the producer creates.
func (l *messageLimits) topicConfigs(extra map[string]*string) map[string]*string {
	m := strconv.Itoa(l.configured)
	out := map[string]*string{"max.message.bytes": &m}
	for k, v := range extra {
		out[k] = v
	}
	return out
}
