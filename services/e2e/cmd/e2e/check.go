package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// deltaTable is a table as delta-rs read it.
type deltaTable struct {
	Version int64            `json:"version"`
	Schema  deltaSchema      `json:"schema"`
	Rows    []map[string]any `json:"rows"`
}

type deltaSchema struct {
	Fields []deltaField `json:"fields"`
}

type deltaField struct {
	Name     string          `json:"name"`
	Type     json.RawMessage `json:"type"`
	Metadata map[string]any  `json:"metadata"`
}

// readDelta reads a table with delta-rs (scripts/python/read_table.py): the independent reader.
func readDelta(ctx context.Context, python, root, location string, withFile bool) (*deltaTable, error) {
	args := []string{filepath.Join(root, "scripts", "python", "read_table.py"), location}
	if withFile {
		args = append(args, "--with-file")
	}
	cmd := exec.CommandContext(ctx, python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("delta-rs reading %s: %v: %s", location, err, strings.TrimSpace(stderr.String()))
	}
	var t deltaTable
	d := json.NewDecoder(bytes.NewReader(out))
	d.UseNumber()
	if err := d.Decode(&t); err != nil {
		return nil, fmt.Errorf("delta-rs output for %s: %w", location, err)
	}
	return &t, nil
}

// comparable renders an item for comparison: canonical, lists as their DynamoDB JSON text (the
// form the Delta column holds), so equal items have equal text.
func comparable(item map[string]types.AttributeValue) (string, error) {
	c, err := ddbavro.CanonicalItem(item)
	if err != nil {
		return "", err
	}
	var flat func(map[string]types.AttributeValue) (map[string]types.AttributeValue, error)
	flat = func(m map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		out := map[string]types.AttributeValue{}
		for k, v := range m {
			switch x := v.(type) {
			case *types.AttributeValueMemberL:
				j, err := ddbavro.MarshalDynamoJSON(x)
				if err != nil {
					return nil, err
				}
				out[k] = &types.AttributeValueMemberS{Value: "L:" + j}
			case *types.AttributeValueMemberM:
				inner, err := flat(x.Value)
				if err != nil {
					return nil, err
				}
				out[k] = &types.AttributeValueMemberM{Value: inner}
			case *types.AttributeValueMemberSS:
				l := slices.Clone(x.Value)
				slices.Sort(l)
				out[k] = &types.AttributeValueMemberSS{Value: l}
			case *types.AttributeValueMemberBS:
				l := slices.Clone(x.Value)
				slices.SortFunc(l, bytes.Compare)
				out[k] = &types.AttributeValueMemberBS{Value: l}
			case *types.AttributeValueMemberNS:
				l := slices.Clone(x.Value)
				slices.Sort(l)
				out[k] = &types.AttributeValueMemberNS{Value: l}
			default:
				out[k] = v
			}
		}
		return out, nil
	}
	f, err := flat(c)
	if err != nil {
		return "", err
	}
	j, err := ddbavro.MarshalDynamoJSON(&types.AttributeValueMemberM{Value: f})
	return j, err
}

// scan reads a whole table, strongly consistent, by the key text of each item.
func scan(ctx context.Context, ddb *dynamodb.Client, table string, keyOf func(map[string]types.AttributeValue) string) (map[string]map[string]types.AttributeValue, error) {
	out := map[string]map[string]types.AttributeValue{}
	p := dynamodb.NewScanPaginator(ddb, &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("scanning %s: %w", table, err)
		}
		for _, it := range page.Items {
			out[keyOf(it)] = it
		}
	}
	return out, nil
}

func orderKeyOf(item map[string]types.AttributeValue) string {
	id, _ := item["order_id"].(*types.AttributeValueMemberS)
	line, _ := item["line"].(*types.AttributeValueMemberN)
	if id == nil || line == nil {
		return "?"
	}
	c, _ := ddbavro.CanonicalNumber(line.Value)
	return id.Value + "#" + c
}

// diffItems compares two keyed sets of items and returns the differences, at most limit, each
// naming the key.
func diffItems(table string, want, got map[string]map[string]types.AttributeValue, limit int) ([]string, error) {
	var out []string
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		w, inWant := want[k]
		g, inGot := got[k]
		var d string
		switch {
		case !inGot:
			d = fmt.Sprintf("%s: key %s missing from the Delta table", table, k)
		case !inWant:
			d = fmt.Sprintf("%s: key %s in the Delta table but not expected", table, k)
		default:
			wj, err := comparable(w)
			if err != nil {
				return nil, fmt.Errorf("key %s: %w", k, err)
			}
			gj, err := comparable(g)
			if err != nil {
				return nil, fmt.Errorf("key %s: %w", k, err)
			}
			if wj != gj {
				d = fmt.Sprintf("%s: key %s differs:\n    want %s\n    got  %s", table, k, wj, gj)
			}
		}
		if d != "" {
			out = append(out, d)
			if len(out) >= limit {
				break
			}
		}
	}
	return out, nil
}

// commitTimes maps every data file of a table to the time of the commit that added it, from the
// Delta log's JSON commits.
func commitTimes(location string) (map[string]time.Time, error) {
	files, err := filepath.Glob(filepath.Join(location, "_delta_log", "*.json"))
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var ts time.Time
		var added []string
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var a struct {
				Add *struct {
					Path       string `json:"path"`
					DataChange bool   `json:"dataChange"`
				} `json:"add"`
				CommitInfo *struct {
					Timestamp int64 `json:"timestamp"`
				} `json:"commitInfo"`
			}
			if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if a.Add != nil && a.Add.DataChange {
				added = append(added, a.Add.Path)
			}
			if a.CommitInfo != nil {
				ts = time.UnixMilli(a.CommitInfo.Timestamp)
			}
		}
		if ts.IsZero() {
			if st, err := os.Stat(f); err == nil {
				ts = st.ModTime()
			}
		}
		for _, p := range added {
			out[p] = ts
		}
	}
	return out, nil
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func numberText(v any) string {
	switch x := v.(type) {
	case json.Number:
		return x.String()
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// checker compares the Delta tables with DynamoDB and its streams.
type checker struct {
	s                       *stacktest.Stack
	ddb                     *dynamodb.Client
	streams                 *dynamodbstreams.Client
	root                    string
	orders, customers       string
	ordersARN, customersARN string

	// from the last check
	ordersEvents, changelogRows int
	lastCommit                  time.Time
}

const diffsShown = 5

func (c *checker) check(ctx context.Context) (*result, error) {
	res := &result{tables: 4}
	orders, err := scan(ctx, c.ddb, c.orders, orderKeyOf)
	if err != nil {
		return nil, err
	}
	customers, err := scan(ctx, c.ddb, c.customers, func(it map[string]types.AttributeValue) string {
		id, _ := it["customer_id"].(*types.AttributeValueMemberS)
		if id == nil {
			return "?"
		}
		return id.Value
	})
	if err != nil {
		return nil, err
	}
	ordersRecs, err := stacktest.ReadStream(ctx, c.streams, c.ordersARN)
	if err != nil {
		return nil, err
	}
	customersRecs, err := stacktest.ReadStream(ctx, c.streams, c.customersARN)
	if err != nil {
		return nil, err
	}
	res.events = len(ordersRecs) + len(customersRecs)
	c.ordersEvents = len(ordersRecs)

	// The enriched table's expected rows: each order whose customer exists, projected.
	enriched := map[string]map[string]types.AttributeValue{}
	for k, o := range orders {
		cid, _ := o["customer_id"].(*types.AttributeValueMemberS)
		if cid == nil {
			continue
		}
		cust, ok := customers[cid.Value]
		if !ok {
			continue // ghost customers: the inner join drops their orders
		}
		enriched[k] = map[string]types.AttributeValue{"order_id": o["order_id"], "line": o["line"], "customer_id": o["customer_id"],
			"customer_name": cust["name"], "tier": cust["tier"], "status": o["status"], "amount": o["amount"]}
	}
	custKey := func(it map[string]types.AttributeValue) string {
		id, _ := it["customer_id"].(*types.AttributeValueMemberS)
		if id == nil {
			return "?"
		}
		return id.Value
	}
	for _, m := range []struct {
		table string
		want  map[string]map[string]types.AttributeValue
		keyOf func(map[string]types.AttributeValue) string
	}{{"orders_mirror", orders, orderKeyOf}, {"customers_mirror", customers, custKey}, {"orders_enriched", enriched, orderKeyOf}} {
		t, err := readDelta(ctx, c.s.DeltaPython, c.s.Root, filepath.Join(c.root, m.table), false)
		if err != nil {
			return nil, err
		}
		got := map[string]map[string]types.AttributeValue{}
		for _, row := range t.Rows {
			item, err := itemOf(t.Schema.Fields, row)
			if err != nil {
				return nil, fmt.Errorf("%s: row %v: %w", m.table, row["_key"], err)
			}
			got[m.keyOf(item)] = item
		}
		diffs, err := diffItems(m.table+" (version "+strconv.FormatInt(t.Version, 10)+")", m.want, got, 1<<30)
		if err != nil {
			return nil, err
		}
		res.mismatches += len(diffs)
		res.diffs = append(res.diffs, diffs[:min(len(diffs), diffsShown)]...)
	}

	// The changelog: every stream record of orders once, in per-key order.
	location := filepath.Join(c.root, "orders_changelog")
	t, err := readDelta(ctx, c.s.DeltaPython, c.s.Root, location, true)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, r := range ordersRecs {
		want[aws.ToString(r.EventID)] = true
	}
	seen := map[string][]string{} // event id → where (topic/partition/offset)
	type pos struct {
		partition, offset int64
		seq, event        string
	}
	byKey := map[string][]pos{}
	times, err := commitTimes(location)
	if err != nil {
		return nil, err
	}
	var lat []time.Duration
	c.changelogRows = len(t.Rows)
	for _, ts := range times {
		if ts.After(c.lastCommit) {
			c.lastCommit = ts
		}
	}
	for _, row := range t.Rows {
		id, _ := row["_event_id"].(string)
		at := fmt.Sprintf("%v[%v]@%v", row["_kafka_topic"], row["_kafka_partition"], row["_kafka_offset"])
		seen[id] = append(seen[id], at)
		p, _ := strconv.ParseInt(numberText(row["_kafka_partition"]), 10, 64)
		off, _ := strconv.ParseInt(numberText(row["_kafka_offset"]), 10, 64)
		key, _ := row["_key"].(string)
		byKey[key] = append(byKey[key], pos{p, off, fmt.Sprint(row["_sequence_number"]), id})
		if after, ok := row["after"].(map[string]any); ok {
			if ms, err := strconv.ParseInt(numberText(after["written_ms"]), 10, 64); err == nil {
				if ts, ok := times[fmt.Sprint(row["_file"])]; ok {
					lat = append(lat, ts.Sub(time.UnixMilli(ms)))
				}
			}
		}
	}
	for id := range want {
		if len(seen[id]) == 0 {
			res.lost++
			if res.lost <= diffsShown {
				res.diffs = append(res.diffs, fmt.Sprintf("orders_changelog: stream record %s is missing", id))
			}
		}
	}
	for id, at := range seen {
		switch {
		case !want[id]:
			res.mismatches++
			res.diffs = append(res.diffs, fmt.Sprintf("orders_changelog: event %s at %v is not in the stream", id, at))
		case len(at) > 1:
			res.duplicated += len(at) - 1
			if res.duplicated <= diffsShown {
				res.diffs = append(res.diffs, fmt.Sprintf("orders_changelog: stream record %s appears %d times, at %v", id, len(at), at))
			}
		}
	}
	for key, ps := range byKey {
		slices.SortFunc(ps, func(a, b pos) int {
			if a.partition != b.partition {
				return int(a.partition - b.partition)
			}
			return int(a.offset - b.offset)
		})
		for i := 1; i < len(ps); i++ {
			if ps[i].seq <= ps[i-1].seq && ps[i].event != ps[i-1].event {
				res.disorder++
				if res.disorder <= diffsShown {
					res.diffs = append(res.diffs, fmt.Sprintf("orders_changelog: key %s: sequence %s at offset %d follows %s at offset %d",
						key, ps[i].seq, ps[i].offset, ps[i-1].seq, ps[i-1].offset))
				}
			}
		}
	}
	slices.Sort(lat)
	res.p50, res.p99 = percentile(lat, 50), percentile(lat, 99)
	return res, nil
}
