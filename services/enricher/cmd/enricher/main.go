// Command enricher filters, joins and projects change events from Kafka into enriched topics.
//
// Pipelines arrive with the enricher's own issue; today the process loads and validates its
// configuration, connects to Kafka and the schema registry, and reports their reachability on
// /readyz.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
)

func main() {
	os.Exit(service.Main("enricher", settings.EnvPrefix, settings.Defaults(), run))
}

func run(ctx context.Context, rt *service.Runtime, s *settings.Settings) error {
	opts, err := s.Kafka.Opts()
	if err != nil {
		return err
	}
	kc, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating kafka client: %w", err)
	}
	defer kc.Close()
	rt.Health.AddCheck("kafka", kafkaclient.Ready(kc))

	sr, err := s.SchemaRegistry.Client()
	if err != nil {
		return err
	}
	rt.Health.AddCheck("schema_registry", registry.Ready(sr))

	rt.Log.Info("enricher started; pipelines are not implemented yet", "pipelines", len(s.Pipelines))
	<-ctx.Done()
	return nil
}
