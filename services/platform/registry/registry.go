// Package registry turns the schema_registry section of a service's config into a franz-go sr
// client for a Confluent-compatible schema registry (Apicurio's ccompat API, Confluent, Redpanda).
package registry

import (
	"context"
	"fmt"
	"net/url"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
)

// Config is the schema_registry section shared by every service.
type Config struct {
	// URL is the registry's Confluent-compatible base URL. Default:
	// http://127.0.0.1:18081/apis/ccompat/v7, the native stack's Apicurio.
	URL string `yaml:"url"`
	// Username enables HTTP basic auth; the password comes from the environment
	// (…_SCHEMA_REGISTRY_PASSWORD) or PasswordFile.
	Username     string        `yaml:"username"`
	Password     config.Secret `yaml:"password"`
	PasswordFile string        `yaml:"password_file"`
}

// Defaults returns the section's defaults.
func Defaults() Config {
	return Config{URL: "http://127.0.0.1:18081/apis/ccompat/v7"}
}

// Check adds every problem of the section to p, under key.
func (c Config) Check(p *config.Problems, key string) {
	u, err := url.Parse(c.URL)
	if c.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.Add(config.Join(key, "url"), "must be an http(s) URL, got %q", c.URL)
	}
	if c.Password.IsSet() && c.PasswordFile != "" {
		p.Add(config.Join(key, "password"), "set the password environment variable or password_file, not both")
	}
	if (c.Password.IsSet() || c.PasswordFile != "") && c.Username == "" {
		p.Add(config.Join(key, "username"), "must be set when a password is given")
	}
}

// Client returns an sr client for c.
func (c Config) Client() (*sr.Client, error) {
	opts := []sr.ClientOpt{sr.URLs(c.URL), sr.UserAgent("ddb2delta")}
	if c.Username != "" {
		pw, err := config.FromFile(c.Password, c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading schema_registry.password_file: %w", err)
		}
		opts = append(opts, sr.BasicAuth(c.Username, pw.Value()))
	}
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating schema registry client: %w", err)
	}
	return cl, nil
}

// Ready returns a readiness check that passes while the registry answers.
func Ready(cl *sr.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		if _, err := cl.Subjects(ctx); err != nil {
			return fmt.Errorf("listing schema registry subjects: %w", err)
		}
		return nil
	}
}

// Connect creates a client for c and registers its readiness check ("schema_registry") with the
// service's health server.
func Connect(c Config, h *health.Server) (*sr.Client, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	h.AddCheck("schema_registry", Ready(cl))
	return cl, nil
}
