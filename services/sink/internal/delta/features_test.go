package delta

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

func TestCheckWritableNamesWhatTheSinkCannotHonour(t *testing.T) {
	schema := func(meta map[string]any) string {
		s := &deltatype.StructType{Fields: []deltatype.StructField{{Name: "a", Type: deltatype.StructOf(
			deltatype.StructField{Name: "b", Type: deltatype.Long, Nullable: true, Metadata: meta}), Nullable: true}}}
		b, _ := s.MarshalJSON()
		return string(b)
	}
	snap := func(conf map[string]string, meta map[string]any) *Snapshot {
		s := Empty()
		s.Metadata = &Metadata{SchemaString: schema(meta), Configuration: conf}
		return s
	}
	for _, c := range []struct {
		name    string
		snap    *Snapshot
		removes bool
		want    string // "" = writable
	}{
		{"plain", snap(nil, nil), true, ""},
		{"append-only changelog", snap(map[string]string{"delta.appendOnly": "true"}, nil), false, ""},
		{"append-only mirror", snap(map[string]string{"delta.appendOnly": "true"}, nil), true, "delta.appendOnly"},
		{"check constraint", snap(map[string]string{"delta.constraints.positive": "a.b > 0"}, nil), false, "CHECK constraint positive"},
		{"invariant", snap(nil, map[string]any{"delta.invariants": `{"expression":{"expression":"a.b > 0"}}`}), false, "column a.b has an invariant"},
	} {
		err := CheckWritable(c.snap, c.removes)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (!errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want ErrUnsupported naming %q", c.name, err, c.want)
		}
	}
	// A protocol upgraded by another engine is refused, naming what it needs; deletion vectors and
	// CHECK constraints (refused only when one is defined) are not among that.
	err := Empty().apply(3, []Action{{Protocol: &Protocol{MinReaderVersion: 3, MinWriterVersion: 7,
		ReaderFeatures: []string{"deletionVectors", "columnMapping"}, WriterFeatures: []string{"deletionVectors", "checkConstraints", "columnMapping", "rowTracking"}}}})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "reader feature columnMapping, writer feature columnMapping, writer feature rowTracking;") {
		t.Errorf("protocol 3/7: %v", err)
	}
	for _, p := range []*Protocol{{MinReaderVersion: 2, MinWriterVersion: 5}, {MinReaderVersion: 1, MinWriterVersion: 4}} {
		if err := Empty().apply(3, []Action{{Protocol: p}}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("protocol %d/%d: %v", p.MinReaderVersion, p.MinWriterVersion, err)
		}
	}
	if err := Empty().apply(3, []Action{{Protocol: &Protocol{MinReaderVersion: 3, MinWriterVersion: 7,
		ReaderFeatures: []string{"deletionVectors"}, WriterFeatures: []string{"deletionVectors", "checkConstraints", "appendOnly", "invariants"}}}}); err != nil {
		t.Errorf("a deletion-vector table: %v", err)
	}
}

func TestEncodeCommitAlwaysHasPartitionValues(t *testing.T) {
	b, err := EncodeCommit([]Action{{Add: &Add{Path: "a"}}, {Remove: &Remove{Path: "b", ExtendedFileMetadata: true}}})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, l := range lines {
		if !strings.Contains(l, `"partitionValues":{}`) {
			t.Errorf("%s: no partitionValues", l)
		}
	}
}

func TestParseInterval(t *testing.T) {
	for in, want := range map[string]time.Duration{"interval 7 days": 7 * 24 * time.Hour, "interval 1 week": 7 * 24 * time.Hour,
		"168 hours": 168 * time.Hour, "INTERVAL 30 minutes": 30 * time.Minute, "interval 1 hour": time.Hour} {
		if got, err := ParseInterval(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "interval", "7 days ago", "interval seven days", "interval 3 fortnights", "interval -1 day"} {
		if _, err := ParseInterval(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
