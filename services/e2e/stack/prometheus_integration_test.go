//go:build integration

package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/health"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestPrometheusScrapesServices serves a service's metrics on the producer's port, as the real
// producer does, and waits until the stack's Prometheus has scraped them.
func TestPrometheusScrapesServices(t *testing.T) {
	s := stacktest.Require(t, stacktest.Prometheus)
	addr := "127.0.0.1:" + s.Env["STACK_PRODUCER_HTTP_PORT"]
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on the producer's metrics port %s (is a producer already running, e.g. make dev?): %v", addr, err)
	}
	srv := health.New("producer", "stacktest", slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })

	query := s.PrometheusURL + "/api/v1/query?query=" + url.QueryEscape(`ddb2delta_producer_build_info{service="producer",version="stacktest"}`)
	stacktest.Eventually(t, 60*time.Second, "prometheus has scraped the producer's metrics", func() error {
		resp, err := http.Get(query)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Status string
			Data   struct {
				Result []struct {
					Value []any
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err
		}
		if body.Status != "success" || len(body.Data.Result) != 1 || len(body.Data.Result[0].Value) != 2 || body.Data.Result[0].Value[1] != "1" {
			return fmt.Errorf("query answered %+v", body)
		}
		return nil
	})
}
