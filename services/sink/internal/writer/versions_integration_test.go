//go:build integration

package writer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// versionsRead is what spark_versions.py and deltars_versions.py print.
type versionsRead struct {
	Latest   int64 `json:"latest"`
	Versions []struct {
		Version int64       `json:"version"`
		Rows    [][2]string `json:"rows"`
	} `json:"versions"`
	Changes [][4]any `json:"changes"`
}

// readVersions runs a versions script with a reader's python.
func readVersions(t *testing.T, s *stacktest.Stack, python, script, url string, opts []string, extra ...string) versionsRead {
	t.Helper()
	args := append([]string{filepath.Join(s.Root, "scripts", "python", script), url}, extra...)
	for _, o := range opts {
		args = append(args, "--storage-option", o)
	}
	cmd := exec.Command(python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, url, err, stderr.String())
	}
	var got versionsRead
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// checkVersions compares every version a reader read with the state expected after the commit
// that made it (key → sequence number).
func checkVersions(t *testing.T, who string, got versionsRead, states map[int64]map[string]string) {
	t.Helper()
	checked := 0
	for _, v := range got.Versions {
		want, ok := states[v.Version]
		if !ok {
			continue
		}
		have := map[string]string{}
		for _, r := range v.Rows {
			if _, dup := have[r[0]]; dup {
				t.Fatalf("%s reads key %s twice at version %d", who, r[0], v.Version)
			}
			have[r[0]] = r[1]
		}
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("%s at version %d reads %d rows, want %d:\n got %v\nwant %v", who, v.Version, len(have), len(want), have, want)
		}
		checked++
	}
	if checked != len(states) {
		t.Fatalf("%s read %d of the %d versions expected (latest %d)", who, checked, len(states), got.Latest)
	}
}

// everyVersion reads every version of a mirror with Spark and delta-rs (time travel) and compares
// each with the state expected after the commit that made it; and Spark's change data feed from
// version 0 (readChangeFeed) with feed ([version, change type, key, sequence number]).
func everyVersion(t *testing.T, s *stacktest.Stack, url string, opts []string, states map[int64]map[string]string, feed [][4]string) {
	t.Helper()
	checkVersions(t, "delta-rs", readVersions(t, s, s.DeltaPython, "deltars_versions.py", url, opts), states)
	got := readVersions(t, s, s.SparkPython, "spark_versions.py", url, opts, "--cdf")
	checkVersions(t, "Spark", got, states)
	changes := make([][4]string, len(got.Changes))
	for i, c := range got.Changes {
		changes[i] = [4]string{fmt.Sprint(c[0]), fmt.Sprint(c[1]), fmt.Sprint(c[2]), fmt.Sprint(c[3])}
	}
	slices.SortFunc(changes, func(a, b [4]string) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	slices.SortFunc(feed, func(a, b [4]string) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	if !reflect.DeepEqual(changes, feed) {
		t.Fatalf("Spark's change data feed from version 0 differs from the changes written:\n got %v\nwant %v", changes, feed)
	}
	t.Logf("delta-rs and Spark read each of %d versions exactly as expected; Spark reads %d changes in the change data feed", len(states), len(changes))
}
