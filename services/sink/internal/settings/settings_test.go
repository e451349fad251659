package settings

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/config/doccheck"
)

func TestSampleConfigLoads(t *testing.T) {
	s := Defaults()
	if err := config.LoadEnviron("../../../../deploy/config/sink.yaml", EnvPrefix, nil, s); err != nil {
		t.Fatalf("deploy/config/sink.yaml: %v", err)
	}
	if len(s.Tables) == 0 {
		t.Fatal("sample config has no tables")
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	body := `
consumer_group: ""
tables_root: "ftp://x"
tables:
  - {name: t, topics: ["bad topic"], mode: upsert, location: "", schema_hints: {amount: "decimal(40,2)", address: json, address.zip: string}}
  - {name: t, topics: [], mode: upsert, location: "s3://"}
  - {name: c, topics: [a], mode: changelog, location: c, mirror_strategy: copy_on_write}
  - {name: m, topics: [a], mode: mirror, location: m, mirror_strategy: merge_on_read}
`
	path := filepath.Join(t.TempDir(), "sink.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	err := config.LoadEnviron(path, EnvPrefix, []string{"DDB2DELTA_SINK_HTTP_LISTEN=nope"}, Defaults())
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"http.listen", "consumer_group: must be set", "tables_root:", `tables[0].topics: "bad topic"`,
		`tables[0].mode: "upsert"`, "tables[0].location", "tables[1].topics: must list", "tables[1].location",
		`tables[1].name: table "t" is defined twice`,
		`tables[0].schema_hints: schema hint "amount": type "decimal(40,2)"`,
		`tables[0].schema_hints: schema hint "address.zip" is a path into "address", which is hinted as json, not a map`,
		`tables[2].mirror_strategy: "copy_on_write": only mirror tables have a strategy`,
		`tables[3].mirror_strategy: "merge_on_read" is not deletion_vectors or copy_on_write`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestResolveLocation(t *testing.T) {
	tests := []struct{ root, loc, want string }{
		{"./delta", "orders", "./delta/orders"},
		{"/data/delta/", "./orders", "/data/delta/orders"},
		{"s3://bucket/tables", "orders", "s3://bucket/tables/orders"},
		{"./delta", "/abs/orders", "/abs/orders"},
		{"./delta", "s3://other/orders", "s3://other/orders"},
		{"./delta", "file:///x/orders", "file:///x/orders"},
	}
	for _, tt := range tests {
		s := &Settings{TablesRoot: tt.root}
		if got := s.ResolveLocation(Table{Location: tt.loc}); got != tt.want {
			t.Errorf("root %q location %q: got %q, want %q", tt.root, tt.loc, got, tt.want)
		}
	}
}

func TestEveryKeyDocumented(t *testing.T) {
	doccheck.KeysDocumented(t, Defaults(), "../../README.md", "../../../platform/README.md")
}

func TestWarehouseSettings(t *testing.T) {
	load := func(body string, env ...string) (*Settings, error) {
		path := filepath.Join(t.TempDir(), "sink.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		s := Defaults()
		return s, config.LoadEnviron(path, EnvPrefix, env, s)
	}
	_, err := load(`
tables:
  - {name: a, topics: [t], mode: mirror, target: databricks, location: x, mirror_strategy: copy_on_write}
  - {name: b, topics: [t], mode: mirror, location: y, register: true}
  - {name: c, topics: [t], mode: mirror, target: lakehouse, location: z}
databricks: {http_path: warehouses/1, dialect: hive}
`)
	if err == nil {
		t.Fatal("invalid warehouse settings accepted")
	}
	for _, want := range []string{
		"tables[0].location", "tables[0].mirror_strategy", "databricks.staging", "tables[1].databricks_table", `tables[2].target: "lakehouse"`,
		"databricks.host: must be set", "databricks.http_path", "databricks.token: set the token environment variable (DDB2DELTA_SINK_DATABRICKS_TOKEN)",
		`databricks.dialect: "hive"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	if _, err := load("databricks: {token: dapi-in-the-file}\ntables: [{name: a, topics: [t], mode: mirror, location: a}]\n"); err == nil ||
		!strings.Contains(err.Error(), "secrets are not read from the config file") {
		t.Errorf("a token in the file: %v", err)
	}
	s, err := load(`
databricks: {host: dbc-1.cloud.databricks.com, http_path: /sql/1.0/warehouses/1, catalog: main, schema: cdc, staging: /Volumes/main/cdc/stage}
tables: [{name: orders, topics: [t], mode: changelog, target: databricks}]
`, "DDB2DELTA_SINK_DATABRICKS_TOKEN=dapi-secret")
	if err != nil {
		t.Fatal(err)
	}
	d := s.Databricks
	if d.Port != 443 || d.OffsetsTable != "ddb2delta_offsets" || d.Dialect != "databricks" || s.Tables[0].DatabricksTable != "orders" || d.Token.Value() != "dapi-secret" {
		t.Errorf("defaults: %+v, table %+v", d, s.Tables[0])
	}
	if strings.Contains(fmt.Sprintf("%v %+v", s, s), "dapi-secret") {
		t.Error("the token prints")
	}
}
