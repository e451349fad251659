// Command enricher filters, joins and projects change events from Kafka into enriched topics.
//
// Pipelines arrive with the enricher's own issue; today the process loads and validates its
// configuration, connects to Kafka and the schema registry, and reports their reachability on
// /readyz.
package main

import (
	"context"
	"os"

	"github.com/ddb2delta/ddb2delta/services/enricher/internal/settings"
	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
)

func main() {
	os.Exit(service.Main("enricher", settings.EnvPrefix, settings.Defaults(), run))
}

func run(ctx context.Context, rt *service.Runtime, s *settings.Settings) error {
	kc, err := kafkaclient.Connect(s.Kafka, rt.Health)
	if err != nil {
		return err
	}
	defer kc.Close()
	if _, err := registry.Connect(s.SchemaRegistry, rt.Health); err != nil {
		return err
	}

	rt.Log.Info("enricher started; pipelines are not implemented yet", "pipelines", len(s.Pipelines))
	<-ctx.Done()
	return nil
}
