package streams

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
)

// replay answers each request with the next of the bodies it is given, as a GetRecords response,
// in process: the SDK's middleware and deserializer run as over the network, without a loopback
// connection to fail (one was once closed under the client mid-read on a loaded machine).
type replay struct {
	mu     sync.Mutex
	bodies []string
}

func (r *replay) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	body := r.bodies[0]
	r.bodies = r.bodies[1:]
	r.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req}, nil
}

// getBoth decodes body with the SDK's deserializer and with the fast one.
func getBoth(t testing.TB, body string) (sdk, fast *dynamodbstreams.GetRecordsOutput, sdkErr, fastErr error) {
	cl := dynamodbstreams.New(dynamodbstreams.Options{Region: "us-east-1", Credentials: aws.AnonymousCredentials{},
		BaseEndpoint: aws.String("http://streams.test"), RetryMaxAttempts: 1, HTTPClient: &replay{bodies: []string{body, body}}})
	in := &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("it")}
	sdk, sdkErr = cl.GetRecords(context.Background(), in)
	fast, fastErr = cl.GetRecords(context.Background(), in, withFastRecords)
	if fastErr == nil {
		fastRecords(fast)
	}
	return sdk, fast, sdkErr, fastErr
}

// randomValue is a DynamoDB JSON attribute value, nested up to depth.
func randomValue(r *rand.Rand, depth int) map[string]any {
	str := func() string {
		parts := []string{"plain", `quo"te`, `back\slash`, "new\nline", "tab\t", "é", "日本", "😀", "<&>", "\u2028", "\x01ctl", ""}
		return parts[r.IntN(len(parts))] + fmt.Sprint(r.IntN(100))
	}
	b64 := func() string {
		raw := make([]byte, r.IntN(12))
		for i := range raw {
			raw[i] = byte(r.IntN(256))
		}
		return base64.StdEncoding.EncodeToString(raw)
	}
	kinds := 8
	if depth > 0 {
		kinds = 10
	}
	switch r.IntN(kinds) {
	case 0:
		return map[string]any{"S": str()}
	case 1:
		return map[string]any{"N": fmt.Sprintf("%d.%d", r.IntN(1e6)-5e5, r.IntN(1000))}
	case 2:
		return map[string]any{"B": b64()}
	case 3:
		return map[string]any{"BOOL": r.IntN(2) == 0}
	case 4:
		return map[string]any{"NULL": true}
	case 5:
		ss := []string{}
		for range r.IntN(3) {
			ss = append(ss, str())
		}
		return map[string]any{"SS": ss}
	case 6:
		return map[string]any{"NS": []string{"1", "-2.5", "3E+2"}[:r.IntN(4)]}
	case 7:
		bs := []string{}
		for range r.IntN(3) {
			bs = append(bs, b64())
		}
		return map[string]any{"BS": bs}
	case 8:
		l := []any{}
		for range r.IntN(4) {
			l = append(l, randomValue(r, depth-1))
		}
		return map[string]any{"L": l}
	default:
		return map[string]any{"M": randomImage(r, depth-1)}
	}
}

func randomImage(r *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for i := range r.IntN(6) {
		m[fmt.Sprintf("a%d%s", i, []string{"", "é", `"q"`, "\\"}[r.IntN(4)])] = randomValue(r, depth)
	}
	return m
}

func randomBody(r *rand.Rand) string {
	var recs []any
	for i := range r.IntN(5) {
		sr := map[string]any{
			"ApproximateCreationDateTime": float64(1.7e9) + float64(r.IntN(1e6))/1000,
			"Keys":                        map[string]any{"id": map[string]any{"S": fmt.Sprint("k", i)}},
			"SequenceNumber":              fmt.Sprintf("%021d", r.Int64N(1e18)),
			"SizeBytes":                   r.IntN(4000),
			"StreamViewType":              "NEW_AND_OLD_IMAGES",
		}
		if r.IntN(4) > 0 {
			sr["NewImage"] = randomImage(r, 3)
		}
		if r.IntN(3) > 0 {
			sr["OldImage"] = randomImage(r, 3)
		}
		rec := map[string]any{"awsRegion": "eu-west-1", "dynamodb": sr, "eventID": fmt.Sprint("ev", i),
			"eventName": []string{"INSERT", "MODIFY", "REMOVE"}[r.IntN(3)], "eventSource": "aws:dynamodb", "eventVersion": "1.1",
			"futureField": map[string]any{"nested": []any{1, "x", nil, true}}}
		if r.IntN(3) == 0 {
			rec["userIdentity"] = map[string]any{"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
		}
		recs = append(recs, rec)
	}
	body := map[string]any{"Records": recs}
	if r.IntN(4) > 0 {
		body["NextShardIterator"] = fmt.Sprint("arn:aws:…/iter/", r.IntN(1000))
	}
	var out []byte
	if r.IntN(2) == 0 {
		out, _ = json.MarshalIndent(body, "", "  ")
	} else {
		out, _ = json.Marshal(body)
	}
	return string(out)
}

// TestFastRecordsMatchTheSDK decodes the same responses with the SDK's deserializer and with
// the fast one: random records with every attribute type, nesting, escapes, non-ASCII text,
// unknown fields and indentation, then edge cases written by hand. Both must give equal
// outputs, or both fail.
func TestFastRecordsMatchTheSDK(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bodies := []string{
		`{}`,
		`{"Records":[]}`,
		`{"Records":null,"NextShardIterator":null}`,
		`{"NextShardIterator":"x","Records":[{"dynamodb":{"Keys":{"k":{"N":"1"}},"NewImage":{"s":{"S":"\u00e9\ud83d\ude00\n\"\\\/"}}}}]}`,
		`{"Records":[{"dynamodb":{"NewImage":{"m":{"M":{}},"l":{"L":[]},"ss":{"SS":[]},"bs":{"BS":[]},"b":{"B":""}}}}]}`,
		`{"Records":[{"dynamodb":{"NewImage":{"x":{"FUTURE":{"a":[1,2]}}}}}]}`,
		`  {"Records" : [ { "eventName" : "INSERT" , "dynamodb" : { "SizeBytes" : 12 } } ] }  `,
		`{"Records":[{"dynamodb":{"ApproximateCreationDateTime":1.7332E9}}]}`,
		`{"Records":[{"dynamodb":{"NewImage":{"b":{"S":null},"n":null},"Keys":{"k":{"L":[null,{"S":"y"}]}}}}]}`,
		`{"Records":[{"dynamodb":{"NewImage":{"a":{"S":"x","N":"1"}}}}]}`,
	}
	for range 300 {
		bodies = append(bodies, randomBody(r))
	}
	for i, body := range bodies {
		sdk, fast, sdkErr, fastErr := getBoth(t, body)
		if (sdkErr != nil) != (fastErr != nil) {
			t.Fatalf("body %d: SDK error %v, fast error %v\n%s", i, sdkErr, fastErr, body)
		}
		if sdkErr != nil {
			continue
		}
		if !reflect.DeepEqual(sdk.Records, fast.Records) || aws.ToString(sdk.NextShardIterator) != aws.ToString(fast.NextShardIterator) ||
			(sdk.NextShardIterator == nil) != (fast.NextShardIterator == nil) {
			t.Fatalf("body %d decodes differently:\nSDK:  %s\nfast: %s\nbody: %s", i, dump(sdk), dump(fast), body)
		}
	}
}

func dump(out *dynamodbstreams.GetRecordsOutput) string {
	b, _ := json.Marshal(struct {
		Next    *string
		Records any
	}{out.NextShardIterator, out.Records})
	return fmt.Sprintf("%s %#v", b, out.Records)
}

// TestFastRecordsRejectsMalformedBodies: a truncated or corrupt 200 response is an error of the
// call (which the reader retries), never a partial page.
func TestFastRecordsRejectsMalformedBodies(t *testing.T) {
	for _, body := range []string{
		`{"Records":[`, `{"Records":[{"dynamodb":{"NewImage":{"a":{"S":"x"`, `{"Records":[{"dynamodb":{"NewImage":{"a":{"B":"!!"}}}}]}`,
		`{"Records":[{"dynamodb":{"NewImage":{"a":{"S":"x","N":"1"}}}}]}`, `{"Records":[]} trailing`, `{"NextShardIterator":"a\x01"}`,
		`{"Records":[{"dynamodb":{"SizeBytes":"12"}}]}`, `not json`,
	} {
		if _, err := decodeGetRecords([]byte(body)); err == nil {
			t.Errorf("%q decoded without an error", body)
		}
	}
	_, fast, _, err := getBoth(t, `{"Records":[{"eventID":`)
	if err == nil || !strings.Contains(err.Error(), "decoding the GetRecords response") {
		t.Fatalf("a truncated response: %v %+v", err, fast)
	}
}

// FuzzDecodeGetRecords: any bytes decode or fail, without a panic.
func FuzzDecodeGetRecords(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		f.Add([]byte(randomBody(r)))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = decodeGetRecords(body)
	})
}

// BenchmarkGetRecordsDecode: a page of 1,000 records of ~500-byte images (both images), served
// over loopback HTTP and decoded by the SDK (the baseline) and by the fast decoder.
func BenchmarkGetRecordsDecode(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	var recs []any
	for i := range 1000 {
		img := map[string]any{}
		for a := range 20 {
			img[fmt.Sprint("attr", a)] = randomValue(r, 2)
		}
		recs = append(recs, map[string]any{"awsRegion": "eu-west-1", "eventID": fmt.Sprint("ev", i), "eventName": "MODIFY",
			"eventSource": "aws:dynamodb", "eventVersion": "1.1", "dynamodb": map[string]any{
				"ApproximateCreationDateTime": 1.7e9, "Keys": map[string]any{"id": map[string]any{"S": fmt.Sprint("k", i)}},
				"NewImage": img, "OldImage": img, "SequenceNumber": fmt.Sprintf("%021d", i), "SizeBytes": 900, "StreamViewType": "NEW_AND_OLD_IMAGES"}})
	}
	body, _ := json.Marshal(map[string]any{"Records": recs, "NextShardIterator": "next"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	defer srv.Close()
	cl := dynamodbstreams.New(dynamodbstreams.Options{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}, BaseEndpoint: aws.String(srv.URL)})
	in := &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("it")}
	for _, v := range []struct {
		name string
		opts []func(*dynamodbstreams.Options)
	}{{"baseline-sdk", nil}, {"fast", []func(*dynamodbstreams.Options){withFastRecords}}} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				out, err := cl.GetRecords(context.Background(), in, v.opts...)
				if err != nil {
					b.Fatal(err)
				}
				fastRecords(out)
				if len(out.Records) != 1000 {
					b.Fatalf("%d records", len(out.Records))
				}
			}
		})
	}
}
