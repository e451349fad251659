// Package connect opens what every ddb2delta service that moves change events needs: a Kafka
// client and a schema registry client, both reported on /readyz, and waits until the registry
// answers (with backoff, so a registry still starting delays the service instead of failing it).
package connect

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/health"
	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/serde"
)

// Clients are a service's connections.
type Clients struct {
	// KafkaOpts are the base options (brokers, TLS, SASL) for the service's own clients.
	KafkaOpts []kgo.Opt
	// Kafka is a shared client, for admin calls and the readiness check.
	Kafka *kgo.Client
	// Registry is the caching schema registry client.
	Registry *serde.Registry
}

// Open connects to Kafka and the registry and registers both readiness checks with h.
func Open(ctx context.Context, k kafkaclient.Config, r registry.Config, h *health.Server, log *slog.Logger) (*Clients, error) {
	opts, err := k.Opts()
	if err != nil {
		return nil, err
	}
	kc, err := kafkaclient.Connect(k, h)
	if err != nil {
		return nil, err
	}
	srcl, err := registry.Connect(r, h)
	if err != nil {
		kc.Close()
		return nil, err
	}
	reg := serde.NewRegistry(srcl, log)
	if err := reg.WaitReady(ctx); err != nil {
		kc.Close()
		return nil, err
	}
	return &Clients{KafkaOpts: opts, Kafka: kc, Registry: reg}, nil
}

// Close closes the Kafka client.
func (c *Clients) Close() { c.Kafka.Close() }
