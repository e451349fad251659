package monitoring

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// TestDashboardsAreWellFormed checks each dashboard's structure: a unique uid, unique panel ids
// (collapsed rows' panels included), panels inside the 24-column grid, and every query on the
// provisioned Prometheus datasource, named by its uid.
func TestDashboardsAreWellFormed(t *testing.T) {
	root := repoRoot(t)
	uid := datasourceUID(t, root)
	ds := loadDashboards(t, root)
	uids := map[string]string{}
	for file, d := range ds {
		t.Run(file, func(t *testing.T) {
			if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
				t.Errorf("uid %q, title %q, schemaVersion %d: each must be set", d.UID, d.Title, d.SchemaVersion)
			}
			if other, ok := uids[d.UID]; ok {
				t.Errorf("uid %q is also the uid of %s", d.UID, other)
			}
			uids[d.UID] = file
			checkDatasource := func(where string, raw []byte) {
				ref, err := datasourceOf(raw)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					return
				}
				if ref.Type != "prometheus" || ref.UID != uid {
					t.Errorf("%s: datasource {type %q, uid %q}, want {prometheus, %q} as %s provisions it", where, ref.Type, ref.UID, uid, datasourcesFile)
				}
			}
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				where := "variable " + v.Name
				checkDatasource(where, v.Datasource)
				if q, err := variableQuery(v.Query); err != nil || strings.TrimSpace(q) == "" {
					t.Errorf("%s: no query (%v)", where, err)
				}
			}
			ids := map[int]string{}
			panels := 0
			walkPanels(d.Panels, "", func(p *panel, where string) {
				panels++
				if prev, ok := ids[p.ID]; ok || p.ID <= 0 {
					t.Errorf("%s: id %d is not unique and positive (also %s)", where, p.ID, prev)
				}
				ids[p.ID] = where
				if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
					t.Errorf("%s: gridPos %+v is not inside the 24-column grid", where, g)
				}
				if p.Type == "row" {
					if !p.Collapsed && len(p.Panels) > 0 {
						t.Errorf("%s: an expanded row holds no panels (Grafana lists them after it)", where)
					}
					return
				}
				checkDatasource(where, p.Datasource)
				if len(p.Targets) == 0 {
					t.Errorf("%s: no query", where)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					w := where + ", target " + tg.RefID
					if tg.RefID == "" || refs[tg.RefID] {
						t.Errorf("%s: refId empty or repeated", w)
					}
					refs[tg.RefID] = true
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s: no expr", w)
					}
					checkDatasource(w, tg.Datasource)
				}
			})
			if panels == 0 {
				t.Error("no panels")
			}
		})
	}
}

// TestQueriesNameDocumentedMetrics parses every expression of the dashboards and the alert rules
// with Prometheus' parser and checks its metric and label names against the metrics documented in
// the services' READMEs. (The integration test checks them against what the binaries export.)
func TestQueriesNameDocumentedMetrics(t *testing.T) {
	root := repoRoot(t)
	c := documentedCatalog(t, root)
	qs, errs := allQueries(t, root)
	for _, q := range qs {
		errs = append(errs, c.check(q)...)
	}
	for _, err := range errs {
		t.Error(err)
	}
	t.Logf("%d expressions checked against %d documented series", len(qs), len(c.series))
}

// TestCheckFindsUnknownNames: the checks fail for what they are meant to catch.
func TestCheckFindsUnknownNames(t *testing.T) {
	c := &catalog{series: map[string]map[string]bool{}, targetLabels: map[string]bool{"job": true, "instance": true}}
	c.addFamily("ddb2delta_sink_rows_total", "counter", []string{"table"})
	c.addFamily("ddb2delta_sink_commit_seconds", "histogram", []string{"table"})
	defined := map[string]bool{"job": true, "table": true}
	for _, tc := range []struct {
		expr, label string
		want        string // in the error; "" for none
	}{
		{`sum by (table) (rate(ddb2delta_sink_rows_total{job=~"$job", table=~"${table}"}[$__rate_interval]))`, "", ""},
		{`histogram_quantile(0.99, sum by (le, table) (rate(ddb2delta_sink_commit_seconds_bucket[5m])))`, "", ""},
		{`ddb2delta_sink_rows_total{job="x"}`, "table", ""},
		{`{__name__=~"ddb2delta_sink_.*_total"}`, "", ""},
		{`ddb2delta_sink_row_total`, "", "metric ddb2delta_sink_row_total is not exported"},
		{`{__name__=~"ddb2delta_producer_.*"}`, "", "matches no exported metric"},
		{`ddb2delta_sink_rows_total{tabel="x"}`, "", `label "tabel"`},
		{`sum by (shard) (ddb2delta_sink_rows_total)`, "", `grouping label "shard"`},
		{`sum without (le) (ddb2delta_sink_rows_total)`, "", `grouping label "le"`},
		{`ddb2delta_sink_rows_total and on (partition) ddb2delta_sink_commit_seconds_count`, "", `on/ignoring label "partition"`},
		{`ddb2delta_sink_rows_total`, "topic", `label_values label "topic"`},
		{`rate(ddb2delta_sink_rows_total[5m]`, "", "does not parse"},
		{`rate(ddb2delta_sink_rows_total{table="$tabel"}[5m])`, "", "undefined Grafana variables"},
	} {
		expr, err := substitute(tc.expr, defined)
		var errs []error
		if err != nil {
			errs = append(errs, err)
		} else {
			errs = c.check(query{where: "test", expr: expr, label: tc.label})
		}
		got := errors.Join(errs...)
		switch {
		case tc.want == "" && got != nil:
			t.Errorf("%s: unexpected %v", tc.expr, got)
		case tc.want != "" && (got == nil || !strings.Contains(got.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.expr, got, tc.want)
		}
	}
	// label_values queries: the selector runs to the last comma.
	d := &dashboard{}
	d.Templating.List = []variable{
		{Name: "job", Type: "query", Query: []byte(`"label_values(ddb2delta_sink_rows_total{job=~\".+\", table!=\"\"}, job)"`)},
		{Name: "table", Type: "query", Query: []byte(`{"query": "label_values(ddb2delta_sink_rows_total{job=~\"$job\"}, table)"}`)},
		{Name: "all", Type: "query", Query: []byte(`"label_values(table)"`)},
	}
	qs, errs := dashboardQueries("test.json", d)
	if len(qs) != 2 || qs[0].label != "job" || qs[0].expr != `ddb2delta_sink_rows_total{job=~".+", table!=""}` || qs[1].label != "table" {
		t.Errorf("label_values queries read as %+v", qs)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "name a metric") {
		t.Errorf("label_values without a metric: %v", errs)
	}
}

// TestAlertRulesAreComplete checks that every alert can be routed and acted on: a unique name, a
// severity, a summary, a description and a runbook; and that alerts_test.yml shows it firing and
// staying quiet.
func TestAlertRulesAreComplete(t *testing.T) {
	root := repoRoot(t)
	f := loadRules(t, root)
	alerts := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			where := fmt.Sprintf("group %s, alert %s", g.Name, r.Alert)
			if r.Alert == "" {
				t.Errorf("group %s: a rule without an alert name (recording rules belong elsewhere): %q", g.Name, r.Expr)
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("%s: the name is used twice", where)
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", where, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", where, r.For, err)
				}
			}
		}
	}
	var tests struct {
		RuleFiles          []string `yaml:"rule_files"`
		EvaluationInterval string   `yaml:"evaluation_interval"`
		Tests              []struct {
			Name        string `yaml:"name"`
			Interval    string `yaml:"interval"`
			InputSeries []struct {
				Series string `yaml:"series"`
				Values string `yaml:"values"`
			} `yaml:"input_series"`
			AlertRuleTest []struct {
				EvalTime  string           `yaml:"eval_time"`
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	decodeYAML(t, filepath.Join(root, alertTestsFile), &tests)
	if !slices.Contains(tests.RuleFiles, path.Base(alertsFile)) {
		t.Errorf("%s does not test %s (rule_files %v)", alertTestsFile, alertsFile, tests.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if !alerts[a.Alertname] {
				t.Errorf("%s, test %q: no alert %s in %s", alertTestsFile, tc.Name, a.Alertname, alertsFile)
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, a := range slices.Sorted(maps.Keys(alerts)) {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: alert %s should be shown firing (%v) and quiet (%v)", alertTestsFile, a, fires[a], quiet[a])
		}
	}
}

// TestComposeProvisionsDashboardsAndRules: docker-compose's Grafana mounts the dashboards where
// the provisioning looks for them, and its Prometheus loads the alert rules from where they are
// mounted.
func TestComposeProvisionsDashboardsAndRules(t *testing.T) {
	root := repoRoot(t)
	var compose struct {
		Services map[string]struct {
			Volumes     []string          `yaml:"volumes"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	// mountOf returns where a service mounts a repository path, and whether read-only.
	mountOf := func(svc, src string) (string, bool) {
		for _, v := range compose.Services[svc].Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && path.Clean(parts[0]) == path.Clean("./"+src) {
				return parts[1], len(parts) == 3 && parts[2] == "ro"
			}
		}
		return "", false
	}

	var providers struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string `yaml:"name"`
			Folder                string `yaml:"folder"`
			Type                  string `yaml:"type"`
			DisableDeletion       bool   `yaml:"disableDeletion"`
			AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
			UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `yaml:"path"`
				FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	files, _ := filepath.Glob(filepath.Join(root, providersDir, "*.yml"))
	if len(files) != 1 {
		t.Fatalf("want one dashboards provider file in %s, found %v", providersDir, files)
	}
	decodeYAML(t, files[0], &providers)
	target, ro := mountOf("grafana", dashboardsDir)
	if !ro {
		t.Errorf("grafana does not mount %s read-only (at %q)", dashboardsDir, target)
	}
	if len(providers.Providers) != 1 || providers.Providers[0].Type != "file" || path.Clean(providers.Providers[0].Options.Path) != path.Clean(target) {
		t.Errorf("the dashboards provider should read the mounted %s (%q): %+v", dashboardsDir, target, providers.Providers)
	}
	if home := compose.Services["grafana"].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		if path.Dir(home) != path.Clean(target) {
			t.Errorf("the home dashboard %s is not in the mounted %s (%s)", home, dashboardsDir, target)
		} else if _, err := os.Stat(filepath.Join(root, dashboardsDir, path.Base(home))); err != nil {
			t.Errorf("the home dashboard: %v", err)
		}
	}

	var prom struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	raw, err = os.ReadFile(filepath.Join(root, prometheusFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &prom); err != nil {
		t.Fatal(err)
	}
	config, _ := mountOf("prometheus", prometheusFile)
	rules, ro := mountOf("prometheus", alertsFile)
	if config == "" || !ro {
		t.Fatalf("prometheus mounts %s at %q and %s at %q (read-only %v)", prometheusFile, config, alertsFile, rules, ro)
	}
	loaded := false
	for _, r := range prom.RuleFiles {
		// Prometheus resolves rule files relative to its configuration file.
		if !path.IsAbs(r) {
			r = path.Join(path.Dir(config), r)
		}
		loaded = loaded || r == rules
		// The same path must resolve beside prometheus.yml in the repository (promtool check config).
		if _, err := os.Stat(filepath.Join(root, filepath.Dir(prometheusFile), path.Base(r))); err != nil {
			t.Errorf("rule file %s: %v", r, err)
		}
	}
	if !loaded {
		t.Errorf("%s rule_files %v does not load %s, mounted at %s", prometheusFile, prom.RuleFiles, alertsFile, rules)
	}
}

// documentedCatalog is the catalog the services' READMEs document: the rows of each Metrics
// table (name, labels, meaning; "(histogram)" in the meaning marks a histogram), each service's
// build_info (services/platform/README.md), and the Go and process collectors' series.
func documentedCatalog(t testing.TB, root string) *catalog {
	t.Helper()
	c := &catalog{series: map[string]map[string]bool{}, targetLabels: prometheusTargetLabels(t, root),
		unlabelled: regexp.MustCompile(`^(go|process)_[a-z_]+$`)}
	c.addFamily("up", "gauge", nil) // Prometheus' own, one per target
	row := regexp.MustCompile("^\\|\\s*`(ddb2delta_[a-z_]+)`\\s*\\|([^|]*)\\|(.*)\\|\\s*$")
	for _, svc := range []string{"producer", "enricher", "sink"} {
		c.addFamily("ddb2delta_"+svc+"_build_info", "gauge", []string{"version"})
		f, err := os.Open(filepath.Join(root, "services", svc, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		inMetrics := false
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "## ") {
				inMetrics = line == "## Metrics"
			}
			m := row.FindStringSubmatch(line)
			if !inMetrics || m == nil {
				continue
			}
			var names []string
			for _, l := range strings.Split(m[2], ",") {
				if l = strings.TrimSpace(l); l != "" && l != "—" {
					names = append(names, l)
				}
			}
			kind := "counter"
			if strings.Contains(m[3], "(histogram)") {
				kind = "histogram"
			}
			c.addFamily(m[1], kind, names)
			n++
		}
		f.Close()
		if err := sc.Err(); err != nil || n == 0 {
			t.Fatalf("services/%s/README.md: no metrics table read (%v)", svc, err)
		}
	}
	return c
}
