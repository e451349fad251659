// Package stacktest gives integration tests the native local stack started by scripts/stack: its
// endpoints (read from scripts/stack.env, which the environment overrides exactly as the scripts
// do), AWS settings for its DynamoDB Local and versitygw, and, when a test fails, the tail of the
// logs of the components it used.
//
// Integration tests carry the build tag "integration" and run in `make test` after the stack is
// up. They fail, never skip, when the stack is not reachable: a skipped integration test would let
// a broken stack pass.
package stacktest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Stack describes the running native stack.
type Stack struct {
	Root string            // the repository root
	Env  map[string]string // scripts/stack.env, resolved, with environment overrides

	KafkaAddr     string // host:port of the broker
	RegistryURL   string // Confluent-compatible API base URL
	DynamoDBURL   string
	S3URL         string
	Bucket        string // created by scripts/stack up
	PrometheusURL string
	RunDir        string // data, logs and pids
	DeltaPython   string // python of the venv that has deltalake (delta-rs)
	SparkPython   string // python of the venv that has pyspark and delta-spark (Apache Spark + Delta Lake)
}

// Component names, as in scripts/stack and its log files.
const (
	Kafka      = "kafka"
	Registry   = "registry"
	DynamoDB   = "dynamodb"
	S3         = "s3"
	Prometheus = "prometheus"
)

// Load reads the stack's settings. It does not contact the stack.
func Load() (*Stack, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	env, err := readEnvFile(filepath.Join(root, "scripts", "stack.env"), root)
	if err != nil {
		return nil, err
	}
	s := &Stack{Root: root, Env: env}
	s.KafkaAddr = "127.0.0.1:" + env["STACK_KAFKA_PORT"]
	s.RegistryURL = "http://127.0.0.1:" + env["STACK_REGISTRY_PORT"] + "/apis/ccompat/v7"
	s.DynamoDBURL = "http://127.0.0.1:" + env["STACK_DYNAMODB_PORT"]
	s.S3URL = "http://127.0.0.1:" + env["STACK_S3_PORT"]
	s.Bucket = env["STACK_S3_BUCKET"]
	s.PrometheusURL = "http://127.0.0.1:" + env["STACK_PROMETHEUS_PORT"]
	s.RunDir = env["STACK_RUN_DIR"]
	s.DeltaPython = filepath.Join(s.RunDir, "venv", "bin", "python")
	s.SparkPython = filepath.Join(s.RunDir, "spark-venv", "bin", "python")
	return s, nil
}

// Require returns the stack after checking that each named component accepts connections,
// failing the test (not skipping it) otherwise. When the test fails later, the tail of each
// component's log is printed.
func Require(t testing.TB, components ...string) *Stack {
	t.Helper()
	s, err := Load()
	if err != nil {
		t.Fatalf("loading stack settings: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range components {
				t.Logf("--- last lines of %s ---\n%s", s.LogPath(c), s.LogTail(c, 15))
			}
		}
	})
	for _, c := range components {
		addr, err := s.addr(c)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("stack component %s is not reachable at %s (%v): start the stack with `make stack-up`", c, addr, err)
		}
		conn.Close()
	}
	return s
}

func (s *Stack) addr(component string) (string, error) {
	port := map[string]string{
		Kafka: "STACK_KAFKA_PORT", Registry: "STACK_REGISTRY_PORT", DynamoDB: "STACK_DYNAMODB_PORT",
		S3: "STACK_S3_PORT", Prometheus: "STACK_PROMETHEUS_PORT",
	}[component]
	if port == "" {
		return "", fmt.Errorf("unknown stack component %q", component)
	}
	return "127.0.0.1:" + s.Env[port], nil
}

// LogPath is the log file of a component.
func (s *Stack) LogPath(component string) string {
	return filepath.Join(s.RunDir, "logs", component+".log")
}

// LogTail returns the last n lines of a component's log, each cut to 400 bytes.
func (s *Stack) LogTail(component string, n int) string {
	raw, err := os.ReadFile(s.LogPath(component))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines { // a registry access line can run to kilobytes
		if len(l) > 400 {
			lines[i] = l[:400] + " …"
		}
	}
	return strings.Join(lines, "\n")
}

// AWSConfig is an SDK config with the stack's local credentials; pass s.DynamoDBURL or s.S3URL as
// the client's BaseEndpoint.
func (s *Stack) AWSConfig() aws.Config {
	return aws.Config{
		Region: s.Env["STACK_AWS_REGION"],
		Credentials: credentials.NewStaticCredentialsProvider(
			s.Env["STACK_AWS_ACCESS_KEY_ID"], s.Env["STACK_AWS_SECRET_ACCESS_KEY"], ""),
	}
}

// Context returns a context cancelled at the test's end or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls cond every interval until it returns nil or the deadline passes, then fails
// the test with cond's last error. It is how tests wait: never a bare sleep.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		// scripts/stack.env, not go.work: deploy/ has a go.work of its own
		if _, err := os.Stat(filepath.Join(dir, "scripts", "stack.env")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no scripts/stack.env above the working directory: run the tests inside the repository")
		}
		dir = parent
	}
}

// readEnvFile parses KEY=value lines as scripts/lib.sh does: the environment wins, and only
// ${HOME} and ${STACK_ROOT} are expanded.
func readEnvFile(path, root string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading stack settings: %w", err)
	}
	defer f.Close()
	home, _ := os.UserHomeDir()
	if h := os.Getenv("HOME"); h != "" {
		home = h
	}
	if r := os.Getenv("STACK_ROOT"); r != "" {
		root = r
	}
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: line %q is not KEY=value", path, line)
		}
		if e, ok := os.LookupEnv(k); ok {
			v = e
		}
		v = strings.NewReplacer("${HOME}", home, "${STACK_ROOT}", root).Replace(v)
		out[k] = v
	}
	return out, sc.Err()
}
