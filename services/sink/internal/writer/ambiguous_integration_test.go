//go:build integration

package writer

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage/s3fault"
)

// isCommitPut matches the conditional PUT of a Delta commit.
func isCommitPut(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/_delta_log/") &&
		strings.HasSuffix(r.URL.Path, ".json") && r.Header.Get("If-None-Match") == "*"
}

// TestAmbiguousS3Commit loses the response of the third commit's conditional PUT (the server
// stores the commit; the client sees a closed connection, a reset, or no answer within its
// timeout) and lets the SDK retry it, which S3 refuses with 412 since the object exists. The
// writer must recognise its own commit, go on, and never delete a file a version references: every
// version of the table stays readable and the final table is exact, for both modes.
func TestAmbiguousS3Commit(t *testing.T) {
	s := stacktest.Require(t, stacktest.S3)
	ctx := stacktest.Context(t, 4*time.Minute)
	loc := locations(t, s)[1]
	for _, fault := range []s3fault.Fault{s3fault.Drop, s3fault.Reset, s3fault.Delay} {
		for _, mode := range []string{layout.Mirror, layout.Changelog} {
			t.Run(fault.String()+"/"+mode, func(t *testing.T) {
				p := &s3fault.Proxy{Target: s.S3URL, Match: isCommitPut, Nth: 3, Fault: fault, Delay: 6 * time.Second}
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				cl := s3.NewFromConfig(s.AWSConfig(), func(o *s3.Options) {
					o.BaseEndpoint, o.UsePathStyle = aws.String(p.URL()), true
					// Two seconds per attempt: the delayed answer (6 s) comes after the client retried.
					o.HTTPClient = awshttp.NewBuildableClient().WithTimeout(2 * time.Second)
				})
				st := storage.NewS3(cl, s.Bucket, fmt.Sprintf("ambiguous/%s-%s-%d", fault, mode, time.Now().UnixNano()))
				w := New(Config{Name: "orders", Mode: mode, Buckets: 2}, st, testLog())
				expect := map[string]expected{}
				var off int64
				var versions []int64
				for batch := range 6 {
					var changes []Change
					for i := range 6 {
						off++
						id := fmt.Sprintf("o-%d", (batch*4+i)%9)
						op := map[bool]string{true: "c", false: "u"}[batch == 0]
						if i == 5 && batch > 0 {
							op = "d"
						}
						name := fmt.Sprintf("name %d", off)
						changes = append(changes, change(op, id, int(off)*10, false, map[string]types.AttributeValue{"name": str(name), "n": num(int(off))}, 0, off))
						switch {
						case mode == layout.Changelog:
							expect[fmt.Sprint(0, "@", off)] = expected{op, name, fmt.Sprint(off)}
						case op == "d":
							delete(expect, `[["S","`+id+`"]]`)
						default:
							expect[`[["S","`+id+`"]]`] = expected{op, name, fmt.Sprint(off)}
						}
					}
					res, err := w.Write(ctx, changes, nil)
					if err != nil {
						t.Fatalf("batch %d: %v", batch, err)
					}
					versions = append(versions, res.Version)
				}
				if got := p.Faulted(); len(got) != 1 {
					t.Fatalf("the proxy lost %d responses (%v), want 1", len(got), got)
				}
				everyVersionReadable(ctx, t, st)
				if want := []int64{0, 1, 2, 3, 4, 5}; !reflect.DeepEqual(versions, want) {
					t.Fatalf("batches committed as versions %v, want %v: each batch owns one version", versions, want)
				}
				rows := compare(t, s, w, loc, st)
				if got := observed(mode, rows); !reflect.DeepEqual(got, expect) {
					t.Fatalf("rows after the lost response:\n got %v\nwant %v", got, expect)
				}
				t.Logf("%s of %s: 6 commits, versions 0..5, every version's files present, %d rows exact", fault, p.Faulted()[0], len(rows))
			})
		}
	}
}

// everyVersionReadable replays the log and checks that every data file of every version exists.
func everyVersionReadable(ctx context.Context, t *testing.T, st storage.Store) {
	t.Helper()
	objs, err := st.List(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	exists := map[string]bool{}
	for _, o := range objs {
		exists[o.Name] = true
	}
	live := map[string]bool{}
	for v := int64(0); ; v++ {
		data, err := st.Read(ctx, delta.CommitName(v))
		if err != nil {
			if v == 0 {
				t.Fatal(err)
			}
			return
		}
		actions, err := delta.DecodeCommit(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range actions {
			switch {
			case a.Add != nil:
				live[a.Add.Path] = true
			case a.Remove != nil:
				delete(live, a.Remove.Path)
			}
		}
		for p := range live {
			if !exists[p] {
				t.Fatalf("version %d references %s, which was deleted", v, p)
			}
		}
	}
}
