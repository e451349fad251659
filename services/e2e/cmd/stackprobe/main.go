// Command stackprobe waits until one component of the native stack answers a real request, so
// that scripts/stack up returns only once the stack can be used.
//
//	stackprobe [-timeout 120s] kafka 127.0.0.1:19092         a Kafka metadata request
//	stackprobe [-timeout 120s] http http://127.0.0.1:18081/x  an HTTP 200
//	stackprobe [-timeout 120s] dynamodb http://127.0.0.1:18000 a signed ListTables
//	stackprobe [-timeout 120s] [-bucket B] s3 http://127.0.0.1:17070
//	                                                          a signed ListBuckets (and creates B)
//
// AWS credentials come from the environment, as for every AWS client. It exits 0 once the
// component answers and 1 with the last error when the timeout passes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	timeout := flag.Duration("timeout", 120*time.Second, "how long to keep trying")
	flag.StringVar(&bucket, "bucket", "", "s3: create this bucket once the server answers, if missing")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: stackprobe [-timeout D] kafka|http|tcp|dynamodb|s3 ADDRESS")
		os.Exit(2)
	}
	kind, addr := flag.Arg(0), flag.Arg(1)
	probe, ok := probes[kind]
	if !ok {
		fmt.Fprintf(os.Stderr, "stackprobe: unknown component kind %q\n", kind)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var last error
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		last = probe(attempt, addr)
		cancelAttempt()
		if last == nil {
			return
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "stackprobe: %s at %s did not answer within %s: %v\n", kind, addr, *timeout, last)
			os.Exit(1)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

var bucket string

var probes = map[string]func(ctx context.Context, addr string) error{
	"kafka": func(ctx context.Context, addr string) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			return err
		}
		defer cl.Close()
		md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
		if err != nil {
			return err
		}
		if len(md.Brokers) == 0 {
			return errors.New("metadata lists no brokers")
		}
		return nil
	},
	"http": func(ctx context.Context, url string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("answered %s", resp.Status)
		}
		return nil
	},
	"tcp": func(ctx context.Context, addr string) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	},
	"dynamodb": func(ctx context.Context, url string) error {
		cfg, err := awsConfig(ctx)
		if err != nil {
			return err
		}
		_, err = dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(url) }).
			ListTables(ctx, &dynamodb.ListTablesInput{})
		return err
	},
	"s3": func(ctx context.Context, url string) error {
		cfg, err := awsConfig(ctx)
		if err != nil {
			return err
		}
		cl := s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(url); o.UsePathStyle = true })
		out, err := cl.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err != nil || bucket == "" {
			return err
		}
		for _, b := range out.Buckets {
			if aws.ToString(b.Name) == bucket {
				return nil
			}
		}
		if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			return fmt.Errorf("creating bucket %s: %w", bucket, err)
		}
		return nil
	},
}

func awsConfig(ctx context.Context) (aws.Config, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion("us-east-1"))
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
	}
	return cfg, nil
}
