package k8s

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/ddb2delta/ddb2delta/services/e2e/proc"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// effective is the part of a service's -check-config output (its configuration after the file and
// the environment, as JSON with Go field names) that the manifests must agree with.
type effective struct {
	HTTP struct {
		Listen          string
		ShutdownTimeout time.Duration
	}
	Kafka         struct{ Brokers []string }
	ConsumerGroup string
	DynamoDB      struct{ Region string }
	Topics        struct{ Partitions int }
	Tables        []struct {
		Name   string
		Topics []string // the sink's tables
	}
	Pipelines []struct{ Inputs []string } // the enricher's
}

var (
	binsOnce sync.Once
	bins     map[string]string
	binsRoot string
	binsDir  string // removed by TestMain
)

// binaries builds the three services once for the package's tests.
func binaries(t *testing.T) (map[string]string, string) {
	t.Helper()
	binsOnce.Do(func() {
		s, err := stacktest.Load()
		if err != nil {
			t.Fatal(err)
		}
		binsRoot = s.Root
		dir, err := os.MkdirTemp("", "ddb2delta-k8s-bins-")
		if err != nil {
			t.Fatal(err)
		}
		binsDir = dir
		args := []string{"build", "-o", dir + string(os.PathSeparator)}
		bins = map[string]string{}
		for _, svc := range services {
			args = append(args, "./services/"+svc+"/cmd/"+svc)
			bins[svc] = filepath.Join(dir, svc)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = s.Root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building the services: %v\n%s", err, out)
		}
	})
	if bins == nil {
		t.Fatal("the services did not build (see the first test that tried)")
	}
	return bins, binsRoot
}

// podEnv is what a container of d would see in its environment, with its config file written
// to a temporary path: values as set, Secrets the overlay generates decoded, the downward API
// resolved. Optional Secrets the overlay only references (the operator creates them) are left
// out, as the kubelet does when they do not exist, or with withSecrets set to a placeholder.
func podEnv(t *testing.T, objs []object, d object, svc string, withSecrets bool) []string {
	t.Helper()
	c := container(d, svc)
	if c == nil {
		t.Fatalf("Deployment %s has no container %s", d.name(), svc)
	}
	var env []string
	for _, ef := range list(c, "envFrom") {
		name := str(ef, "secretRef", "name")
		sec := find(objs, "Secret", name)
		if sec == nil {
			t.Fatalf("envFrom names Secret %s, which the overlay does not generate", name)
		}
		for k := range asMap(get(sec, "data")) {
			env = append(env, k+"="+secretValue(t, sec, k))
		}
	}
	prefix := "DDB2DELTA_" + strings.ToUpper(svc)
	for _, e := range list(c, "env") {
		name := str(e, "name")
		var v string
		switch {
		case get(e, "valueFrom") == nil:
			v = str(e, "value")
		case get(e, "valueFrom", "fieldRef") != nil:
			if p := str(e, "valueFrom", "fieldRef", "fieldPath"); p != "metadata.name" {
				t.Fatalf("%s: fieldRef %s: the test resolves only metadata.name", name, p)
			}
			v = d.name() + "-7d9f8b6c5d-x2x4z"
		case get(e, "valueFrom", "resourceFieldRef") != nil:
			r := str(e, "valueFrom", "resourceFieldRef", "resource")
			kind, res, _ := strings.Cut(r, ".")
			q, err := resource.ParseQuantity(fmt.Sprint(get(c, "resources", kind, res)))
			if err != nil {
				t.Fatalf("%s: resourceFieldRef %s: %v", name, r, err)
			}
			v = strconv.FormatInt(q.Value(), 10)
		case get(e, "valueFrom", "secretKeyRef") != nil:
			sn, key := str(e, "valueFrom", "secretKeyRef", "name"), str(e, "valueFrom", "secretKeyRef", "key")
			if sec := find(objs, "Secret", sn); sec != nil {
				v = secretValue(t, sec, key)
			} else if get(e, "valueFrom", "secretKeyRef", "optional") != true {
				t.Fatalf("%s: Secret %s is neither generated nor optional", name, sn)
			} else if withSecrets {
				v = "placeholder-for-" + sn + "-" + key
			} else {
				continue
			}
		default:
			t.Fatalf("%s: unexpected valueFrom %v", name, get(e, "valueFrom"))
		}
		if name == prefix+"_CONFIG" {
			v = configFile(t, objs, d, c, v)
		}
		env = append(env, name+"="+v)
	}
	return env
}

// configFile writes the ConfigMap key mounted at path in c to a temporary file and returns its path.
func configFile(t *testing.T, objs []object, d object, c map[string]any, path string) string {
	t.Helper()
	for _, m := range list(c, "volumeMounts") {
		dir := str(m, "mountPath")
		if !strings.HasPrefix(path, dir+"/") {
			continue
		}
		for _, v := range list(d, "spec", "template", "spec", "volumes") {
			if str(v, "name") != str(m, "name") || get(v, "configMap") == nil {
				continue
			}
			cmName := str(v, "configMap", "name")
			cm := find(objs, "ConfigMap", cmName)
			if cm == nil {
				t.Fatalf("volume %s: ConfigMap %s is not in the overlay", str(v, "name"), cmName)
			}
			key := strings.TrimPrefix(path, dir+"/")
			data, ok := get(cm, "data", key).(string)
			if !ok {
				t.Fatalf("ConfigMap %s has no key %s (mounted at %s)", cmName, key, path)
			}
			f := filepath.Join(t.TempDir(), key)
			if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("%s is not a file of a mounted ConfigMap", path)
	return ""
}

func secretValue(t *testing.T, sec object, key string) string {
	t.Helper()
	raw, ok := get(sec, "data", key).(string)
	if !ok {
		t.Fatalf("Secret %s has no key %s", sec.name(), key)
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		t.Fatalf("Secret %s key %s: %v", sec.name(), key, err)
	}
	return string(b)
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// checkConfig runs the service's binary with -check-config in env and returns its configuration.
func checkConfig(t *testing.T, bin string, env []string) effective {
	t.Helper()
	cmd := exec.Command(bin, "-check-config")
	cmd.Env = append([]string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s rejects the pod's environment and config: %v\n%s", filepath.Base(bin), err, out)
	}
	var line struct{ Config effective }
	if err := json.Unmarshal(out, &line); err != nil {
		t.Fatalf("parsing -check-config output %q: %v", out, err)
	}
	return line.Config
}

// configs returns every service's effective configuration in an overlay.
func configs(t *testing.T, dir string, objs []object) map[string]effective {
	t.Helper()
	b, _ := binaries(t)
	out := map[string]effective{}
	for _, svc := range services {
		d := mustFind(t, dir, objs, "Deployment", "ddb2delta-"+svc)
		out[svc] = checkConfig(t, b[svc], podEnv(t, objs, d, svc, false))
		// With the optional Secrets created, and the settings that go with them (README.md, "Run
		// on Kubernetes"), every variable they fill is one the service accepts.
		p := "DDB2DELTA_" + strings.ToUpper(svc)
		checkConfig(t, b[svc], append(podEnv(t, objs, d, svc, true),
			p+"_KAFKA_SASL_MECHANISM=SCRAM-SHA-512", p+"_KAFKA_SASL_USERNAME=ddb2delta", p+"_SCHEMA_REGISTRY_USERNAME=ddb2delta"))
	}
	return out
}

// TestManifestsAgreeWithServices: each overlay's pods, as the kubelet would start them, are
// accepted by the real binaries, and the ports, probes, Services and grace periods agree with
// what the binaries were configured with.
func TestManifestsAgreeWithServices(t *testing.T) {
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs, _ := render(t, dir)
			cfgs := configs(t, dir, objs)
			for _, svc := range services {
				d := mustFind(t, dir, objs, "Deployment", "ddb2delta-"+svc)
				c := container(d, svc)
				cfg := cfgs[svc]
				_, port, err := net.SplitHostPort(cfg.HTTP.Listen)
				if err != nil {
					t.Fatalf("%s: http.listen %q: %v", svc, cfg.HTTP.Listen, err)
				}
				var httpPort string
				for _, p := range list(c, "ports") {
					if str(p, "name") == "http" {
						httpPort = fmt.Sprint(get(p, "containerPort"))
					}
				}
				if httpPort != port {
					t.Errorf("%s: container port http is %q, the service listens on %s", svc, httpPort, port)
				}
				for probe, path := range map[string]string{"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
					p := get(c, probe, "httpGet")
					if p == nil {
						t.Errorf("%s: no %s.httpGet", svc, probe)
						continue
					}
					if str(p, "path") != path {
						t.Errorf("%s: %s path %q, want %s", svc, probe, str(p, "path"), path)
					}
					if pp := fmt.Sprint(get(p, "port")); pp != "http" && pp != port {
						t.Errorf("%s: %s port %s, the service listens on %s", svc, probe, pp, port)
					}
				}
				pod := get(d, "spec", "template")
				if a := str(pod, "metadata", "annotations", "prometheus.io/port"); a != port {
					t.Errorf("%s: prometheus.io/port annotation %q, the service listens on %s", svc, a, port)
				}
				svcObj := mustFind(t, dir, objs, "Service", "ddb2delta-"+svc+"-metrics")
				for _, p := range list(svcObj, "spec", "ports") {
					if tp := fmt.Sprint(get(p, "targetPort")); tp != "http" && tp != port {
						t.Errorf("%s: Service port %v targets %s, the service listens on %s", svc, get(p, "name"), tp, port)
					}
				}
				grace, _ := num(get(pod, "spec", "terminationGracePeriodSeconds"))
				if time.Duration(grace)*time.Second <= cfg.HTTP.ShutdownTimeout {
					t.Errorf("%s: terminationGracePeriodSeconds %d is not above http.shutdown_timeout %s: a draining pod would be killed",
						svc, grace, cfg.HTTP.ShutdownTimeout)
				}
			}
		})
	}
}

// TestProbePathsAreServed starts each binary with the base overlay's config and environment
// (its dependencies unreachable) and checks that the probe paths the manifests use answer, and
// that the metrics path serves the service's metrics.
func TestProbePathsAreServed(t *testing.T) {
	objs, _ := render(t, "base")
	b, _ := binaries(t)
	for _, svc := range services {
		t.Run(svc, func(t *testing.T) {
			d := mustFind(t, "base", objs, "Deployment", "ddb2delta-"+svc)
			p := "DDB2DELTA_" + strings.ToUpper(svc)
			addr := proc.FreeAddr(t)
			// nothing is reachable: the probes must answer anyway (liveness up, readiness down)
			env := append(podEnv(t, objs, d, svc, false),
				p+"_HTTP_LISTEN="+addr, p+"_KAFKA_BROKERS=127.0.0.1:1", "HOME="+t.TempDir(),
				"AWS_ACCESS_KEY_ID=unused", "AWS_SECRET_ACCESS_KEY=unused", "AWS_EC2_METADATA_DISABLED=true")
			switch svc {
			case "producer", "enricher":
				env = append(env, p+"_DYNAMODB_ENDPOINT=http://127.0.0.1:1")
			case "sink":
				env = append(env, p+"_S3_ENDPOINT=http://127.0.0.1:1")
			}
			if svc == "enricher" {
				env = append(env, p+"_STATE_DIR="+t.TempDir())
			}
			pr := proc.Start(t, svc, b[svc], nil, env)
			base := "http://" + addr
			stacktest.Eventually(t, time.Minute, svc+" answers /healthz", func() error {
				if pr.Exited() {
					t.Fatalf("%s exited:\n%s", svc, pr.Output())
				}
				code, body, err := proc.Get(base + "/healthz")
				if err != nil {
					return err
				}
				if code != 200 {
					return fmt.Errorf("/healthz: %d %s", code, body)
				}
				return nil
			})
			code, body, err := proc.Get(base + "/readyz")
			if err != nil || (code != 200 && code != 503) {
				t.Errorf("/readyz: %d %v %s", code, err, body)
			}
			code, body, err = proc.Get(base + "/metrics")
			if err != nil || code != 200 || !strings.Contains(body, "ddb2delta_"+svc+"_build_info") {
				t.Errorf("/metrics: %d %v, ddb2delta_%s_build_info missing", code, err, svc)
			}
			if _, err := pr.Stop(syscall.SIGTERM, 45*time.Second); err != nil {
				t.Errorf("stopping %s: %v", svc, err)
			}
		})
	}
}
