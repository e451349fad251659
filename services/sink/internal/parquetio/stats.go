package parquetio

import (
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// Stats are a data file's statistics, as Delta's add action holds them (JSON): the row count
// and, per top-level primitive column, the least and greatest value and the null count.
type Stats struct {
	NumRecords int64          `json:"numRecords"`
	MinValues  map[string]any `json:"minValues"`
	MaxValues  map[string]any `json:"maxValues"`
	NullCount  map[string]any `json:"nullCount"`

	types map[string]string
}

// StatsPrefix is the number of characters of a string kept in statistics: a longer minimum is
// cut to this prefix (still a lower bound); a longer maximum is cut and followed by U+10FFFF, the
// greatest code point, so that it stays an upper bound in UTF-8 byte order (Delta's rule; Spark
// cuts at 32 characters). Keys and ids are rarely longer, so their bounds stay exact.
const StatsPrefix = 64

// StatsColumn reports whether the sink writes min/max statistics for a top-level column of type
// t: strings, integers, decimals, dates and timestamps.
func StatsColumn(t deltatype.DataType) bool {
	switch t.Primitive {
	case "", "binary", "boolean":
		return false
	}
	return true
}

func newStats(s *deltatype.StructType, exclude []string) *Stats {
	st := &Stats{MinValues: map[string]any{}, MaxValues: map[string]any{}, NullCount: map[string]any{},
		types: map[string]string{}}
	for _, f := range s.Fields {
		if slices.Contains(exclude, f.Name) || !StatsColumn(f.Type) {
			continue
		}
		st.types[f.Name] = f.Type.Primitive
		st.NullCount[f.Name] = int64(0)
	}
	return st
}

func (s *Stats) add(r Row) {
	s.NumRecords++
	for c := range s.types {
		v := r[c]
		if v == nil {
			s.NullCount[c] = s.NullCount[c].(int64) + 1
			continue
		}
		if s.MinValues[c] == nil || less(v, s.MinValues[c]) {
			s.MinValues[c] = v
		}
		if s.MaxValues[c] == nil || less(s.MaxValues[c], v) {
			s.MaxValues[c] = v
		}
	}
}

func less(a, b any) bool {
	switch x := a.(type) {
	case string:
		return x < b.(string)
	case int64:
		return x < b.(int64)
	case int32:
		return x < b.(int32)
	case time.Time:
		return x.Before(b.(time.Time))
	case *big.Int:
		return x.Cmp(b.(*big.Int)) < 0
	case float64:
		return x < b.(float64)
	}
	return false
}

// JSON renders the statistics for an add action. Timestamps are bounded to the millisecond (the
// maximum rounded up) and decimals written as numbers, as Delta readers expect.
func (s *Stats) JSON() string {
	out := struct {
		NumRecords int64          `json:"numRecords"`
		MinValues  map[string]any `json:"minValues"`
		MaxValues  map[string]any `json:"maxValues"`
		NullCount  map[string]any `json:"nullCount"`
	}{s.NumRecords, map[string]any{}, map[string]any{}, s.NullCount}
	for c := range s.MinValues {
		out.MinValues[c] = statValue(s.types[c], s.MinValues[c], false)
		out.MaxValues[c] = statValue(s.types[c], s.MaxValues[c], true)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func statValue(typ string, v any, upper bool) any {
	switch x := v.(type) {
	case time.Time:
		if typ == "date" {
			return x.UTC().Format("2006-01-02")
		}
		t := x.UTC().Truncate(time.Millisecond)
		if upper && t.Before(x) {
			t = t.Add(time.Millisecond)
		}
		return t.Format("2006-01-02T15:04:05.000Z")
	case *big.Int:
		_, scale, _ := deltatype.DecimalParams(deltatype.DataType{Primitive: typ})
		return json.Number(decimalText(x, scale))
	case string:
		if upper {
			return truncateMax(x, StatsPrefix)
		}
		return truncateMin(x, StatsPrefix)
	}
	return v
}

// truncateMin cuts s to its first n characters: a lower bound of s.
func truncateMin(s string, n int) string {
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// truncateMax returns an upper bound of s of about n characters: its first n characters, more
// while the next one is U+10FFFF itself, then U+10FFFF. Any string with that prefix is below it
// in UTF-8 byte order, since the character that follows the prefix is below U+10FFFF.
func truncateMax(s string, n int) string {
	const top = "\U0010FFFF"
	i := 0
	for j, r := range s {
		if i >= n && r != 0x10FFFF {
			return s[:j] + top
		}
		i++
	}
	return s
}

// decimalText renders unscaled × 10^-scale in plain decimal notation.
func decimalText(d *big.Int, scale int) string {
	neg := d.Sign() < 0
	digits := new(big.Int).Abs(d).String()
	for len(digits) <= scale {
		digits = "0" + digits
	}
	s := digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if neg {
		s = "-" + s
	}
	return s
}
