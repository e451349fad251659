package monitoring

// What the tests share: loading the dashboards and the alert rules, collecting their PromQL
// expressions, and checking the names and labels an expression uses against a catalog of series
// (the services' documented metrics, or what their real binaries export).

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// Where the monitoring configuration lives, relative to the repository root.
const (
	dashboardsDir   = "deploy/grafana/dashboards"
	datasourcesFile = "deploy/grafana/provisioning/datasources/prometheus.yml"
	providersDir    = "deploy/grafana/provisioning/dashboards"
	prometheusFile  = "deploy/prometheus/prometheus.yml"
	alertsFile      = "deploy/prometheus/alerts.yml"
	alertTestsFile  = "deploy/prometheus/alerts_test.yml"
)

func repoRoot(t testing.TB) string {
	t.Helper()
	s, err := stacktest.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s.Root
}

// decodeYAML strictly decodes a YAML file: an unknown key is an error.
func decodeYAML(t testing.TB, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// datasourceUID is the uid of the Prometheus datasource Grafana is provisioned with: the one
// every dashboard must name.
func datasourceUID(t testing.TB, root string) string {
	t.Helper()
	var f struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string `yaml:"name"`
			UID       string `yaml:"uid"`
			Type      string `yaml:"type"`
			Access    string `yaml:"access"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	decodeYAML(t, filepath.Join(root, datasourcesFile), &f)
	for _, d := range f.Datasources {
		if d.Type == "prometheus" {
			if d.UID == "" {
				t.Fatalf("%s: the Prometheus datasource has no uid for the dashboards to name", datasourcesFile)
			}
			return d.UID
		}
	}
	t.Fatalf("%s provisions no Prometheus datasource", datasourcesFile)
	return ""
}

// The part of Grafana's dashboard JSON model the tests read.
type (
	dashboard struct {
		UID           string                    `json:"uid"`
		Title         string                    `json:"title"`
		SchemaVersion int                       `json:"schemaVersion"`
		Panels        []panel                   `json:"panels"`
		Templating    struct{ List []variable } `json:"templating"`
	}
	panel struct {
		ID         int                      `json:"id"`
		Type       string                   `json:"type"`
		Title      string                   `json:"title"`
		Collapsed  bool                     `json:"collapsed"`
		Datasource json.RawMessage          `json:"datasource"`
		GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
		Targets    []target                 `json:"targets"`
		Panels     []panel                  `json:"panels"` // a row's, when it is collapsed
	}
	target struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	}
	variable struct {
		Name       string          `json:"name"`
		Type       string          `json:"type"`
		Datasource json.RawMessage `json:"datasource"`
		Query      json.RawMessage `json:"query"` // a string, or {"query": "…"} as newer editors save it
	}
	datasourceRef struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
)

// loadDashboards reads every dashboard, by file name.
func loadDashboards(t testing.TB, root string) map[string]*dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, dashboardsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", dashboardsDir)
	}
	out := map[string]*dashboard{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := &dashboard{}
		if err := json.Unmarshal(raw, d); err != nil {
			t.Fatalf("dashboard %s is not valid JSON of a dashboard: %v", filepath.Base(f), err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// datasourceOf decodes a datasource reference: an object naming the datasource's uid (a bare
// name is what old dashboards saved, and breaks when the datasource is renamed).
func datasourceOf(raw json.RawMessage) (datasourceRef, error) {
	var ds datasourceRef
	if len(raw) == 0 || string(raw) == "null" {
		return ds, errors.New("no datasource")
	}
	if err := json.Unmarshal(raw, &ds); err != nil {
		return ds, fmt.Errorf("datasource %s is not a {type, uid} reference", raw)
	}
	return ds, nil
}

// variableQuery returns a query variable's query, saved as a string or as an object.
func variableQuery(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var o struct{ Query string }
	if err := json.Unmarshal(raw, &o); err != nil {
		return "", fmt.Errorf("query %s is neither a string nor an object with a query", raw)
	}
	return o.Query, nil
}

// walkPanels calls f for every panel, the panels of collapsed rows included, with a path naming it.
func walkPanels(panels []panel, path string, f func(p *panel, where string)) {
	for i := range panels {
		p := &panels[i]
		where := fmt.Sprintf("%spanel %d %q", path, p.ID, p.Title)
		f(p, where)
		walkPanels(p.Panels, where+" > ", f)
	}
}

// query is one PromQL expression that a dashboard or the alert rules evaluate.
type query struct {
	where string // the file and the panel, variable or alert, for messages
	expr  string // PromQL, Grafana's variables replaced by values
	label string // for a label_values(selector, label) variable: the label it lists
}

// grafanaVar matches a Grafana variable in a query: $name, ${name}, ${name:format}, [[name]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// durationVars are Grafana's built-in variables that stand for a PromQL duration.
var durationVars = map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}

// substitute replaces Grafana's variables so that the expression is PromQL: a duration for the
// built-in intervals, a plain value for the dashboard's own variables (they appear in label
// matchers). A variable the dashboard does not define is an error.
func substitute(expr string, defined map[string]bool) (string, error) {
	var bad []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		switch {
		case durationVars[name]:
			return "5m"
		case defined[name]:
			return "value"
		}
		bad = append(bad, m)
		return m
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("undefined Grafana variables %v in %q", bad, expr)
	}
	return out, nil
}

var (
	// The selector is greedy: it runs to the last comma, past the commas of its matchers.
	labelValuesQuery = regexp.MustCompile(`^\s*label_values\(\s*(?:(.*\S)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	queryResultQuery = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
)

// dashboardQueries returns every expression of a dashboard: its panels' targets (collapsed rows
// included) and its query variables. errs lists what is not a query the tests understand.
func dashboardQueries(file string, d *dashboard) (qs []query, errs []error) {
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		where := fmt.Sprintf("dashboard %s, variable %s", file, v.Name)
		raw, err := variableQuery(v.Query)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		q := query{where: where}
		switch {
		case labelValuesQuery.MatchString(raw):
			m := labelValuesQuery.FindStringSubmatch(raw)
			q.expr, q.label = m[1], m[2]
			if q.expr == "" {
				errs = append(errs, fmt.Errorf("%s: label_values(%s) lists the label over every metric: name a metric", where, q.label))
				continue
			}
		case queryResultQuery.MatchString(raw):
			q.expr = queryResultQuery.FindStringSubmatch(raw)[1]
		default:
			errs = append(errs, fmt.Errorf("%s: %q is not label_values(selector, label) or query_result(expr)", where, raw))
			continue
		}
		if q.expr, err = substitute(q.expr, defined); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		qs = append(qs, q)
	}
	walkPanels(d.Panels, fmt.Sprintf("dashboard %s, ", file), func(p *panel, where string) {
		for _, tg := range p.Targets {
			w := where + ", target " + tg.RefID
			expr, err := substitute(tg.Expr, defined)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", w, err))
				continue
			}
			qs = append(qs, query{where: w, expr: expr})
		}
	})
	return qs, errs
}

// ruleFile is Prometheus' rule file format.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t testing.TB, root string) ruleFile {
	t.Helper()
	var f ruleFile
	decodeYAML(t, filepath.Join(root, alertsFile), &f)
	return f
}

// ruleQueries returns the expression of every rule.
func ruleQueries(f ruleFile) []query {
	var qs []query
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{where: fmt.Sprintf("%s, group %s, alert %s", alertsFile, g.Name, r.Alert+r.Record), expr: r.Expr})
		}
	}
	return qs
}

// allQueries returns every expression of the dashboards and the alert rules; errs lists the
// dashboard queries that could not be read.
func allQueries(t testing.TB, root string) (qs []query, errs []error) {
	t.Helper()
	ds := loadDashboards(t, root)
	for _, file := range slices.Sorted(maps.Keys(ds)) {
		q, e := dashboardQueries(file, ds[file])
		qs, errs = append(qs, q...), append(errs, e...)
	}
	return append(qs, ruleQueries(loadRules(t, root))...), errs
}

// catalog is what a set of scrape targets offers to queries: each series name with its label
// names, and the labels Prometheus attaches to every series of a target.
type catalog struct {
	series map[string]map[string]bool
	// targetLabels are added by Prometheus, not exported by the services.
	targetLabels map[string]bool
	// unlabelled, when set, accepts any series name it matches with target labels only (the
	// documented catalog cannot list the Go and process collectors' names).
	unlabelled *regexp.Regexp
}

// addFamily adds a metric family as its series appear to PromQL: a histogram as _bucket (with
// le), _sum and _count, a summary as itself (with quantile), _sum and _count.
func (c *catalog) addFamily(name, kind string, labelNames []string) {
	add := func(series string, extra ...string) {
		if c.series[series] == nil {
			c.series[series] = map[string]bool{}
		}
		for _, l := range append(slices.Clone(labelNames), extra...) {
			c.series[series][l] = true
		}
	}
	switch kind {
	case "histogram":
		add(name+"_bucket", "le")
		add(name + "_sum")
		add(name + "_count")
	case "summary":
		add(name, "quantile")
		add(name + "_sum")
		add(name + "_count")
	default:
		add(name)
	}
}

// prometheusTargetLabels are the labels Prometheus attaches to the series of a ddb2delta target:
// job and instance always; those of the static configs in deploy/prometheus/prometheus.yml
// (docker-compose, the native stack); and namespace and pod, which Kubernetes service discovery
// (a ServiceMonitor, or the common relabelling of kubernetes_sd_configs) attaches.
func prometheusTargetLabels(t testing.TB, root string) map[string]bool {
	t.Helper()
	var cfg struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	raw, err := os.ReadFile(filepath.Join(root, prometheusFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", prometheusFile, err)
	}
	out := map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for l := range st.Labels {
				out[l] = true
			}
		}
	}
	return out
}

// seriesNames returns the catalog's series a selector selects by name.
func (c *catalog) seriesNames(vs *parser.VectorSelector) ([]string, error) {
	if vs.Name != "" {
		if _, ok := c.series[vs.Name]; ok {
			return []string{vs.Name}, nil
		}
		if c.unlabelled != nil && c.unlabelled.MatchString(vs.Name) {
			return []string{vs.Name}, nil
		}
		return nil, fmt.Errorf("metric %s is not exported", vs.Name)
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(c.series)) {
		ok := true
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && !m.Matches(name) {
				ok = false
			}
		}
		if ok {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("selector %s matches no exported metric", vs)
	}
	return out, nil
}

// labelsOf is the union of the label names of the series the selectors select, and the target
// labels. ok is false when a selector selects nothing known (reported on its own).
func (c *catalog) labelsOf(sels []*parser.VectorSelector) (have map[string]bool, ok bool) {
	out := maps.Clone(c.targetLabels)
	for _, vs := range sels {
		names, err := c.seriesNames(vs)
		if err != nil {
			return nil, false
		}
		for _, n := range names {
			maps.Copy(out, c.series[n])
		}
	}
	return out, true
}

func selectorsIn(n parser.Node) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(n, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// promql is Prometheus' parser with its default options: no experimental functions or syntax,
// which a Prometheus started without feature flags (docker-compose's) would refuse.
var promql = parser.NewParser(parser.Options{})

// check parses a query with Prometheus' parser and returns a problem for every series name it
// selects that the catalog lacks, and every label name it uses (in a matcher, by/without,
// on/ignoring, group_left/right, label_values) that none of the series it applies to has.
func (c *catalog) check(q query) []error {
	expr, err := promql.ParseExpr(q.expr)
	if err != nil {
		return []error{fmt.Errorf("%s: %q does not parse: %w", q.where, q.expr, err)}
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s, in %q", q.where, fmt.Sprintf(format, args...), q.expr))
	}
	unknown := func(used []string, sels []*parser.VectorSelector, what string) {
		have, ok := c.labelsOf(sels)
		if !ok {
			return
		}
		for _, l := range used {
			if !have[l] {
				bad("%s label %q is not a label of %s", what, l, strings.Join(slices.Sorted(maps.Keys(have)), ", "))
			}
		}
	}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			names, err := c.seriesNames(n)
			if err != nil {
				bad("%v", err)
				return nil
			}
			var used []string
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel {
					used = append(used, m.Name)
				}
			}
			unknown(used, []*parser.VectorSelector{n}, "matcher of "+strings.Join(names, "|")+":")
		case *parser.AggregateExpr:
			unknown(n.Grouping, selectorsIn(n.Expr), "grouping")
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				sels := append(selectorsIn(n.LHS), selectorsIn(n.RHS)...)
				unknown(n.VectorMatching.MatchingLabels, sels, "on/ignoring")
				unknown(n.VectorMatching.Include, sels, "group_left/right")
			}
		}
		return nil
	})
	if q.label != "" {
		unknown([]string{q.label}, selectorsIn(expr), "label_values")
	}
	return errs
}
