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
	if err := config.LoadEnviron("../../../../deploy/config/enricher.yaml", EnvPrefix, nil, Defaults()); err != nil {
		t.Fatalf("deploy/config/enricher.yaml: %v", err)
	}
}

func TestValidate(t *testing.T) {
	body := "consumer_group: ''\npipelines:\n  - {name: 'a/b', inputs: []}\n  - {name: x, inputs: ['no spaces']}\n  - {name: x, inputs: [t]}\n"
	path := filepath.Join(t.TempDir(), "e.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	err := config.LoadEnviron(path, EnvPrefix, nil, Defaults())
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, w := range []string{"consumer_group: must be set", `pipelines[0].name: "a/b"`, "pipelines[0].inputs: must list",
		`pipelines[1].inputs[0]: "no spaces"`, `pipelines[2].name: pipeline "x" is defined twice`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q:\n%v", w, err)
		}
	}
}

func TestEveryKeyDocumented(t *testing.T) {
	doccheck.KeysDocumented(t, Defaults(), "../../README.md", "../../../platform/README.md")
}

func TestNoPipelineIsAConfigError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.yaml")
	if err := os.WriteFile(path, []byte("topic_prefix: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := config.LoadEnviron(path, EnvPrefix, nil, Defaults())
	if err == nil || !strings.Contains(err.Error(), "pipelines: must list at least one pipeline") {
		t.Fatalf("err = %v", err)
	}
}
