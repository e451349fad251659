package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// foreignReport is what the other writers did to the orders mirror.
type foreignReport struct {
	ops     []string // "spark optimize v12", …
	deleted int      // rows Spark deleted, whose items were then re-written in DynamoDB
}

// foreignWriters plays the users who share the sink's mirror with other engines, while the
// workload writes: Apache Spark runs OPTIMIZE, DELETE WHERE _key IN (…) of five live orders (whose
// items are then re-written in DynamoDB, so the stream brings them back), and OPTIMIZE ZORDER BY;
// delta-rs runs optimize.compact() once the sink has spread those rows over small bucket files
// again. Each is retried when it loses a race with the sink, as a
// user's job would be. The drain's checks (mirror = Scan, changelog exact) and checkForeignLog
// then prove that the sink handled the files these writers made.
//
// The workload pauses during each operation (the sink keeps running and committing what is
// still in flight): every sink commit rewrites bucket files, and an OPTIMIZE that takes seconds
// conflicts with any commit that removed a file it read, so against a mirror committing twice a
// second it loses every race (measured: 20 of 20 attempts lost).
func foreignWriters(ctx context.Context, s *stacktest.Stack, ddb *dynamodb.Client, w *workload, location, logDir string) (*foreignReport, error) {
	table := w.orders
	rep := &foreignReport{}
	stderr, err := os.Create(filepath.Join(logDir, "spark-foreign-writer.log"))
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	cmd := exec.CommandContext(ctx, s.SparkPython, filepath.Join(s.Root, "scripts", "python", "spark_foreign_writer.py"), location)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting Spark: %w", err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	answers := bufio.NewScanner(stdout)
	answers.Buffer(make([]byte, 1<<20), 64<<20)
	call := func(cmd map[string]any) (map[string]any, error) {
		if cmd != nil {
			b, _ := json.Marshal(cmd)
			if _, err := stdin.Write(append(b, '\n')); err != nil {
				return nil, fmt.Errorf("sending %v to Spark: %w", cmd, err)
			}
		}
		if !answers.Scan() {
			return nil, fmt.Errorf("the Spark writer exited (%v); its log: %s", answers.Err(), stderr.Name())
		}
		var a map[string]any
		if err := json.Unmarshal(answers.Bytes(), &a); err != nil {
			return nil, fmt.Errorf("the Spark writer's answer %q: %w", answers.Text(), err)
		}
		if a["ok"] != true {
			return nil, fmt.Errorf("the Spark writer's %v failed: %v", a["op"], a["error"])
		}
		return a, nil
	}
	if _, err := call(nil); err != nil { // the JVM is up
		return nil, err
	}
	// The sink creates the table with its first commit.
	for {
		if _, err := os.Stat(filepath.Join(location, "_delta_log", "00000000000000000001.json")); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond): // polling the table's log
		}
	}
	note := func(who string, a map[string]any) {
		rep.ops = append(rep.ops, fmt.Sprintf("%s %v→v%v (%v attempts)", who, a["op"], a["version"], a["attempts"]))
		say("other writer: %s", rep.ops[len(rep.ops)-1])
	}
	paused := func(cmd map[string]any) (map[string]any, error) {
		resume := w.pause()
		defer resume()
		return call(cmd)
	}
	a, err := paused(map[string]any{"op": "optimize"})
	if err != nil {
		return nil, err
	}
	note("spark", a)

	keys, err := liveKeys(ctx, s, location, 5)
	if err != nil {
		return nil, err
	}
	if a, err = paused(map[string]any{"op": "delete", "column": "_key", "values": keys}); err != nil {
		return nil, err
	}
	note("spark", a)
	for _, k := range keys { // the users' fix: touch the items so that the stream re-sends them
		if err := rewrite(ctx, ddb, table, k); err != nil {
			return nil, err
		}
	}
	rep.deleted = len(keys)

	// The sink spreads the rows of the other writers' files over its bucket files again: some
	// small files for delta-rs to compact.
	if err := waitCommits(ctx, location, 2); err != nil {
		return nil, err
	}
	resume := w.pause()
	out, err := exec.CommandContext(ctx, s.DeltaPython, filepath.Join(s.Root, "scripts", "python", "deltars_optimize.py"), location).Output()
	resume()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("delta-rs optimize: %v: %s %s", err, out, ee.Stderr)
		}
		return nil, err
	}
	var d map[string]any
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, fmt.Errorf("delta-rs optimize output %q: %w", out, err)
	}
	d["op"] = "optimize.compact"
	note("delta-rs", d)
	if m, _ := d["metrics"].(map[string]any); m == nil || m["numFilesRemoved"] == float64(0) {
		return nil, fmt.Errorf("delta-rs optimize.compact had nothing to compact: %s", out)
	}

	if err := waitCommits(ctx, location, 2); err != nil {
		return nil, err
	}
	if a, err = paused(map[string]any{"op": "zorder", "by": []string{"customer_id"}}); err != nil {
		return nil, err
	}
	note("spark zorder", a)
	return rep, nil
}

// waitCommits waits until the table's log has n more commits than it has now.
func waitCommits(ctx context.Context, location string, n int) error {
	count := func() int {
		m, _ := filepath.Glob(filepath.Join(location, "_delta_log", "*.json"))
		return len(m)
	}
	want := count() + n
	deadline := time.Now().Add(2 * time.Minute)
	for count() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %d new commits in 2 minutes", location, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond): // polling the table's log
		}
	}
	return nil
}

// liveKeys returns up to n _key values of the mirror's current rows.
func liveKeys(ctx context.Context, s *stacktest.Stack, location string, n int) ([]string, error) {
	t, err := readDelta(ctx, s.DeltaPython, s.Root, location, false)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, r := range t.Rows {
		if k, ok := r["_key"].(string); ok && len(keys) < n {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the mirror %s has no rows to delete yet", location)
	}
	return keys, nil
}

// rewrite touches the order whose mirror row was deleted by another writer, if it still exists,
// so that a new stream record brings the row back.
func rewrite(ctx context.Context, ddb *dynamodb.Client, table, key string) error {
	var parts [][2]string
	if err := json.Unmarshal([]byte(key), &parts); err != nil || len(parts) != 2 {
		return fmt.Errorf("mirror key %q is not [[S, order_id], [N, line]]", key)
	}
	_, err := ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table),
		Key:                       map[string]types.AttributeValue{"order_id": s(parts[0][1]), "line": n(parts[1][1])},
		UpdateExpression:          aws.String("SET restored = :t"),
		ConditionExpression:       aws.String("attribute_exists(order_id)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": &types.AttributeValueMemberBOOL{Value: true}}})
	var gone *types.ConditionalCheckFailedException
	if errors.As(err, &gone) {
		return nil // deleted meanwhile: the mirror must not have it, and does not
	}
	if err != nil {
		return fmt.Errorf("re-writing order %s: %w", key, err)
	}
	return nil
}

// checkForeignLog reads every commit of the mirror's log and counts the commits by engine and
// operation: the log has no gap, and each other writer's operation that succeeded is in it
// (a commit the sink lost, or overwrote, would be missing).
func checkForeignLog(location string, rep *foreignReport) ([]string, error) {
	counts := map[string]int{}
	for v := 0; ; v++ {
		b, err := os.ReadFile(filepath.Join(location, "_delta_log", fmt.Sprintf("%020d.json", v)))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, err
		}
		engine, op := "?", "?"
		dec := json.NewDecoder(bytes.NewReader(b))
		for {
			var line struct {
				CommitInfo map[string]any `json:"commitInfo"`
			}
			if err := dec.Decode(&line); err == io.EOF {
				break
			} else if err != nil {
				return nil, fmt.Errorf("version %d: %w", v, err)
			}
			if line.CommitInfo != nil {
				engine, _ = line.CommitInfo["engineInfo"].(string)
				op, _ = line.CommitInfo["operation"].(string)
				if engine == "" && line.CommitInfo["clientVersion"] != nil {
					engine = "delta-rs" // delta-rs puts its version in clientVersion
				}
			}
		}
		switch {
		case strings.HasPrefix(engine, "ddb2delta"):
			engine = "sink"
		case strings.Contains(strings.ToLower(engine), "spark"):
			engine = "spark"
		case strings.Contains(engine, "delta-rs"):
			engine = "delta-rs"
		}
		counts[engine+" "+op]++
	}
	var missing []string
	for _, want := range []string{"spark OPTIMIZE", "spark DELETE", "delta-rs OPTIMIZE"} {
		if counts[want] == 0 {
			missing = append(missing, fmt.Sprintf("orders_mirror: no %s commit in the log (commits by engine and operation: %v)", want, counts))
		}
	}
	say("orders_mirror commits by engine and operation: %v; other writers: %s", counts, strings.Join(rep.ops, "; "))
	return missing, nil
}
