package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
)

// S3API is the part of the S3 API a store calls. *s3.Client implements it.
type S3API interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, opts ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// S3 stores objects under a prefix of a bucket. It needs no lock service: commits are
// put-if-absent (If-None-Match: *), which S3 has offered since 2024 and versitygw and MinIO
// implement.
type S3 struct {
	api    S3API
	bucket string
	prefix string // "" or "a/b/"
}

// NewS3 returns a store of the table at s3://bucket/prefix.
func NewS3(api S3API, bucket, prefix string) *S3 {
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &S3{api: api, bucket: bucket, prefix: prefix}
}

// Location implements Store.
func (s *S3) Location() string { return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/") }

func (s *S3) key(name string) string { return s.prefix + name }

// Read implements Store.
func (s *S3) Read(ctx context.Context, name string) ([]byte, error) {
	out, err := s.api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(name))})
	if err != nil {
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) || code(err) == "NotFound" || code(err) == "NoSuchKey" {
			return nil, fmt.Errorf("s3://%s/%s: %w", s.bucket, s.key(name), ErrNotFound)
		}
		return nil, fmt.Errorf("reading s3://%s/%s: %w", s.bucket, s.key(name), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("reading s3://%s/%s: %w", s.bucket, s.key(name), err)
	}
	return b, nil
}

// Write implements Store.
func (s *S3) Write(ctx context.Context, name string, data []byte) error {
	_, err := s.api.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(name)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))})
	if err != nil {
		return fmt.Errorf("writing s3://%s/%s: %w", s.bucket, s.key(name), err)
	}
	return nil
}

// WriteIfAbsent implements Store with If-None-Match: *. S3 answers 412 PreconditionFailed when
// the key exists, and 409 ConditionalRequestConflict when another conditional write of the same
// key is in flight: that one is retried, and then meets the winner's object.
func (s *S3) WriteIfAbsent(ctx context.Context, name string, data []byte) error {
	b := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for attempt := 0; ; attempt++ {
		_, err := s.api.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(name)),
			Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), IfNoneMatch: aws.String("*")})
		switch c := code(err); {
		case err == nil:
			return nil
		case c == "PreconditionFailed":
			return fmt.Errorf("s3://%s/%s: %w", s.bucket, s.key(name), ErrExists)
		case c == "ConditionalRequestConflict" && attempt < 5:
			if err := backoff.Sleep(ctx, b.Next()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("writing s3://%s/%s if absent: %w", s.bucket, s.key(name), err)
		}
	}
}

// List implements Store.
func (s *S3) List(ctx context.Context, prefix, startAfter string) ([]Object, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.key(prefix))}
	if startAfter != "" {
		in.StartAfter = aws.String(s.key(startAfter))
	}
	var out []Object
	p := s3.NewListObjectsV2Paginator(s.api, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing s3://%s/%s: %w", s.bucket, s.key(prefix), err)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if name <= startAfter {
				continue
			}
			out = append(out, Object{Name: name, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)})
		}
	}
	return out, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, name string) error {
	if _, err := s.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(name))}); err != nil {
		return fmt.Errorf("deleting s3://%s/%s: %w", s.bucket, s.key(name), err)
	}
	return nil
}

func code(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}
