// Package compose checks docker-compose.yml without a Docker engine: it loads the file with
// compose-go (as `docker compose` does), then checks that it agrees with the code: every ddb2delta
// service's environment and mounted config are accepted by the real binary (-check-config), every
// endpoint a service is configured with names a compose service on a port that service exposes,
// health checks and Prometheus targets use the ports the services listen on, images are pinned,
// and our containers run as non-root with a read-only root filesystem.
package compose

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/ddb2delta/ddb2delta/services/e2e/proc"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// ourServices are the ddb2delta services with a config file and /metrics.
var ourServices = []string{"producer", "enricher", "sink"}

func loadProject(t *testing.T) (*types.Project, string) {
	t.Helper()
	s, err := stacktest.Load()
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(s.Root, "docker-compose.yml")},
		cli.WithWorkingDirectory(s.Root), cli.WithName("ddb2delta"), cli.WithEnv([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p, s.Root
}

// effectiveConfig is the part of a service's -check-config output the checks need. The config is
// logged as JSON with Go field names.
type effectiveConfig struct {
	HTTP           struct{ Listen string }
	Kafka          struct{ Brokers []string }
	SchemaRegistry struct{ URL string }
	DynamoDB       struct{ Endpoint string }
	S3             struct{ Endpoint string }
}

func TestComposeAgreesWithServices(t *testing.T) {
	p, root := loadProject(t)
	bins := proc.Build(t, root, ourServices...)
	listenPorts := map[string]string{}

	for _, name := range ourServices {
		t.Run(name, func(t *testing.T) {
			svc, err := p.GetService(name)
			if err != nil {
				t.Fatalf("no %s service: %v", name, err)
			}
			prefix := "DDB2DELTA_" + strings.ToUpper(name)
			env := []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
			for k, v := range svc.Environment {
				if v == nil {
					t.Errorf("environment %s has no value", k)
					continue
				}
				if k == prefix+"_CONFIG" {
					host, ok := hostPathOf(svc, *v)
					if !ok {
						t.Fatalf("%s=%s is not a file mounted from the repository", k, *v)
					}
					env = append(env, k+"="+host)
					continue
				}
				env = append(env, k+"="+*v)
			}
			cmd := exec.Command(bins[name], "-check-config")
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s rejects its compose environment and config: %v\n%s", name, err, out)
			}
			var line struct{ Config effectiveConfig }
			if err := json.Unmarshal(out, &line); err != nil {
				t.Fatalf("parsing -check-config output %q: %v", out, err)
			}
			cfg := line.Config

			_, port, err := net.SplitHostPort(cfg.HTTP.Listen)
			if err != nil {
				t.Fatalf("http.listen %q: %v", cfg.HTTP.Listen, err)
			}
			listenPorts[name] = port
			if !slices.ContainsFunc(svc.Ports, func(pc types.ServicePortConfig) bool { return strconv.Itoa(int(pc.Target)) == port }) {
				t.Errorf("http.listen port %s is not published (ports: %+v)", port, svc.Ports)
			}
			if svc.HealthCheck == nil || !slices.Equal(svc.HealthCheck.Test, []string{"CMD", "/app", "-healthcheck"}) {
				t.Errorf("healthcheck should run the binary's -healthcheck, got %+v", svc.HealthCheck)
			}

			refs := map[string]string{}
			for _, b := range cfg.Kafka.Brokers {
				refs["kafka.brokers "+b] = b
			}
			refs["schema_registry.url"] = hostPort(t, cfg.SchemaRegistry.URL)
			if cfg.DynamoDB.Endpoint != "" {
				refs["dynamodb.endpoint"] = hostPort(t, cfg.DynamoDB.Endpoint)
			}
			if cfg.S3.Endpoint != "" {
				refs["s3.endpoint"] = hostPort(t, cfg.S3.Endpoint)
			}
			for key, addr := range refs {
				if err := exposedBy(p, addr); err != nil {
					t.Errorf("%s: %v", key, err)
				}
				if depErr := dependsOn(svc, addr); depErr != nil {
					t.Errorf("%s: %v", key, depErr)
				}
			}
		})
	}

	t.Run("prometheus scrapes every service on its port", func(t *testing.T) {
		prom, err := p.GetService("prometheus")
		if err != nil {
			t.Fatal(err)
		}
		host, ok := hostPathOf(prom, "/etc/prometheus/prometheus.yml")
		if !ok {
			t.Fatal("prometheus.yml is not mounted from the repository")
		}
		targets := scrapeTargets(t, host)
		for _, name := range ourServices {
			want := net.JoinHostPort(name, listenPorts[name])
			if !slices.Contains(targets, want) {
				t.Errorf("prometheus does not scrape %s (targets %v)", want, targets)
			}
		}
	})
}

func TestComposeImagesAndContainers(t *testing.T) {
	p, root := loadProject(t)
	for name, svc := range p.Services {
		t.Run(name, func(t *testing.T) {
			if svc.Build != nil {
				if _, err := os.Stat(filepath.Join(svc.Build.Context, svc.Build.Dockerfile)); err != nil {
					t.Errorf("dockerfile: %v", err)
				}
				pkg := svc.Build.Args["PACKAGE"]
				bin := svc.Build.Args["BINARY"]
				if pkg == nil || bin == nil {
					t.Fatalf("build args PACKAGE and BINARY must be set, got %v", svc.Build.Args)
				}
				if _, err := os.Stat(filepath.Join(root, *pkg, "main.go")); err != nil {
					t.Errorf("build arg PACKAGE=%s: %v", *pkg, err)
				}
				if filepath.Base(*pkg) != *bin {
					t.Errorf("BINARY=%s does not match PACKAGE=%s", *bin, *pkg)
				}
				if svc.User == "" || strings.HasPrefix(svc.User, "0") || svc.User == "root" {
					t.Errorf("our containers run as non-root, got user %q", svc.User)
				}
				if !svc.ReadOnly {
					t.Error("our containers have a read-only root filesystem")
				}
				return
			}
			img := svc.Image
			i := strings.LastIndex(img, ":")
			if i < 0 || strings.Contains(img[i:], "/") || img[i+1:] == "latest" {
				t.Errorf("image %q is not pinned to a version tag", img)
			}
			for _, v := range svc.Volumes {
				if v.Type == types.VolumeTypeBind {
					if _, err := os.Stat(v.Source); err != nil {
						t.Errorf("bind mount source: %v", err)
					}
				}
			}
		})
	}
}

// hostPathOf maps a container path to the repository file bind-mounted there.
func hostPathOf(svc types.ServiceConfig, target string) (string, bool) {
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			if _, err := os.Stat(v.Source); err == nil {
				return v.Source, true
			}
		}
	}
	return "", false
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Fatalf("%q is not a URL with a host", raw)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), map[string]string{"https": "443"}[u.Scheme]+map[string]string{"http": "80"}[u.Scheme])
	}
	return u.Host
}

// exposedBy checks that addr is host:port of a compose service that exposes or publishes port.
func exposedBy(p *types.Project, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	svc, err := p.GetService(host)
	if err != nil {
		return fmt.Errorf("%s names no compose service", addr)
	}
	if slices.Contains(svc.Expose, port) {
		return nil
	}
	for _, pc := range svc.Ports {
		if strconv.Itoa(int(pc.Target)) == port {
			return nil
		}
	}
	return fmt.Errorf("%s: service %s does not expose port %s (expose %v)", addr, host, port, svc.Expose)
}

func dependsOn(svc types.ServiceConfig, addr string) error {
	host, _, _ := net.SplitHostPort(addr)
	if _, ok := svc.DependsOn[host]; !ok {
		return fmt.Errorf("uses %s but does not depend_on %s", addr, host)
	}
	return nil
}

func scrapeTargets(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			out = append(out, st.Targets...)
		}
	}
	return out
}
