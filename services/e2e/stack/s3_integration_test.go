//go:build integration

package stack

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestS3PutIfAbsent writes the same key twice with If-None-Match: * and checks the second write is
// refused with 412 and leaves the first body in place: the primitive Delta commits rely on.
func TestS3PutIfAbsent(t *testing.T) {
	s := stacktest.Require(t, stacktest.S3)
	ctx := stacktest.Context(t, 30*time.Second)
	cl := s3.NewFromConfig(s.AWSConfig(), func(o *s3.Options) { o.BaseEndpoint = aws.String(s.S3URL); o.UsePathStyle = true })
	key := fmt.Sprintf("stacktest/%d/_delta_log/00000000000000000000.json", time.Now().UnixNano())

	put := func(body string) error {
		_, err := cl.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(s.Bucket), Key: aws.String(key), Body: strings.NewReader(body), IfNoneMatch: aws.String("*"),
		})
		return err
	}
	if err := put("first"); err != nil {
		t.Fatalf("first put-if-absent of %s: %v", key, err)
	}
	err := put("second")
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "PreconditionFailed" {
		t.Fatalf("second put-if-absent of %s: got %v, want PreconditionFailed", key, err)
	}
	obj, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Body.Close()
	body, _ := io.ReadAll(obj.Body)
	if string(body) != "first" {
		t.Fatalf("object body = %q after a refused overwrite, want %q", body, "first")
	}
}
