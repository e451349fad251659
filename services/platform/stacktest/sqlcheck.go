package stacktest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// sqlCounts is what one engine answered for one table (scripts/python/*_sql_check.py).
type sqlCounts struct {
	Error   string `json:"error"`
	Count   int64  `json:"count"`
	History int64  `json:"history"`
	V0Count int64  `json:"v0_count"`
	Columns map[string]struct {
		Type    string `json:"type"`
		NotNull int64  `json:"not_null"`
		GeMin   *int64 `json:"ge_min"`
		LtMax   *int64 `json:"lt_max"`
		Min     *struct {
			Text string `json:"text"`
		} `json:"min"`
	} `json:"columns"`
}

// SQLConformance queries Delta tables as users do and checks that the engines agree: Spark SQL
// (spark_sql_check.py) runs, per table, a count, `IS NOT NULL` on every top-level column, `>= min`
// and `< max` on every orderable one (decimals included), DESCRIBE HISTORY and VERSION AS OF 0;
// delta-rs answers the same predicates through its DataFusion SQL and through a full scan
// (deltars_sql_check.py). It returns one line per disagreement or failed query, naming the table
// and the column; none means every engine gave every count the full scan gave. opts are
// delta-rs-style storage options for s3:// locations.
func (s *Stack) SQLConformance(ctx context.Context, locations, opts []string) ([]string, error) {
	var args []string
	for _, o := range opts {
		args = append(args, "--storage-option", o)
	}
	script := func(name string) string { return filepath.Join(s.Root, "scripts", "python", name) }
	run := func(python string, argv ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, python, argv...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil && len(out) == 0 {
			return nil, fmt.Errorf("%s: %v\n%s", filepath.Base(argv[0]), err, tail(stderr.String(), 3000))
		}
		return out, nil // a non-zero exit with output: the tables that failed say why
	}
	sparkOut, err := run(s.SparkPython, append(append([]string{script("spark_sql_check.py")}, locations...), args...)...)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp("", "spark-sql-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(sparkOut); err != nil {
		return nil, err
	}
	tmp.Close()
	rsOut, err := run(s.DeltaPython, append([]string{script("deltars_sql_check.py"), tmp.Name()}, args...)...)
	if err != nil {
		return nil, err
	}
	var spark struct {
		Tables map[string]sqlCounts `json:"tables"`
	}
	var rs struct {
		Tables map[string]struct {
			Error string    `json:"error"`
			SQL   sqlCounts `json:"sql"`
			Scan  sqlCounts `json:"scan"`
		} `json:"tables"`
	}
	if err := json.Unmarshal(sparkOut, &spark); err != nil {
		return nil, fmt.Errorf("spark_sql_check.py output: %w", err)
	}
	if err := json.Unmarshal(rsOut, &rs); err != nil {
		return nil, fmt.Errorf("deltars_sql_check.py output: %w", err)
	}
	var bad []string
	for _, loc := range locations {
		sp, ok := spark.Tables[loc]
		switch {
		case !ok:
			bad = append(bad, loc+": Spark gave no answer")
			continue
		case sp.Error != "":
			bad = append(bad, loc+": Spark SQL failed: "+sp.Error)
			continue
		case rs.Tables[loc].Error != "":
			bad = append(bad, loc+": delta-rs failed: "+rs.Tables[loc].Error)
			continue
		}
		sql, scan := rs.Tables[loc].SQL, rs.Tables[loc].Scan
		eq := func(what string, spark, sql, scan int64) {
			if spark != scan || sql != scan {
				bad = append(bad, fmt.Sprintf("%s: %s: full scan %d, Spark SQL %d, delta-rs SQL %d", loc, what, scan, spark, sql))
			}
		}
		eq("count(*)", sp.Count, sql.Count, scan.Count)
		eq("DESCRIBE HISTORY versions", sp.History, sql.History, scan.History)
		eq("count(*) VERSION AS OF 0", sp.V0Count, sql.V0Count, scan.V0Count)
		for _, name := range sortedColumns(sp) {
			c := sp.Columns[name]
			eq(name+" IS NOT NULL", c.NotNull, sql.Columns[name].NotNull, scan.Columns[name].NotNull)
			if c.Min == nil {
				continue
			}
			if c.GeMin == nil || c.LtMax == nil {
				bad = append(bad, fmt.Sprintf("%s: %s: Spark gave a min but no predicate counts", loc, name))
				continue
			}
			v := func(p *int64) int64 {
				if p == nil {
					return -1
				}
				return *p
			}
			eq(fmt.Sprintf("%s >= %q (%s)", name, c.Min.Text, c.Type), *c.GeMin, v(sql.Columns[name].GeMin), v(scan.Columns[name].GeMin))
			eq(name+" < max ("+c.Type+")", *c.LtMax, v(sql.Columns[name].LtMax), v(scan.Columns[name].LtMax))
			if v(scan.Columns[name].GeMin) != scan.Columns[name].NotNull {
				bad = append(bad, fmt.Sprintf("%s: %s: Spark's min %q is not below every value of a full scan", loc, name, c.Min.Text))
			}
		}
	}
	return bad, nil
}

func sortedColumns(c sqlCounts) []string {
	out := make([]string, 0, len(c.Columns))
	for n := range c.Columns {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
