// Package doccheck is a test helper: it fails a test when a config key is not documented.
package doccheck

import (
	"os"
	"strings"
	"testing"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
)

// KeysDocumented fails t for every key of cfg that appears, in backquotes, in none of the given
// Markdown files.
func KeysDocumented(t *testing.T, cfg any, docs ...string) {
	t.Helper()
	var text strings.Builder
	for _, d := range docs {
		raw, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		text.Write(raw)
	}
	for _, k := range config.Keys(cfg) {
		if !strings.Contains(text.String(), "`"+k+"`") {
			t.Errorf("config key %s is not documented in %v", k, docs)
		}
	}
}
