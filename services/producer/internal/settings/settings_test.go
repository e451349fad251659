package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/config/doccheck"
)

func TestSampleConfigLoads(t *testing.T) {
	s := Defaults()
	if err := config.LoadEnviron("../../../../deploy/config/producer.yaml", EnvPrefix, nil, s); err != nil {
		t.Fatalf("deploy/config/producer.yaml: %v", err)
	}
	if s.Tables[0].Encoding != "typed" {
		t.Fatalf("encoding = %q", s.Tables[0].Encoding)
	}
	if sn := s.Tables[0].Snapshot; !sn.Enabled || sn.ID != "initial" || sn.Segments != 2 || sn.PageSize != 500 || sn.OnDemandCapacity != 4000 {
		t.Fatalf("snapshot = %+v", sn)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		env   []string
		wants []string
	}{
		{"no tables", "tables: []\n", nil, []string{"tables: must list at least one table"}},
		{
			"every table problem",
			"topic_prefix: 'a b'\ntables:\n  - {name: x}\n  - {name: orders, encoding: json}\n  - {name: orders}\n",
			[]string{"DDB2DELTA_PRODUCER_DYNAMODB_ENDPOINT=localhost:8000", "DDB2DELTA_PRODUCER_KAFKA_SASL_MECHANISM=GSSAPI"},
			[]string{`topic_prefix: "a b"`, `tables[0].name: "x" is not a DynamoDB table name`, `tables[1].encoding: "json"`,
				`tables[2].name: table "orders" is listed twice`, "dynamodb.endpoint", `kafka.sasl.mechanism: "GSSAPI"`},
		},
		{"snapshot problems", "tables:\n  - {name: orders, snapshot: {enabled: true, id: 'a b', segments: -1, capacity_share: 1.5, page_size: -3}}\n", nil,
			[]string{`tables[0].snapshot.id: "a b"`, "tables[0].snapshot.segments: must be between 1 and 1000000", "tables[0].snapshot.capacity_share: must be in (0, 1], got 1.5",
				"tables[0].snapshot.page_size: must be positive"}},
		{"sasl needs credentials", "tables: [{name: orders}]\n", []string{"DDB2DELTA_PRODUCER_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"},
			[]string{"kafka.sasl.username: must be set", "kafka.sasl.password: set exactly one"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.yaml")
			if err := os.WriteFile(path, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			err := config.LoadEnviron(path, EnvPrefix, tt.env, Defaults())
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestEveryKeyDocumented(t *testing.T) {
	doccheck.KeysDocumented(t, Defaults(), "../../README.md", "../../../platform/README.md")
}
