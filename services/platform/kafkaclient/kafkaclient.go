// Package kafkaclient turns the kafka section of a service's config into franz-go client options:
// brokers, client id, TLS and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
package kafkaclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
)

// Config is the kafka section shared by every service.
type Config struct {
	// Brokers are the seed brokers, host:port. Default: 127.0.0.1:19092, the native stack's broker.
	Brokers []string `yaml:"brokers"`
	// ClientID identifies the service in broker logs and quotas. Default: the service name.
	ClientID string    `yaml:"client_id"`
	TLS      TLSConfig `yaml:"tls"`
	SASL     SASL      `yaml:"sasl"`
}

// TLSConfig enables TLS to the brokers. With Enabled and no CAFile, the system roots are trusted.
type TLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of CAs to trust instead of the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate for mutual TLS; set both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked against the broker certificates.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate checks. Only for local testing.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASL authenticates to the brokers. Mechanism "" disables SASL.
type SASL struct {
	// Mechanism is one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password comes from the environment (…_KAFKA_SASL_PASSWORD) or from PasswordFile, never
	// from the config file.
	Password     config.Secret `yaml:"password"`
	PasswordFile string        `yaml:"password_file"`
}

// Mechanisms lists the supported SASL mechanisms.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// Defaults returns the kafka section's defaults for a service.
func Defaults(service string) Config {
	return Config{Brokers: []string{"127.0.0.1:19092"}, ClientID: "ddb2delta-" + service}
}

// Check adds every problem of the section to p, under key.
func (c Config) Check(p *config.Problems, key string) {
	if len(c.Brokers) == 0 {
		p.Add(config.Join(key, "brokers"), "must list at least one broker")
	}
	for _, b := range c.Brokers {
		if i := strings.LastIndexByte(b, ':'); i <= 0 || i == len(b)-1 {
			p.Add(config.Join(key, "brokers"), "broker %q is not host:port", b)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		p.Add(config.Join(key, "tls"), "cert_file and key_file must be set together")
	}
	if (c.TLS.CAFile != "" || c.TLS.CertFile != "") && !c.TLS.Enabled {
		p.Add(config.Join(key, "tls.enabled"), "must be true when TLS files are set")
	}
	switch {
	case c.SASL.Mechanism == "":
		if c.SASL.Username != "" || c.SASL.Password.IsSet() || c.SASL.PasswordFile != "" {
			p.Add(config.Join(key, "sasl.mechanism"), "must be set when SASL credentials are given (one of %s)", strings.Join(Mechanisms, ", "))
		}
	case !slices.Contains(Mechanisms, c.SASL.Mechanism):
		p.Add(config.Join(key, "sasl.mechanism"), "%q is not one of %s", c.SASL.Mechanism, strings.Join(Mechanisms, ", "))
	default:
		if c.SASL.Username == "" {
			p.Add(config.Join(key, "sasl.username"), "must be set for SASL %s", c.SASL.Mechanism)
		}
		if c.SASL.Password.IsSet() == (c.SASL.PasswordFile != "") {
			p.Add(config.Join(key, "sasl.password"), "set exactly one of the password environment variable and sasl.password_file")
		}
	}
}

// Opts returns the franz-go options for c. Callers append their own (consumer group, transactional
// id, …). It reads the TLS and password files, so it fails when one is unreadable.
func (c Config) Opts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.build()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if c.SASL.Mechanism != "" {
		m, err := c.SASL.build()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

func (t TLSConfig) build() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, documented as test-only
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading kafka.tls.ca_file %s: no PEM certificates found", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading kafka.tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (s SASL) build() (sasl.Mechanism, error) {
	pw, err := config.FromFile(s.Password, s.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("reading kafka.sasl.password_file: %w", err)
	}
	switch s.Mechanism {
	case "PLAIN":
		return plain.Auth{User: s.Username, Pass: pw.Value()}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.Username, Pass: pw.Value()}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.Username, Pass: pw.Value()}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism %q is not supported", s.Mechanism)
}

// Ready returns a readiness check that passes while cl can reach a broker.
func Ready(cl *kgo.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := cl.Ping(ctx); err != nil {
			return fmt.Errorf("pinging kafka: %w", err)
		}
		return nil
	}
}

// Connect creates a client for c with extra options and registers its readiness check ("kafka")
// with the service's health server. The caller closes the client.
func Connect(c Config, h *health.Server, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := c.Opts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka client: %w", err)
	}
	h.AddCheck("kafka", Ready(cl))
	return cl, nil
}
