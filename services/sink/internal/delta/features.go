package delta

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// Table properties the sink reads or writes.
const (
	// ConfStatsColumns lists the columns whose statistics readers use (and writers collect).
	ConfStatsColumns = "delta.dataSkippingStatsColumns"
	// ConfAppendOnly forbids removing data (dataChange=true removes).
	ConfAppendOnly = "delta.appendOnly"
	// confConstraintPrefix starts the keys of CHECK constraints (writer version 3).
	confConstraintPrefix = "delta.constraints."
	// metaInvariants is the column metadata key of invariants (writer version 2).
	metaInvariants = "delta.invariants"
)

// writerVersionFeatures names what each legacy writer protocol version above 2 adds, for errors.
var writerVersionFeatures = map[int]string{
	3: "CHECK constraints",
	4: "generated columns or the change data feed",
	5: "column mapping",
	6: "identity columns",
}

// Table features (reader version 3, writer version 7) the sink reads and writes as their
// requirements say. The writer features beyond deletion vectors are those of writer version 2 and
// CHECK constraints, which the sink honours by refusing to write a table that has one
// (CheckWritable).
var (
	readerFeatures = []string{FeatureDeletionVectors}
	writerFeatures = []string{FeatureDeletionVectors, FeatureChangeDataFeed, "appendOnly", "invariants", "checkConstraints"}
)

// Table features the sink writes.
const (
	FeatureDeletionVectors = "deletionVectors"
	FeatureChangeDataFeed  = "changeDataFeed"
)

// ConfEnableCDF is the table property turning the change data feed on.
const ConfEnableCDF = "delta.enableChangeDataFeed"

// CDFEnabled reports whether writers of the table must write its change data feed.
func CDFEnabled(md *Metadata) bool {
	return md != nil && strings.EqualFold(md.Configuration[ConfEnableCDF], "true")
}

// LegacyProtocol is the protocol of the sink's tables without deletion vectors: reader 1, writer
// 2, readable by every Delta reader since 2019.
func LegacyProtocol() *Protocol { return &Protocol{MinReaderVersion: 1, MinWriterVersion: 2} }

// WithWriterFeature returns p with a writer feature added: a legacy protocol moves to writer 7,
// listing the features its writer version implied.
func (p *Protocol) WithWriterFeature(name string) *Protocol {
	c := *p
	if c.MinWriterVersion < 7 {
		c.MinWriterVersion, c.WriterFeatures = 7, []string{"appendOnly", "invariants"}
	}
	if !slices.Contains(c.WriterFeatures, name) {
		c.WriterFeatures = append(slices.Clone(c.WriterFeatures), name)
	}
	return &c
}

// HasFeature reports whether a protocol lists a table feature (reader or writer).
func (p *Protocol) HasFeature(name string) bool {
	return p != nil && (slices.Contains(p.ReaderFeatures, name) || slices.Contains(p.WriterFeatures, name))
}

// unsupported returns what of a protocol the sink lacks (nil: it reads and writes the table).
func unsupported(p *Protocol) []string {
	var needs []string
	switch {
	case p.MinReaderVersion == 2 || p.MinReaderVersion > 3:
		needs = append(needs, fmt.Sprintf("reader version %d", p.MinReaderVersion))
	case p.MinReaderVersion == 3:
		for _, f := range p.ReaderFeatures {
			if !slices.Contains(readerFeatures, f) {
				needs = append(needs, "reader feature "+f)
			}
		}
	}
	switch {
	case p.MinWriterVersion > 2 && p.MinWriterVersion < 7 || p.MinWriterVersion > 7:
		w := fmt.Sprintf("writer version %d", p.MinWriterVersion)
		if f := writerVersionFeatures[p.MinWriterVersion]; f != "" {
			w += " (" + f + ")"
		}
		needs = append(needs, w)
	case p.MinWriterVersion == 7:
		for _, f := range p.WriterFeatures {
			if !slices.Contains(writerFeatures, f) {
				needs = append(needs, "writer feature "+f)
			}
		}
	}
	return slices.Compact(needs)
}

// describeProtocol says what a protocol the sink cannot write needs, and what to do.
func describeProtocol(p *Protocol) string {
	return "the table needs " + strings.Join(unsupported(p), ", ") +
		"; ddb2delta's sink writes reader 1 / writer 2 tables, and reader 3 / writer 7 tables with the features " +
		strings.Join(writerFeatures, ", ") + ", and would ignore what the newer protocol requires of writers," +
		" so it refuses to write (an engine that upgraded the table, e.g. by enabling a feature, must not be followed by this sink)"
}

// CheckWritable returns an error wrapping ErrUnsupported, naming the property or column, when
// the sink cannot write the table as its protocol requires: an invariant on a column (which the
// sink would have to evaluate on every row), a CHECK constraint, or, for a writer that removes
// data (a mirror), delta.appendOnly.
func CheckWritable(snap *Snapshot, removesData bool) error {
	if snap.Metadata == nil {
		return nil
	}
	conf := snap.Metadata.Configuration
	if removesData && strings.EqualFold(conf[ConfAppendOnly], "true") {
		return fmt.Errorf("%w: the table is append-only (%s=true), and a mirror updates and deletes rows: write it as a changelog, or unset the property",
			ErrUnsupported, ConfAppendOnly)
	}
	for k := range conf {
		if strings.HasPrefix(k, confConstraintPrefix) {
			return fmt.Errorf("%w: the table has the CHECK constraint %s, which the sink does not evaluate: drop it or write another table",
				ErrUnsupported, strings.TrimPrefix(k, confConstraintPrefix))
		}
	}
	schema, err := snap.Schema()
	if err != nil {
		return err
	}
	if col := withInvariant(schema, ""); col != "" {
		return fmt.Errorf("%w: column %s has an invariant (%s), which the sink does not evaluate", ErrUnsupported, col, metaInvariants)
	}
	return nil
}

// withInvariant returns the first column (dotted path) under s that carries an invariant.
func withInvariant(s *deltatype.StructType, prefix string) string {
	if s == nil {
		return ""
	}
	for _, f := range s.Fields {
		if _, ok := f.Metadata[metaInvariants]; ok {
			return prefix + f.Name
		}
		if f.Type.Struct != nil {
			if c := withInvariant(f.Type.Struct, prefix+f.Name+"."); c != "" {
				return c
			}
		}
	}
	return ""
}

// QuoteColumn renders a column name for a Delta column list property: backticks unless the name
// is plain letters, digits and underscores.
func QuoteColumn(name string) string {
	plain := name != ""
	for _, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			plain = false
		}
	}
	if plain {
		return name
	}
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// Retention properties of a table (Delta's names and defaults).
const (
	ConfDeletedFileRetention = "delta.deletedFileRetentionDuration"
	ConfLogRetention         = "delta.logRetentionDuration"
	ConfExpiredLogCleanup    = "delta.enableExpiredLogCleanup"

	DefaultDeletedFileRetention = 7 * 24 * time.Hour
	DefaultLogRetention         = 30 * 24 * time.Hour
)

// ParseInterval parses a Delta interval property: "interval 7 days", "interval 1 week",
// "168 hours", "interval 30 minutes" (the word "interval" optional; units in singular or plural,
// from nanoseconds to weeks).
func ParseInterval(s string) (time.Duration, error) {
	f := strings.Fields(strings.ToLower(strings.TrimSpace(s)))
	if len(f) > 0 && f[0] == "interval" {
		f = f[1:]
	}
	if len(f) != 2 {
		return 0, fmt.Errorf("interval %q is not \"interval <n> <unit>\"", s)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("interval %q: %q is not a whole number", s, f[0])
	}
	units := map[string]time.Duration{"nanosecond": time.Nanosecond, "microsecond": time.Microsecond, "millisecond": time.Millisecond,
		"second": time.Second, "minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour, "week": 7 * 24 * time.Hour}
	u, ok := units[strings.TrimSuffix(f[1], "s")]
	if !ok {
		return 0, fmt.Errorf("interval %q: unknown unit %q", s, f[1])
	}
	return time.Duration(n) * u, nil
}

// IntervalProperty returns a table's interval property, or def when the table does not set it.
func IntervalProperty(md *Metadata, key string, def time.Duration) (time.Duration, error) {
	if md == nil || md.Configuration[key] == "" {
		return def, nil
	}
	d, err := ParseInterval(md.Configuration[key])
	if err != nil {
		return 0, fmt.Errorf("table property %s: %w", key, err)
	}
	return d, nil
}
