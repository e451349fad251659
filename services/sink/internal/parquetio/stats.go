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
	long  map[string]bool // columns with a string too long to bound: no min/max
}

// maxStatString is the longest string kept in statistics; columns with longer values get none.
const maxStatString = 128

func newStats(s *deltatype.StructType, exclude []string) *Stats {
	st := &Stats{MinValues: map[string]any{}, MaxValues: map[string]any{}, NullCount: map[string]any{},
		types: map[string]string{}, long: map[string]bool{}}
	for _, f := range s.Fields {
		if slices.Contains(exclude, f.Name) || f.Type.Primitive == "" || f.Type.Primitive == "binary" || f.Type.Primitive == "boolean" {
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
		if str, ok := v.(string); ok && len(str) > maxStatString {
			s.long[c] = true
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
		if s.long[c] {
			continue
		}
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
		return json.Number(decimalText(x, 18))
	}
	return v
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
