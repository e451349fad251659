//go:build integration

package warehouse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

// fake is a running scripts/python/dbsql_fake.py: a Databricks SQL warehouse at the protocol
// level that executes no SQL; each test scripts its answers.
type fake struct {
	url string
	t   *testing.T
}

func startFake(t *testing.T) *fake {
	t.Helper()
	s, err := stacktest.Load()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.DeltaPython, filepath.Join(s.Root, "scripts", "python", "dbsql_fake.py"), "--port", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the fake warehouse (venv %s: `make stack-up` installs it): %v", s.DeltaPython, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, url, ok := strings.Cut(sc.Text(), "ready on "); ok {
				ready <- url
			}
		}
		close(ready)
	}()
	select {
	case url, ok := <-ready:
		if !ok {
			t.Fatalf("the fake warehouse exited: %s", stderr.String())
		}
		return &fake{url: url, t: t}
	case <-time.After(30 * time.Second):
		t.Fatalf("the fake warehouse did not start: %s", stderr.String())
	}
	return nil
}

func (f *fake) call(method, path string, body any) []byte {
	f.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, f.url+path, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		f.t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	return b
}

// rule scripts an answer: statements matching the regular expression get it.
func (f *fake) rule(match string, once bool, answer map[string]any) {
	r := map[string]any{"match": match, "once": once}
	for k, v := range answer {
		r[k] = v
	}
	f.call("POST", "/fake/rules", r)
}

type fakeStatement struct {
	Statement  string           `json:"statement"`
	Parameters []map[string]any `json:"parameters"`
	Outcome    string           `json:"outcome"`
	Auth       bool             `json:"authorization"`
}

func (f *fake) statements() []fakeStatement {
	var out []fakeStatement
	if err := json.Unmarshal(f.call("GET", "/fake/statements", nil), &out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fake) db() *Conn {
	host, port, _ := strings.Cut(strings.TrimPrefix(f.url, "http://"), ":")
	var p int
	fmt.Sscan(port, &p)
	return &Conn{Host: "http://" + host, Port: p, HTTPPath: "/sql/1.0/warehouses/fake", Token: "dapi-test-token"}
}

// texts returns the statements' texts matching re.
func texts(ss []fakeStatement, re string) []string {
	var out []string
	for _, s := range ss {
		if regexp.MustCompile(re).MatchString(s.Statement) {
			out = append(out, s.Statement)
		}
	}
	return out
}

// TestDatabricksChangelogStagesToAVolumeAndCopiesInto drives a changelog table through the fake
// warehouse in the databricks dialect: the batch is staged to a volume with the driver's PUT,
// its offsets recorded before COPY INTO loads it by file name; after a restart the batch in doubt
// is loaded again with the very same COPY INTO (which Databricks skips when the file was
// loaded); errors name the table and keep the SQLSTATE and message; a conflict is retried.
func TestDatabricksChangelogStagesToAVolumeAndCopiesInto(t *testing.T) {
	f := startFake(t)
	ctx := stacktest.Context(t, 2*time.Minute)
	db, err := Open(*f.db())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.DiscardHandler)
	id := Ident{"main", "cdc", "orders_changelog"}
	cfg := Config{Name: "orders_changelog", Mode: layout.Changelog, Table: id, Offsets: id.In("ddb2delta_offsets"), Dialect: Databricks, Topics: []string{"cdc"}}
	stage := VolumeStager{DB: db, Dir_: "/Volumes/main/cdc/staging/orders_changelog"}

	f.rule(`^SHOW TBLPROPERTIES`, true, map[string]any{"error": map[string]any{"sqlstate": "42P01",
		"message": "[TABLE_OR_VIEW_NOT_FOUND] The table or view `main`.`cdc`.`orders_changelog` cannot be found. SQLSTATE: 42P01"}})
	f.rule(`^COPY INTO`, false, map[string]any{"result": map[string]any{"columns": []map[string]string{{"name": "num_affected_rows", "type": "bigint"}}, "rows": [][]any{{3}}, "affected_rows": 3}})
	f.rule(`^MERGE INTO .*ddb2delta_offsets`, true, affected(2))
	w := New(cfg, db, stage, log)
	assigned := map[string][]int32{"cdc": {0, 1}}
	if err := w.Load(ctx, assigned); err != nil {
		t.Fatal(err)
	}
	batch := []writer.Change{change("c", "a", 1, 0, 10), change("u", "a", 2, 0, 11), change("c", "b", 3, 1, 4)}
	res, err := w.Write(ctx, batch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 3 || res.Files != 1 {
		t.Fatalf("result %+v", res)
	}
	ss := f.statements()
	for _, s := range ss {
		if !s.Auth {
			t.Fatalf("statement sent without the token: %s", s.Statement)
		}
	}
	// The order that makes the batch settle: staged, recorded, loaded.
	var order []string
	for _, s := range ss {
		order = append(order, strings.Join(strings.Fields(s.Statement)[:2], " "))
	}
	want := "CREATE TABLE, SHOW TBLPROPERTIES, SELECT topic,, LIST '/Volumes/main/cdc/staging/orders_changelog/', CREATE TABLE, PUT '" + "*" + ", MERGE INTO, COPY INTO"
	got := strings.Join(order, ", ")
	if pre, post, _ := strings.Cut(want, "*"); !strings.HasPrefix(got, pre) || !strings.HasSuffix(got, post) || !strings.Contains(texts(ss, "^PUT")[0], "INTO '/Volumes/main/cdc/staging/orders_changelog/batch-") {
		t.Fatalf("statements %s, want %s", got, want)
	}
	read := texts(ss, `^SELECT topic`)[0]
	if !strings.Contains(read, "WHERE table_name = :table_name") {
		t.Errorf("the offsets query does not use the parameter: %s", read)
	}
	for _, s := range ss {
		if strings.HasPrefix(s.Statement, "SELECT topic") {
			if fmt.Sprint(s.Parameters) == "[]" || !strings.Contains(fmt.Sprint(s.Parameters), "orders_changelog") {
				t.Errorf("the offsets query's parameters: %v", s.Parameters)
			}
		}
	}
	copies := texts(ss, `^COPY INTO`)
	re := regexp.MustCompile("^COPY INTO `main`.`cdc`.`orders_changelog` FROM \\(SELECT .* FROM '/Volumes/main/cdc/staging/orders_changelog'\\) FILEFORMAT = PARQUET FILES = \\('(batch-[0-9a-f]{32}\\.parquet)'\\)$")
	m := re.FindStringSubmatch(copies[0])
	if m == nil {
		t.Fatalf("COPY INTO statement:\n%s", copies[0])
	}
	name := m[1]
	merge := texts(ss, `^MERGE INTO .*ddb2delta_offsets`)[0]
	for _, want := range []string{"('orders_changelog', 'cdc', 0, 12, '" + name + "', 10, -1)", "('orders_changelog', 'cdc', 1, 5, '" + name + "', 4, -1)"} {
		if !strings.Contains(merge, want) {
			t.Errorf("the intent lacks %s:\n%s", want, merge)
		}
	}
	// The staged file is where COPY INTO reads it, with the batch's rows.
	data := f.call("GET", "/fake/staged/Volumes/main/cdc/staging/orders_changelog/"+name, nil)
	rows, err := parquetio.ReadData(data)
	if err != nil || len(rows) != 3 {
		t.Fatalf("staged file: %d rows, %v", len(rows), err)
	}
	schema, err := stagedSchema(data)
	if err != nil {
		t.Fatal(err)
	}
	var props [][]any // what the table's properties are now
	for k, v := range w.ownProperties(schema) {
		props = append(props, []any{k, v})
	}

	// A restart: the table exists; its offsets say the batch was recorded, not whether it was
	// loaded. The batch is loaded again by the same COPY INTO.
	f.call("POST", "/fake/reset", nil)
	f.rule(`^SHOW TBLPROPERTIES`, false, map[string]any{"result": map[string]any{
		"columns": []map[string]string{{"name": "key", "type": "string"}, {"name": "value", "type": "string"}},
		"rows":    props}})
	f.rule(`^SELECT topic`, false, map[string]any{"result": map[string]any{
		"columns": []map[string]string{{"name": "topic", "type": "string"}, {"name": "kafka_partition", "type": "int"}, {"name": "next_offset", "type": "bigint"},
			{"name": "batch_file", "type": "string"}, {"name": "batch_first_offset", "type": "bigint"}},
		"rows": [][]any{{"cdc", 0, 12, name, 10}, {"cdc", 1, 5, name, 4}}}})
	f.call("PUT", "/fake/staged/Volumes/main/cdc/staging/orders_changelog/"+name, data)
	w = New(cfg, db, stage, log)
	if err := w.Load(ctx, assigned); err != nil {
		t.Fatal(err)
	}
	ss = f.statements()
	if again := texts(ss, `^COPY INTO`); len(again) != 1 || again[0] != copies[0] {
		t.Fatalf("settling the batch in doubt: %q, want the first COPY INTO again", again)
	}
	if w.NextOffset("cdc", 0) != 12 || w.NextOffset("cdc", 1) != 5 || w.NextOffset("cdc", 2) != -1 {
		t.Fatalf("next offsets %d %d %d", w.NextOffset("cdc", 0), w.NextOffset("cdc", 1), w.NextOffset("cdc", 2))
	}
	// The batch read again from Kafka is skipped: nothing is sent.
	n := len(ss)
	res, err = w.Write(ctx, batch, nil)
	if ss = f.statements(); err != nil || res.Skipped != 3 || len(ss) != n {
		t.Fatalf("replayed batch: %+v, %v, statements %v", res, err, ss[n:])
	}

	// A permission error names the table and what failed, and keeps the SQLSTATE and message.
	f.rule(`^MERGE INTO .*ddb2delta_offsets`, true, affected(1))
	f.call("POST", "/fake/rules", map[string]any{"match": "^COPY INTO", "once": true, "error": map[string]any{"sqlstate": "42501",
		"message": "[INSUFFICIENT_PERMISSIONS] Insufficient privileges: User does not have MODIFY on Table 'main.cdc.orders_changelog'. SQLSTATE: 42501"}})
	_, err = w.Write(ctx, []writer.Change{change("u", "b", 4, 1, 5)}, nil)
	if err == nil || SQLState(err) != "42501" {
		t.Fatalf("permission error: %v (SQLSTATE %q)", err, SQLState(err))
	}
	for _, want := range []string{"table orders_changelog: loading batch batch-", "(SQLSTATE 42501)", "does not have MODIFY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}
	// The batch whose load failed is in doubt: the next Write loads it again before anything
	// else, and it is not forgotten (a later intent would replace its record).
	n = len(f.statements())
	if _, err := w.Write(ctx, nil, nil); err != nil {
		t.Fatalf("settling the failed batch: %v", err)
	}
	if again := texts(f.statements()[n:], `^COPY INTO`); len(again) != 1 || !strings.Contains(again[0], "FILES = ('batch-") {
		t.Fatalf("the batch whose load failed was not loaded again first: %q", again)
	}
	// A concurrent-write conflict is run again.
	n = len(f.statements())
	f.rule(`^MERGE INTO`, true, map[string]any{"error": map[string]any{"sqlstate": "2D521",
		"message": "[DELTA_CONCURRENT_APPEND] ConcurrentAppendException: Files were added to the root of the table by a concurrent update. SQLSTATE: 2D521"}})
	f.rule(`^MERGE INTO .*ddb2delta_offsets`, true, affected(1))
	if _, err := w.Write(ctx, []writer.Change{change("u", "b", 5, 1, 6)}, nil); err != nil {
		t.Fatalf("a conflict was not retried: %v", err)
	}
	if n := len(texts(f.statements()[n:], `^MERGE INTO .*ddb2delta_offsets`)); n != 2 {
		t.Fatalf("the intent ran %d times, want 2 (a conflict, then the retry)", n)
	}
	// Another writer recorded the partition meanwhile (this replica lost it without knowing):
	// the compare-and-set changes no row, and the batch is not loaded.
	n = len(f.statements())
	f.rule(`^MERGE INTO .*ddb2delta_offsets`, true, affected(0))
	_, err = w.Write(ctx, []writer.Change{change("u", "b", 6, 1, 7)}, nil)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("a fenced intent: %v", err)
	}
	if loads := texts(f.statements()[n:], `^COPY INTO`); len(loads) != 0 {
		t.Fatalf("a fenced batch was loaded: %q", loads)
	}
}

// affected is the answer of a MERGE changing n rows.
func affected(n int) map[string]any {
	return map[string]any{"result": map[string]any{"columns": []map[string]string{{"name": "num_affected_rows", "type": "bigint"},
		{"name": "num_updated_rows", "type": "bigint"}, {"name": "num_deleted_rows", "type": "bigint"}, {"name": "num_inserted_rows", "type": "bigint"}},
		"rows": [][]any{{n, n, 0, 0}}, "affected_rows": n}}
}
