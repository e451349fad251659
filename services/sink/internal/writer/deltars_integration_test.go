//go:build integration

package writer

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hamba/avro/v2"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/maintenance"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// where is a table location for the writer and for delta-rs.
type where struct {
	name  string
	store func(t *testing.T) storage.Store
	url   func(st storage.Store) string
	opts  []string
}

func locations(t *testing.T, s *stacktest.Stack) []where {
	cl := s3.NewFromConfig(s.AWSConfig(), func(o *s3.Options) { o.BaseEndpoint = aws.String(s.S3URL); o.UsePathStyle = true })
	creds, err := s.AWSConfig().Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir() // the caller's: tables outlive the subtests that write them
	return []where{
		{name: "filesystem", store: func(t *testing.T) storage.Store {
			dir, err := os.MkdirTemp(base, "table-")
			if err != nil {
				t.Fatal(err)
			}
			st, err := storage.NewLocal(dir)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}, url: func(st storage.Store) string { return st.(*storage.Local).Root() }},
		{name: "s3", store: func(t *testing.T) storage.Store {
			return storage.NewS3(cl, s.Bucket, fmt.Sprintf("writertest/%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano()))
		}, url: func(st storage.Store) string { return st.Location() },
			opts: []string{"AWS_ENDPOINT_URL=" + s.S3URL, "AWS_ALLOW_HTTP=true", "AWS_REGION=" + s.AWSConfig().Region,
				"AWS_ACCESS_KEY_ID=" + creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + creds.SecretAccessKey,
				"AWS_S3_ALLOW_UNSAFE_RENAME=true", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false"}},
	}
}

// reader is an independent Delta reader: delta-rs (Rust, via Python) or Apache Spark with Delta
// Lake (JVM, via pyspark). Both print the table as JSON.
type reader struct {
	name, python, script string
}

func readers(s *stacktest.Stack) []reader {
	return []reader{{"delta-rs", s.DeltaPython, "read_table.py"}, {"spark", s.SparkPython, "spark_read_table.py"}}
}

// readWith reads a table with one reader; numbers stay exact (json.Number).
func readWith(t *testing.T, s *stacktest.Stack, r reader, url string, opts []string) (int64, []map[string]any) {
	t.Helper()
	args := []string{filepath.Join(s.Root, "scripts", "python", r.script), url}
	for _, o := range opts {
		args = append(args, "--storage-option", o)
	}
	cmd := exec.Command(r.python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s reading %s: %v\n%s", r.name, url, err, stderr.String())
	}
	var got struct {
		Version int64            `json:"version"`
		Rows    []map[string]any `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("parsing %s output: %v", r.name, err)
	}
	return got.Version, got.Rows
}

// canon renders a value of a column type as text both readers agree on, or "" for null.
func canon(t *testing.T, typ deltatype.DataType, v any) any {
	if v == nil {
		return nil
	}
	switch {
	case typ.Struct != nil:
		m := v.(map[string]any)
		out := map[string]any{}
		for _, f := range typ.Struct.Fields {
			if c := canon(t, f.Type, m[f.Name]); c != nil {
				out[f.Name] = c
			}
		}
		return out
	case typ.Array != nil:
		var out []any
		for _, x := range v.([]any) {
			out = append(out, canon(t, typ.Array.Element, x))
		}
		return fmt.Sprint(out)
	}
	switch typ.Primitive {
	case "binary":
		if b, ok := v.([]byte); ok {
			return base64.StdEncoding.EncodeToString(b)
		}
	case "double":
		if f, ok := v.(float64); ok {
			return strconv.FormatFloat(f, 'g', -1, 64)
		}
		f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
		if err != nil {
			t.Fatalf("double %v: %v", v, err)
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	if _, scale, ok := deltatype.DecimalParams(typ); ok {
		r := new(big.Rat)
		if d, ok := v.(*big.Int); ok {
			return r.SetFrac(d, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)).RatString()
		}
		if _, ok := r.SetString(v.(string)); !ok {
			t.Fatalf("decimal %v", v)
		}
		return r.RatString()
	}
	switch typ.Primitive {
	case "timestamp":
		if tm, ok := v.(time.Time); ok {
			return tm.UnixMicro()
		}
		tm, err := time.Parse(time.RFC3339Nano, v.(string))
		if err != nil {
			t.Fatalf("timestamp %v: %v", v, err)
		}
		return tm.UnixMicro()
	case "date":
		if tm, ok := v.(time.Time); ok {
			return tm.Format("2006-01-02")
		}
	}
	return fmt.Sprint(v)
}

func canonRows(t *testing.T, schema *deltatype.StructType, rows []map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, r := range rows {
		c := canon(t, deltatype.DataType{Struct: schema}, r).(map[string]any)
		id := fmt.Sprint(c[layout.ColKey], "@", c[layout.ColKafkaPartition], "/", c[layout.ColKafkaOffset])
		if _, dup := out[id]; dup {
			t.Fatalf("row %s appears twice", id)
		}
		out[id] = c
	}
	return out
}

// compare checks that delta-rs reads the table exactly as this package's reader does, value by
// value, and returns the rows.
func compare(t *testing.T, s *stacktest.Stack, w *Writer, loc where, st storage.Store) map[string]map[string]any {
	return compareWith(t, s, readers(s)[0], w, loc, st)
}

// compareWith is compare with a given reader.
func compareWith(t *testing.T, s *stacktest.Stack, r reader, w *Writer, loc where, st storage.Store) map[string]map[string]any {
	t.Helper()
	snap, err := w.Table().Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	schema, _ := snap.Schema()
	ours := readTable(t, w)
	for i := range ours { // the partition value lives in the log, not in the file
		if d, ok := ours[i][layout.ColSourceTime].(time.Time); ok && len(snap.Metadata.PartitionColumns) > 0 {
			ours[i][layout.ColDate] = time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC)
		}
	}
	version, theirs := readWith(t, s, r, loc.url(st), loc.opts)
	if version != snap.Version {
		t.Fatalf("%s read version %d, the log is at %d", r.name, version, snap.Version)
	}
	want, got := canonRows(t, schema, ours), canonRows(t, schema, theirs)
	if len(want) != len(got) {
		t.Fatalf("%s read %d rows, we wrote %d", r.name, len(got), len(want))
	}
	for id, w := range want {
		if !reflect.DeepEqual(got[id], w) {
			t.Fatalf("row %s:\n%s %v\n ours    %v", id, r.name, got[id], w)
		}
	}
	return want
}

func everyKind(i int) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"n": num(i), "price": &types.AttributeValueMemberN{Value: fmt.Sprintf("-%d.25", i)}, "huge": &types.AttributeValueMemberN{Value: "1E+100"},
		"name": str(fmt.Sprintf("名前 %d", i)), "raw": &types.AttributeValueMemberB{Value: []byte{0, byte(i), 255}},
		"ok": &types.AttributeValueMemberBOOL{Value: i%2 == 0}, "nothing": &types.AttributeValueMemberNULL{Value: true},
		"tags": &types.AttributeValueMemberSS{Value: []string{"a", fmt.Sprint(i)}}, "scores": &types.AttributeValueMemberNS{Value: []string{"1.5", fmt.Sprint(i)}},
		"blobs": &types.AttributeValueMemberBS{Value: [][]byte{{1}, {2, byte(i)}}},
		"items": &types.AttributeValueMemberL{Value: []types.AttributeValue{str("x"), num(i)}},
		"address": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"city": str("Lyon"),
			"geo": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"lat": &types.AttributeValueMemberN{Value: "45.75"}}}}},
		// Empty containers and strings are valid DynamoDB values, distinct from absent ones.
		"em": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}, "blank": str(""),
		// Hinted (deltarsHints): a double, a list of strings as an array, a small integer.
		"score": &types.AttributeValueMemberN{Value: fmt.Sprintf("%d.5", i)},
		"skus":  &types.AttributeValueMemberL{Value: []types.AttributeValue{str("sku-1"), str(fmt.Sprint("sku-", i))}},
		"qty":   num(i % 1000),
		"mm":    &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"inner": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}, "s": str("")}},
	}
}

// deltarsHints type some of everyKind's attributes otherwise than their defaults.
var deltarsHints = map[string]string{"price": "decimal(12,2)", "score": "double", "skus": "array<string>", "qty": "int",
	"added": "long", "scores": "set<double>", "address.geo.lat": "decimal(9,6)"}

// TestDeltaRSReadsWhatTheWriterWrites writes both modes (the changelog partitioned by date, the
// mirror not), on the filesystem and on S3, through schema evolution (new attributes, a second
// kind for one, a new nested field), deletes, checkpoints and compaction, and checks that delta-rs
// and Apache Spark with Delta Lake read every row and value exactly as written.
//
// Then Spark SQL and delta-rs query every table written (stacktest.SQLConformance): a predicate on
// every top-level column, DESCRIBE HISTORY and VERSION AS OF 0, each count equal to a full scan's.
func TestDeltaRSReadsWhatTheWriterWrites(t *testing.T) {
	s := stacktest.Require(t, stacktest.S3)
	ctx := stacktest.Context(t, 15*time.Minute) // six tables written, each read back by delta-rs and Spark: about five minutes here
	var tables []string
	var s3opts []string
	defer func() {
		if t.Failed() || len(tables) == 0 {
			return
		}
		// A deadline of its own: some 450 Spark queries, about four minutes here, and more
		// on a slower machine (CI once ran out of a deadline shared with the writing).
		bad, err := s.SQLConformance(stacktest.Context(t, 20*time.Minute), tables, s3opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			t.Error(b)
		}
		if len(bad) == 0 {
			t.Logf("Spark SQL and delta-rs agree with a full scan on every predicate of %d tables", len(tables))
		}
	}()
	for _, loc := range locations(t, s) {
		if loc.opts != nil {
			s3opts = loc.opts
		}
		for _, variant := range []string{layout.Changelog, layout.Mirror, layout.Mirror + "-dv"} {
			mode, strategy := layout.Changelog, ""
			if variant != layout.Changelog {
				mode, strategy = layout.Mirror, StrategyCopyOnWrite
				if variant == layout.Mirror+"-dv" {
					strategy = StrategyDeletionVectors
				}
			}
			t.Run(loc.name+"/"+variant, func(t *testing.T) {
				st := loc.store(t)
				tables = append(tables, loc.url(st))
				hints, err := layout.ParseHints(deltarsHints)
				if err != nil {
					t.Fatal(err)
				}
				var props map[string]string
				if strategy == StrategyDeletionVectors { // with the change data feed on
					props = map[string]string{delta.ConfEnableCDF: "true"}
				}
				w := New(Config{Name: "orders", Mode: mode, PartitionByDate: mode == layout.Changelog, Buckets: 4, Hints: hints,
					MirrorStrategy: strategy, Properties: props}, st, testLog())
				w.Table().CheckpointInterval = 3
				var off int64
				model := ddbavro.NewModel("orders")
				// The rows expected, computed from the changes alone: changelog rows by
				// partition@offset, mirror rows by key.
				expect := map[string]expected{}
				// A mirror's expected state at each version (key → sequence number), for Spark's
				// time travel over every version.
				state, states := map[string]string{}, map[int64]map[string]string{}
				record := func(op, id string, p int32, off int64, name, n string) {
					k := `[["S","` + id + `"]]`
					seq, _ := layout.PadSequence(fmt.Sprint(off * 10))
					if mode == layout.Changelog {
						expect[fmt.Sprint(p, "@", off)] = expected{op, name, n}
					} else if op == "d" {
						delete(expect, k)
						delete(state, k)
					} else {
						expect[k] = expected{op, name, n}
						state[k] = seq
					}
				}
				// The change data feed expected: [version, change type, key, sequence number].
				var feed [][4]string
				prev := map[string]string{}
				write := func(changes []Change) {
					t.Helper()
					res, err := w.Write(ctx, changes, nil)
					if err != nil {
						t.Fatal(err)
					}
					states[res.Version] = maps.Clone(state)
					v := fmt.Sprint(res.Version)
					for _, k := range slices.Sorted(maps.Keys(mergeKeys(prev, state))) {
						old, had := prev[k]
						now, has := state[k]
						switch {
						case !had && has:
							feed = append(feed, [4]string{v, ChangeInsert, k, now})
						case had && !has:
							feed = append(feed, [4]string{v, ChangeDelete, k, old})
						case had && has && old != now:
							feed = append(feed, [4]string{v, ChangePreimage, k, old}, [4]string{v, ChangePostimage, k, now})
						}
					}
					prev = maps.Clone(state)
				}
				for batch := range 7 {
					var changes []Change
					for i := range 12 {
						off++
						id := fmt.Sprintf("o-%d", (batch*5+i)%20)
						attrs := everyKind(batch*100 + i)
						op := "u"
						switch {
						case batch == 0:
							op = "c"
						case i%5 == 4:
							op = "d"
						}
						n := fmt.Sprint(batch*100 + i)
						if batch >= 3 { // new attributes and kinds appear mid-run
							n = fmt.Sprint("text ", i)
							attrs["n"] = str(n)
							attrs["added"] = num(i)
							attrs["address"].(*types.AttributeValueMemberM).Value["zip"] = num(69001)
						}
						changes = append(changes, viaAvro(t, encodings[loc.name], model, change(op, id, int(off)*10, false, attrs, int32(i%3), off)))
						record(op, id, int32(i%3), off, fmt.Sprintf("名前 %d", batch*100+i), n)
					}
					write(changes)
				}
				if cp, err := w.Table().WaitCheckpoint(); cp < 3 || err != nil {
					t.Fatalf("no checkpoint written (last %d, %v)", cp, err)
				}
				if mode == layout.Mirror { // keys above every file's range: new files beside the old ones
					for b := range 2 {
						var changes []Change
						for i := range 8 {
							off++
							changes = append(changes, change("c", fmt.Sprintf("zz-%d-%d", b, i), int(off)*10, false, everyKind(i), int32(i%3), off))
							record("c", fmt.Sprintf("zz-%d-%d", b, i), int32(i%3), off, fmt.Sprintf("名前 %d", i), fmt.Sprint(i))
						}
						write(changes)
					}
				}
				before := compare(t, s, w, loc, st)
				if strategy == StrategyDeletionVectors {
					// Spark reads the rows the deletion vectors leave, from the checkpoint (with
					// their descriptors) and the commits after it.
					vectors := 0
					for _, a := range w.Snapshot().Files {
						if a.DeletionVector != nil {
							vectors++
						}
					}
					if vectors == 0 {
						t.Fatal("no file has a deletion vector")
					}
					if spark := compareWith(t, s, readers(s)[1], w, loc, st); !reflect.DeepEqual(spark, before) {
						t.Fatal("Spark reads other rows than delta-rs")
					}
				}
				// Compaction changes files, not rows: delta-rs reads the same rows after it.
				cres, err := maintenance.Compact(ctx, w.Table(), maintenance.Config{Name: "orders", MinFiles: 2}, testLog())
				if err != nil || cres.Version < 0 {
					t.Fatalf("compaction %+v %v", cres, err)
				}
				rows := compare(t, s, w, loc, st)
				if !reflect.DeepEqual(rows, before) {
					t.Fatal("delta-rs reads other rows after compaction")
				}
				// Apache Spark with Delta Lake reads the same, from the checkpoint and the commits after it.
				if spark := compareWith(t, s, readers(s)[1], w, loc, st); !reflect.DeepEqual(spark, rows) {
					t.Fatal("Spark reads other rows than delta-rs")
				}
				if got := observed(mode, rows); !reflect.DeepEqual(got, expect) {
					t.Fatalf("the rows read differ from the rows expected from the changes:\n got %v\nwant %v", got, expect)
				}
				if strategy == StrategyDeletionVectors {
					states[cres.Version] = maps.Clone(state)
					if cres.Purged == 0 {
						t.Fatalf("compaction purged no file with a deletion vector: %+v", cres)
					}
					everyVersion(t, s, loc.url(st), loc.opts, states, feed)
				}
				t.Logf("%s %s: version %d, %d rows; %d files compacted into %d; delta-rs reads them all exactly, before and after, and Spark after", loc.name, variant, cres.Version, len(rows), cres.Compacted, cres.Written)
			})
		}
	}
}

// TestTwoWritersOnS3 races two writers of one mirror table on S3: If-None-Match decides each
// version, the losers retry, no commit is lost and delta-rs reads the exact final state.
func TestTwoWritersOnS3(t *testing.T) {
	s := stacktest.Require(t, stacktest.S3)
	ctx := stacktest.Context(t, 3*time.Minute)
	loc := locations(t, s)[1]
	st := loc.store(t)
	want := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	versions := make([][]int64, 2)
	for p := range int32(2) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := New(Config{Name: "race", Mode: layout.Mirror, Buckets: 2}, st, testLog())
			var off int64
			for b := range 12 {
				var batch []Change
				for i := range 8 {
					off++
					id := fmt.Sprintf("p%d-%d", p, (b*3+i)%10)
					seq := b*100 + i
					batch = append(batch, change("u", id, seq, false, map[string]types.AttributeValue{"v": num(seq)}, p, off))
					mu.Lock()
					want[`[["S","`+id+`"]]`] = fmt.Sprint(seq)
					mu.Unlock()
				}
				res, err := w.Write(ctx, batch, nil)
				if err != nil {
					errs <- err
					return
				}
				versions[p] = append(versions[p], res.Version)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all := append(append([]int64{}, versions[0]...), versions[1]...)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for i, v := range all {
		if v != int64(i) {
			t.Fatalf("commit versions %v: each of the 24 batches must own one version", all)
		}
	}
	r := New(Config{Name: "race", Mode: layout.Mirror}, st, testLog())
	rows := compare(t, s, r, loc, st)
	got := map[string]string{}
	for _, row := range rows {
		got[row[layout.ColKey].(string)] = row["v"].(string)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("final mirror\n got %v\nwant %v", got, want)
	}
	t.Logf("24 commits by two racing writers on S3, versions 0..23, %d rows as expected", len(got))
}

// encodings: each mode is written once from typed and once from document events.
var encodings = map[string]ddbavro.Encoding{"filesystem": ddbavro.Typed, "s3": ddbavro.Document}

// viaAvro returns the change as the sink gets it from Kafka: its event encoded in enc (typed
// with model, evolving it) and decoded again, the typed one through its schema rendered and
// parsed back, as the sink reads it from the registry.
func viaAvro(t *testing.T, enc ddbavro.Encoding, model *ddbavro.Model, c Change) Change {
	t.Helper()
	var b []byte
	var err error
	switch enc {
	case ddbavro.Typed:
		if _, err = model.EvolveFor(c.Event); err == nil {
			b, err = model.AppendTyped(nil, c.Event)
		}
		if err == nil {
			var s avro.Schema
			if s, err = avro.Parse(model.EnvelopeSchema()); err == nil {
				var m *ddbavro.Model
				if m, err = ddbavro.ModelFromEnvelope(s); err == nil {
					c.Event, err = m.ReadTyped(b)
				}
			}
		}
	default:
		if b, err = ddbavro.AppendDocument(nil, c.Event); err == nil {
			c.Event, err = ddbavro.ReadDocument(b)
		}
	}
	if err != nil {
		t.Fatalf("%s encoding: %v", enc, err)
	}
	return c
}

func testLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// expected is what a row must hold: its op, and its item's name and n (whichever column n took).
type expected struct{ op, name, n string }

// observed extracts the expected fields from canonical rows read back.
func observed(mode string, rows map[string]map[string]any) map[string]expected {
	out := map[string]expected{}
	for _, r := range rows {
		img, key := r, fmt.Sprint(r[layout.ColKey])
		if mode == layout.Changelog {
			img, _ = r[layout.ColAfter].(map[string]any)
			if img == nil {
				img, _ = r[layout.ColBefore].(map[string]any)
			}
			key = fmt.Sprint(r[layout.ColKafkaPartition], "@", r[layout.ColKafkaOffset])
		}
		n := img["n"]
		if n == nil { // a string: rescued, the column is a number's
			if res, ok := img[layout.ColRescued].(string); ok {
				if vs, err := layout.ParseRescued(res); err == nil {
					if s, ok := vs["n"].(*types.AttributeValueMemberS); ok {
						n = s.Value
					}
				}
			}
		}
		out[key] = expected{fmt.Sprint(r[layout.ColOp]), fmt.Sprint(img["name"]), fmt.Sprint(n)}
	}
	return out
}
