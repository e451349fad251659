//go:build integration

package monitoring

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPromtool runs Prometheus' own checks on the rules and their unit tests: the rule file
// loads, and each alert of alerts.yml fires and stays quiet as alerts_test.yml expects. It also
// checks docker-compose's prometheus.yml, which loads the rules. promtool ships with Debian's
// prometheus package, which the native stack installs (scripts/stack install).
func TestPromtool(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not on PATH (Debian's prometheus package has it; `scripts/stack install` installs it): %v", err)
	}
	root := repoRoot(t)
	for _, args := range [][]string{
		{"check", "rules", alertsFile},
		{"test", "rules", alertTestsFile},
		{"check", "config", prometheusFile},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if !strings.Contains(string(out), "SUCCESS") {
				t.Fatalf("promtool %s did not report SUCCESS:\n%s", strings.Join(args, " "), out)
			}
		})
	}
}
