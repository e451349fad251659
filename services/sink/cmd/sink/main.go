// Command sink writes change events from Kafka into Delta Lake tables.
//
// Delta writing arrives with the sink's own issue; today the process loads and validates its
// configuration, connects to Kafka and the schema registry, and reports their reachability on
// /readyz.
package main

import (
	"context"
	"os"

	"github.com/ddb2delta/ddb2delta/services/platform/kafkaclient"
	"github.com/ddb2delta/ddb2delta/services/platform/registry"
	"github.com/ddb2delta/ddb2delta/services/platform/service"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/settings"
)

func main() {
	os.Exit(service.Main("sink", settings.EnvPrefix, settings.Defaults(), run))
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

	rt.Log.Info("sink started; Delta writing is not implemented yet", "tables", len(s.Tables))
	<-ctx.Done()
	return nil
}
