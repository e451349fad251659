//go:build integration

package proc

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestServicesStartReadyAndStop runs the three real binaries with the sample configs against the
// stack: each becomes ready (Kafka, the registry and, for the producer, DynamoDB reachable), serves
// its metrics, and exits 0 on SIGTERM.
func TestServicesStartReadyAndStop(t *testing.T) {
	s := stacktest.Require(t, stacktest.Kafka, stacktest.Registry, stacktest.DynamoDB)
	bins := Build(t, s.Root, "producer", "enricher", "sink")
	for _, name := range []string{"producer", "enricher", "sink"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			addr := FreeAddr(t)
			prefix := "DDB2DELTA_" + strings.ToUpper(name)
			p := Start(t, name, bins[name], []string{"-config", filepath.Join(s.Root, "deploy", "config", name+".yaml")},
				append(AWSEnv(s), prefix+"_HTTP_LISTEN="+addr))
			WaitReady(t, p, "http://"+addr)
			code, body, err := Get("http://" + addr + "/metrics")
			if err != nil || code != 200 || !strings.Contains(body, fmt.Sprintf("ddb2delta_%s_build_info", name)) {
				t.Fatalf("/metrics = %d %v:\n%.500s", code, err, body)
			}
			exit, err := p.Stop(syscall.SIGTERM, 30*time.Second)
			if err != nil || exit != 0 {
				t.Fatalf("after SIGTERM: exit %d, %v", exit, err)
			}
			if !strings.Contains(p.Output(), `"msg":"stopped"`) {
				t.Fatalf("no clean-stop log line:\n%s", p.Output())
			}
		})
	}
}

// TestUnreachableKafkaIsNotReadyButAlive points a service at a port where no broker listens: it
// stays alive (no crash loop), /readyz says which dependency fails, and SIGTERM still stops it.
func TestUnreachableKafkaIsNotReadyButAlive(t *testing.T) {
	s := stacktest.Require(t, stacktest.Registry)
	bins := Build(t, s.Root, "sink")
	addr := FreeAddr(t)
	p := Start(t, "sink", bins["sink"], []string{"-config", filepath.Join(s.Root, "deploy", "config", "sink.yaml")},
		[]string{"DDB2DELTA_SINK_HTTP_LISTEN=" + addr, "DDB2DELTA_SINK_KAFKA_BROKERS=" + FreeAddr(t)})
	stacktest.Eventually(t, 30*time.Second, "/readyz reports kafka unreachable", func() error {
		if p.Exited() {
			t.Fatalf("sink exited with an unreachable broker:\n%s", p.Output())
		}
		code, body, err := Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		if code != 503 || !strings.Contains(body, `"kafka"`) {
			return fmt.Errorf("/readyz = %d %s", code, body)
		}
		return nil
	})
	if code, _, err := Get("http://" + addr + "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz = %d %v; the process should be live", code, err)
	}
	if exit, err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil || exit != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v", exit, err)
	}
}

// TestBadConfigExitsWithEveryProblem starts a service with a broken config: it exits 2 at once and
// names each bad key.
func TestBadConfigExitsWithEveryProblem(t *testing.T) {
	s, err := stacktest.Load()
	if err != nil {
		t.Fatal(err)
	}
	bins := Build(t, s.Root, "producer")
	p := Start(t, "producer", bins["producer"], []string{"-config", filepath.Join(s.Root, "deploy", "config", "producer.yaml")},
		[]string{"DDB2DELTA_PRODUCER_KAFKA_BROKERS=", "DDB2DELTA_PRODUCER_LOG_LEVEL=chatty", "DDB2DELTA_PRODUCER_TOPIC_PREFX=x"})
	exit, err := p.Wait(30 * time.Second)
	if err != nil || exit != 2 {
		t.Fatalf("exit %d, %v; want 2", exit, err)
	}
	for _, want := range []string{"kafka.brokers: must list at least one broker", `log.level: unknown level "chatty"`, "DDB2DELTA_PRODUCER_TOPIC_PREFX: unknown environment variable"} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("output does not mention %q:\n%s", want, p.Output())
		}
	}
}
