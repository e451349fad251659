package stacktest

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ForeignConsume reads n records of topic the way any team would, with no ddb2delta code:
// scripts/python/avro_consume.py, confluent-kafka's registry-aware AvroDeserializer in the stack's
// Python. It returns each record as {"key": …, "value": …} (JSON numbers as json.Number), and
// fails t unless exactly n arrive within two minutes. extra is passed to the script (e.g.
// --reader-schema FILE).
func (s *Stack) ForeignConsume(t testing.TB, topic string, n int, extra ...string) []map[string]any {
	t.Helper()
	args := append([]string{filepath.Join(s.Root, "scripts", "python", "avro_consume.py"),
		"--bootstrap", s.KafkaAddr, "--registry", s.RegistryURL, "--topic", topic, "--count", fmt.Sprint(n), "--timeout", "120"}, extra...)
	cmd := exec.Command(s.DeltaPython, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("avro_consume.py: %v\n%s", err, stderr.String())
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r map[string]any
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&r); err != nil {
			t.Fatalf("consumer printed %q: %v", line, err)
		}
		delete(r, "offset")
		recs = append(recs, r)
	}
	if len(recs) != n {
		t.Fatalf("consumer printed %d records, want %d", len(recs), n)
	}
	return recs
}
