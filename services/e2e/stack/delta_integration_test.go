//go:build integration

package stack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/parquet-go/parquet-go"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

type deltaRow struct {
	ID   int64  `parquet:"id"`
	Name string `parquet:"name"`
}

// deltaTable builds a two-commit Delta table in memory: file path → contents. It is a minimal
// hand-written table (protocol 1/2, one metaData, two add actions) that checks the reader here, not
// ddb2delta's writer, which has its own tests.
func deltaTable(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	schema := `{"type":"struct","fields":[{"name":"id","type":"long","nullable":false,"metadata":{}},{"name":"name","type":"string","nullable":false,"metadata":{}}]}`
	batches := [][]deltaRow{{{1, "one"}, {2, "two"}, {3, "three"}}, {{4, "four"}, {5, "五"}}}
	now := time.Now().UnixMilli()
	for v, rows := range batches {
		var buf bytes.Buffer
		if err := parquet.Write(&buf, rows); err != nil {
			t.Fatalf("writing parquet: %v", err)
		}
		name := fmt.Sprintf("part-%05d.parquet", v)
		files[name] = buf.Bytes()
		var actions []map[string]any
		if v == 0 {
			actions = append(actions,
				map[string]any{"protocol": map[string]any{"minReaderVersion": 1, "minWriterVersion": 2}},
				map[string]any{"metaData": map[string]any{
					"id": "5b1e0c8a-1f4e-4c3a-9a51-0d6c2f1e7a10", "format": map[string]any{"provider": "parquet", "options": map[string]any{}},
					"schemaString": schema, "partitionColumns": []string{}, "configuration": map[string]any{}, "createdTime": now,
				}})
		}
		actions = append(actions,
			map[string]any{"add": map[string]any{
				"path": name, "partitionValues": map[string]any{}, "size": buf.Len(), "modificationTime": now, "dataChange": true,
				"stats": fmt.Sprintf(`{"numRecords":%d}`, len(rows)),
			}},
			map[string]any{"commitInfo": map[string]any{"timestamp": now, "operation": "WRITE"}})
		var log bytes.Buffer
		for _, a := range actions {
			line, _ := json.Marshal(a)
			log.Write(append(line, '\n'))
		}
		files[fmt.Sprintf("_delta_log/%020d.json", v)] = log.Bytes()
	}
	return files
}

type deltaRead struct {
	Version int              `json:"version"`
	NumRows int              `json:"num_rows"`
	Rows    []map[string]any `json:"rows"`
	Schema  struct {
		Fields []struct{ Name, Type string } `json:"fields"`
	} `json:"schema"`
}

// readDelta reads a table with delta-rs through scripts/python/read_table.py.
func readDelta(t *testing.T, s *stacktest.Stack, location string, opts ...string) deltaRead {
	t.Helper()
	args := []string{filepath.Join(s.Root, "scripts", "python", "read_table.py"), location, "--sort", "id"}
	for _, o := range opts {
		args = append(args, "--storage-option", o)
	}
	cmd := exec.Command(s.DeltaPython, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("delta-rs reading %s: %v\n%s", location, err, stderr.String())
	}
	var got deltaRead
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("parsing reader output %q: %v", out, err)
	}
	return got
}

func checkDeltaRead(t *testing.T, got deltaRead) {
	t.Helper()
	want := []map[string]any{
		{"id": 1.0, "name": "one"}, {"id": 2.0, "name": "two"}, {"id": 3.0, "name": "three"},
		{"id": 4.0, "name": "four"}, {"id": 5.0, "name": "五"},
	}
	if got.Version != 1 || got.NumRows != 5 || !reflect.DeepEqual(got.Rows, want) {
		t.Fatalf("delta-rs read version %d, %d rows %v; want version 1 and %v", got.Version, got.NumRows, got.Rows, want)
	}
	if len(got.Schema.Fields) != 2 || got.Schema.Fields[0].Name != "id" || got.Schema.Fields[0].Type != "long" {
		t.Fatalf("delta-rs schema = %+v", got.Schema)
	}
}

// TestDeltaRSReadsLocalTable reads a table on the local filesystem with delta-rs.
func TestDeltaRSReadsLocalTable(t *testing.T) {
	s := stacktest.Require(t)
	dir := t.TempDir()
	for name, body := range deltaTable(t) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	checkDeltaRead(t, readDelta(t, s, dir))
}

// TestDeltaRSReadsS3Table reads the same table from versitygw with delta-rs's S3 backend.
func TestDeltaRSReadsS3Table(t *testing.T) {
	s := stacktest.Require(t, stacktest.S3)
	ctx := stacktest.Context(t, 60*time.Second)
	cl := s3.NewFromConfig(s.AWSConfig(), func(o *s3.Options) { o.BaseEndpoint = aws.String(s.S3URL); o.UsePathStyle = true })
	prefix := fmt.Sprintf("stacktest/delta-%d", time.Now().UnixNano())
	for name, body := range deltaTable(t) {
		if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(path.Join(prefix, name)), Body: bytes.NewReader(body)}); err != nil {
			t.Fatalf("uploading %s: %v", name, err)
		}
	}
	cfg := s.AWSConfig()
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := readDelta(t, s, "s3://"+s.Bucket+"/"+prefix,
		"AWS_ENDPOINT_URL="+s.S3URL, "AWS_ALLOW_HTTP=true", "AWS_REGION="+cfg.Region,
		"AWS_ACCESS_KEY_ID="+creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
		"AWS_S3_ALLOW_UNSAFE_RENAME=true", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false")
	checkDeltaRead(t, got)
	if strings.Contains(fmt.Sprint(got), creds.SecretAccessKey) {
		t.Fatal("reader output contains the secret key")
	}
}
