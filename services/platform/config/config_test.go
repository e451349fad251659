package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type tlsSection struct {
	Enabled bool   `yaml:"enabled"`
	CAFile  string `yaml:"ca_file"`
}

type kafkaSection struct {
	Brokers      []string      `yaml:"brokers"`
	Password     Secret        `yaml:"password"`
	PasswordFile string        `yaml:"password_file"`
	Timeout      time.Duration `yaml:"timeout"`
	TLS          tlsSection    `yaml:"tls"`
}

type table struct {
	Name string `yaml:"name"`
	Mode string `yaml:"mode"`
}

type testConfig struct {
	Kafka     kafkaSection      `yaml:"kafka"`
	Workers   int               `yaml:"workers"`
	Tables    []table           `yaml:"tables"`
	Routes    map[string]table  `yaml:"routes"`
	Labels    map[string]string `yaml:"labels"`
	validated bool
}

func (c *testConfig) Validate() error {
	c.validated = true
	var p Problems
	if len(c.Kafka.Brokers) == 0 {
		p.Add("kafka.brokers", "must list at least one broker")
	}
	if c.Workers < 1 {
		p.Add("workers", "must be at least 1, got %d", c.Workers)
	}
	return p.Err()
}

func defaults() *testConfig {
	return &testConfig{Kafka: kafkaSection{Brokers: []string{"localhost:9092"}, Timeout: time.Second}, Workers: 1}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadValid(t *testing.T) {
	path := writeFile(t, `
kafka:
  brokers: [a:1, b:2]
  timeout: 5s
  tls: {enabled: true}
workers: 3
tables:
  - {name: orders, mode: mirror}
  - name: users
routes:
  r1: {name: x}
labels: {team: data}
`)
	cfg := defaults()
	env := []string{"SVC_WORKERS=7", "SVC_KAFKA_TLS_CA_FILE=/ca.pem", "SVC_KAFKA_PASSWORD=hunter2", "OTHER_X=1", "SVC_CONFIG=/x.yaml"}
	if err := LoadEnviron(path, "SVC", env, cfg); err != nil {
		t.Fatalf("load: %v", err)
	}
	if !cfg.validated {
		t.Fatal("Validate was not called")
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"brokers", strings.Join(cfg.Kafka.Brokers, ","), "a:1,b:2"},
		{"timeout", cfg.Kafka.Timeout, 5 * time.Second},
		{"tls from file", cfg.Kafka.TLS.Enabled, true},
		{"ca from env", cfg.Kafka.TLS.CAFile, "/ca.pem"},
		{"env beats file", cfg.Workers, 7},
		{"tables", fmt.Sprint(cfg.Tables), "[{orders mirror} {users }]"},
		{"routes", cfg.Routes["r1"].Name, "x"},
		{"labels", cfg.Labels["team"], "data"},
		{"secret", cfg.Kafka.Password.Value(), "hunter2"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

func TestLoadDefaultsWithoutFile(t *testing.T) {
	cfg := defaults()
	if err := LoadEnviron("", "SVC", []string{"SVC_KAFKA_BROKERS= x:1 , y:2 ,"}, cfg); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Kafka.Brokers, "|"); got != "x:1|y:2" {
		t.Fatalf("brokers = %q", got)
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		env   []string
		wants []string // each must appear in the error
	}{
		{
			name:  "unknown keys at every depth, with line numbers",
			file:  "kafka:\n  brokrs: [x]\n  tls:\n    enabld: true\nworkerz: 2\ntables:\n  - {name: a, mod: x}\n",
			wants: []string{"kafka.brokrs (line 2): unknown key", "kafka.tls.enabld (line 4): unknown key", "workerz (line 5): unknown key", "tables[0].mod (line 7): unknown key"},
		},
		{
			name:  "bad values name the key",
			file:  "workers: many\nkafka:\n  timeout: soon\n",
			wants: []string{"workers (line 1)", "kafka.timeout (line 3)"},
		},
		{
			name:  "secret in file refused",
			file:  "kafka:\n  password: hunter2\n",
			wants: []string{"kafka.password (line 2)", "not read from the config file"},
		},
		{
			name:  "bad and unknown env",
			env:   []string{"SVC_WORKERS=lots", "SVC_KAFKA_TIMOUT=1s", "SVC_KAFKA_TIMEOUT=3 parsecs"},
			wants: []string{"SVC_WORKERS (key workers)", "SVC_KAFKA_TIMOUT: unknown environment variable", "SVC_KAFKA_TIMEOUT (key kafka.timeout)"},
		},
		{
			name:  "validation failures together",
			file:  "workers: 0\nkafka: {brokers: []}\n",
			wants: []string{"workers: must be at least 1, got 0", "kafka.brokers: must list at least one broker"},
		},
		{
			name:  "section given a scalar",
			file:  "kafka: yes\ntables: {a: 1}\n",
			wants: []string{"kafka (line 1): expected a mapping", "tables (line 2): expected a list"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			err := LoadEnviron(path, "SVC", tt.env, defaults())
			if err == nil {
				t.Fatal("load succeeded, want an error")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	err := LoadEnviron(filepath.Join(t.TempDir(), "nope.yaml"), "SVC", nil, defaults())
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v, want a not-exist error naming the file", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret("hunter2")
	js, _ := json.Marshal(struct{ P Secret }{s})
	for _, out := range []string{s.String(), fmt.Sprint(s), fmt.Sprintf("%+v", struct{ P Secret }{s}), string(js), s.LogValue().String()} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret leaked: %s", out)
		}
	}
	path := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(path, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := FromFile(Secret{}, path)
	if err != nil || got.Value() != "s3cret" {
		t.Fatalf("FromFile = %q, %v", got.Value(), err)
	}
}

func TestEnvVars(t *testing.T) {
	var names []string
	for _, v := range EnvVars("SVC", &testConfig{}) {
		names = append(names, v.Name+"="+v.Key)
	}
	got := strings.Join(names, " ")
	want := "SVC_KAFKA_BROKERS=kafka.brokers SVC_KAFKA_PASSWORD=kafka.password SVC_KAFKA_PASSWORD_FILE=kafka.password_file SVC_KAFKA_TIMEOUT=kafka.timeout SVC_KAFKA_TLS_ENABLED=kafka.tls.enabled SVC_KAFKA_TLS_CA_FILE=kafka.tls.ca_file SVC_WORKERS=workers"
	if got != want {
		t.Fatalf("EnvVars:\n got %s\nwant %s", got, want)
	}
}

// FuzzLoad feeds arbitrary YAML to the loader: it must return (an error or a config), never panic.
func FuzzLoad(f *testing.F) {
	f.Add("kafka: {brokers: [a]}\nworkers: 2\n")
	f.Add("tables: [{name: a}, *x]\n")
	f.Add("routes: {a: {name: [1]}}\nkafka: &x {tls: *x}\n")
	f.Add("- 1\n- 2\n")
	f.Fuzz(func(t *testing.T, body string) {
		path := filepath.Join(t.TempDir(), "f.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = LoadEnviron(path, "SVC", nil, defaults())
	})
}

func TestKeys(t *testing.T) {
	got := strings.Join(Keys(&testConfig{}), " ")
	want := "kafka.brokers kafka.password kafka.password_file kafka.timeout kafka.tls.enabled kafka.tls.ca_file workers tables tables[].name tables[].mode routes routes[].name routes[].mode labels"
	if got != want {
		t.Fatalf("Keys:\n got %s\nwant %s", got, want)
	}
}
