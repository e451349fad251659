// Package awsconf builds aws-sdk-go-v2 configuration for a service's AWS section. Credentials
// always come from the SDK's default chain (environment, shared files, web identity / IRSA,
// container and instance roles); the config file never holds them.
package awsconf

import (
	"context"
	"fmt"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
)

// Config is an AWS section (dynamodb for the producer, s3 for the sink).
type Config struct {
	// Region is the AWS region. Default: empty, which lets the SDK's chain decide (AWS_REGION,
	// the shared config file, instance metadata).
	Region string `yaml:"region"`
	// Endpoint overrides the service endpoint, for DynamoDB Local, versitygw or MinIO. Default:
	// empty, the real AWS endpoint.
	Endpoint string `yaml:"endpoint"`
}

// Check adds every problem of the section to p, under key.
func (c Config) Check(p *config.Problems, key string) {
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.Add(config.Join(key, "endpoint"), "must be an http(s) URL, got %q", c.Endpoint)
		}
	}
}

// Load resolves the SDK configuration through the default credential chain.
func (c Config) Load(ctx context.Context) (aws.Config, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: no region: set the region key or AWS_REGION")
	}
	return cfg, nil
}

// BaseEndpoint returns the endpoint override for a service client's BaseEndpoint option, or nil.
func (c Config) BaseEndpoint() *string {
	if c.Endpoint == "" {
		return nil
	}
	return aws.String(c.Endpoint)
}
