package parquetio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

func field(name string, t deltatype.DataType) deltatype.StructField {
	return deltatype.StructField{Name: name, Type: t, Nullable: true}
}

var testSchema = &deltatype.StructType{Fields: []deltatype.StructField{
	field("_key", deltatype.String), field("n", deltatype.Long), field("p", deltatype.Integer), field("ok", deltatype.Boolean),
	field("raw", deltatype.Binary), field("price", deltatype.Decimal38), field("at", deltatype.Timestamp), field("day", deltatype.Date),
	field("tags", deltatype.ArrayOf(deltatype.String)), field("blobs", deltatype.ArrayOf(deltatype.Binary)),
	field("address", deltatype.StructOf(field("city", deltatype.String), field("geo", deltatype.StructOf(field("lat", deltatype.Decimal38))))),
	field("conf", deltatype.DataType{Map: &deltatype.MapType{Key: deltatype.String, Value: deltatype.String, ValueContainsNull: true}}),
	field("_date", deltatype.Date),
}}

func dec(s string) *big.Int {
	d, _ := new(big.Int).SetString(s, 10)
	return d
}

func TestRoundTripEveryType(t *testing.T) {
	at := time.Date(2026, 11, 25, 5, 6, 7, 123456000, time.UTC)
	rows := []Row{
		{"_key": "b", "n": int64(-9), "p": int32(3), "ok": true, "raw": []byte{0, 255}, "price": dec("-1500000000000000000"),
			"at": at, "day": time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), "tags": []any{"x", nil, "y"}, "blobs": []any{[]byte{1}},
			"address": map[string]any{"city": "Lyon", "geo": map[string]any{"lat": dec("45750000000000000000")}},
			"conf":    map[string]string{"a": "1", "b": ""}, "_date": time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)},
		{"_key": "a", "tags": []any{}, "address": map[string]any{}, "price": dec("99999999999999999999999999999999999999")},
		{"_key": "c", "address": map[string]any{"geo": map[string]any{}}, "conf": map[string]string{}},
	}
	data, stats, err := Write(testSchema, []string{"_date"}, rows, Options{})
	if err != nil {
		t.Fatal(err)
	}
	back, err := Read(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		want := Row{}
		for k, v := range rows[i] {
			if k != "_date" {
				want[k] = v
			}
		}
		if !reflect.DeepEqual(back[i], want) {
			t.Errorf("row %d:\n got %#v\nwant %#v", i, back[i], want)
		}
	}
	var js map[string]any
	if err := json.Unmarshal([]byte(stats.JSON()), &js); err != nil {
		t.Fatal(err)
	}
	if js["numRecords"] != 3.0 || js["minValues"].(map[string]any)["_key"] != "a" || js["maxValues"].(map[string]any)["_key"] != "c" ||
		js["nullCount"].(map[string]any)["n"] != 2.0 || js["maxValues"].(map[string]any)["at"] != "2026-11-25T05:06:07.124Z" ||
		js["minValues"].(map[string]any)["at"] != "2026-11-25T05:06:07.123Z" || js["minValues"].(map[string]any)["price"] != -1.5 {
		t.Fatalf("stats %s", stats.JSON())
	}
	if _, ok := js["nullCount"].(map[string]any)["_date"]; ok {
		t.Fatal("stats cover the partition column")
	}
	// Projection reads one column.
	keys, err := Read(data, []string{"_key"})
	if err != nil || len(keys) != 3 || !reflect.DeepEqual(keys[1], Row{"_key": "a"}) {
		t.Fatalf("projection: %v %v", keys, err)
	}
}

func TestOlderFilesReadUnderTheirOwnSchema(t *testing.T) {
	narrow := &deltatype.StructType{Fields: testSchema.Fields[:2]}
	data, _, err := Write(narrow, nil, []Row{{"_key": "k", "n": int64(1)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	back, err := Read(data, nil)
	if err != nil || !reflect.DeepEqual(back, []Row{{"_key": "k", "n": int64(1)}}) {
		t.Fatalf("%v %v", back, err)
	}
}

func TestWrongValuesAreErrorsNotCorruptFiles(t *testing.T) {
	for _, r := range []Row{
		{"n": "5"}, {"price": 1.5}, {"at": "2026-01-01"}, {"tags": []string{"x"}}, {"address": map[string]any{"zip": "1"}},
		{"price": new(big.Int).Lsh(big.NewInt(1), 130)},
	} {
		if _, _, err := Write(testSchema, nil, []Row{r}, Options{}); err == nil || !strings.Contains(err.Error(), "row 0") {
			t.Errorf("row %v: %v", r, err)
		}
	}
}

func TestDecimalBytes(t *testing.T) {
	for _, s := range []string{"0", "1", "-1", "-170141183460469231731687303715884105728", "170141183460469231731687303715884105727"} {
		b, err := decimalBytes(dec(s))
		if err != nil {
			t.Fatal(err)
		}
		if got := decimalFromBytes(b); got.String() != s {
			t.Errorf("%s → %x → %s", s, b, got)
		}
	}
	if got := decimalText(dec("-1500000000000000000"), 18); got != "-1.5" {
		t.Errorf("decimalText = %s", got)
	}
	if got := decimalText(dec("5"), 18); got != "0.000000000000000005" {
		t.Errorf("decimalText = %s", got)
	}
}

// Spark's vectorized reader (3.5) reads DELTA_LENGTH_BYTE_ARRAY pages written by parquet-go as
// empty strings: byte arrays must be PLAIN (or dictionary) encoded.
func TestByteArraysArePlain(t *testing.T) {
	data, _, err := Write(testSchema, nil, []Row{{"_key": "k", "raw": []byte{1}, "tags": []any{"x"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, rg := range f.Metadata().RowGroups {
		for _, c := range rg.Columns {
			for _, e := range c.MetaData.Encoding {
				if e == format.DeltaLengthByteArray || e == format.DeltaByteArray {
					t.Errorf("column %v uses %s", c.MetaData.PathInSchema, e)
				}
			}
		}
	}
}

// TestNoColumnIndexes: parquet-go writes a malformed column index for pages without bounds (a
// decimal column, an all-null page), which Spark and delta-rs reject when a query filters on the
// column. The files the sink writes carry no column index at all, and still read back.
func TestNoColumnIndexes(t *testing.T) {
	rows := []Row{{"_key": "a", "price": dec("-1500000000000000000")}, {"_key": "b"}, {"_key": "c", "price": dec("2")}}
	data, _, err := Write(testSchema, []string{"_date"}, rows, Options{RowGroupRows: 2})
	if err != nil {
		t.Fatal(err)
	}
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	md := f.Metadata()
	if len(md.RowGroups) != 2 {
		t.Fatalf("%d row groups, want 2", len(md.RowGroups))
	}
	for _, rg := range md.RowGroups {
		for _, c := range rg.Columns {
			if c.ColumnIndexOffset != 0 || c.ColumnIndexLength != 0 {
				t.Fatalf("column %v has a column index", c.MetaData.PathInSchema)
			}
			if c.OffsetIndexOffset == 0 {
				t.Fatalf("column %v lost its offset index", c.MetaData.PathInSchema)
			}
		}
	}
	back, err := Read(data, []string{"_key", "price"})
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 3 || back[0]["price"].(*big.Int).Cmp(dec("-1500000000000000000")) != 0 || back[1]["price"] != nil {
		t.Fatalf("read back %v", back)
	}
}

// TestStringBoundsAreBounds: statistics of long strings are cut to a prefix, and stay bounds in
// UTF-8 byte order (the order Delta readers compare in), whatever follows the prefix.
func TestStringBoundsAreBounds(t *testing.T) {
	long := strings.Repeat("é", StatsPrefix)
	for _, s := range []string{"", "short", long, long + "a", long + "\U0010FFFF", long + "\U0010FFFF\U0010FFFFz", long + "🚀 more", strings.Repeat("x", 300)} {
		lo, hi := truncateMin(s, StatsPrefix), truncateMax(s, StatsPrefix)
		if lo > s || hi < s {
			t.Errorf("%q: bounds [%q, %q] do not hold it", s, lo, hi)
		}
		if n := len([]rune(lo)); n > StatsPrefix {
			t.Errorf("%q: min has %d characters", s, n)
		}
		if len([]rune(s)) <= StatsPrefix && (lo != s || hi != s) {
			t.Errorf("%q: a short string's bounds are [%q, %q], want itself", s, lo, hi)
		}
		// Any longer string with the same prefix is still within the bounds.
		if len([]rune(s)) > StatsPrefix {
			for _, tail := range []string{"\x00", "zzz", "\uFFFD", "\U0010FFFE"} {
				if o := string([]rune(s)[:StatsPrefix]) + tail; o > hi {
					t.Errorf("%q: %q is above the max %q", s, o, hi)
				}
			}
		}
	}
}

// Copy carries rows of a file of the same schema over as Parquet values and of an older schema
// by decoding them; either way the rows and the statistics are those of writing them anew.
func TestCopyRows(t *testing.T) {
	s := &deltatype.StructType{Fields: []deltatype.StructField{field("_key", deltatype.String), field("n", deltatype.Long),
		field("tags", deltatype.ArrayOf(deltatype.String)), field("when", deltatype.Timestamp)}}
	var rows []Row
	for i := range 1000 {
		r := Row{"_key": fmt.Sprintf("k%04d", i), "n": int64(i * 7), "when": time.UnixMilli(1795500000000 + int64(i)).UTC()}
		if i%3 == 0 {
			r["tags"] = []any{"a", fmt.Sprint(i)}
		}
		if i%11 == 0 {
			delete(r, "n")
		}
		rows = append(rows, r)
	}
	src, _, err := Write(s, nil, rows, Options{})
	if err != nil {
		t.Fatal(err)
	}
	older := &deltatype.StructType{Fields: s.Fields[:2]}
	var narrow []Row
	for _, r := range rows {
		narrow = append(narrow, Row{"_key": r["_key"], "n": r["n"]})
	}
	oldSrc, _, err := Write(older, nil, narrow, Options{})
	if err != nil {
		t.Fatal(err)
	}
	keep := func(pos int) bool { return pos%4 != 1 }
	var want []Row
	var wantOld []Row
	for i, r := range rows {
		if keep(i) {
			want = append(want, r)
			wantOld = append(wantOld, Row{"_key": r["_key"], "n": r["n"]})
		}
	}
	for _, c := range []struct {
		name string
		src  []byte
		want []Row
	}{{"same schema", src, want}, {"older schema", oldSrc, wantOld}} {
		fw, err := NewFileWriter(s, nil, Options{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		n, err := fw.Copy(c.src, keep)
		if err != nil || n != len(c.want) {
			t.Fatalf("%s: copied %d, %v", c.name, n, err)
		}
		if err := fw.Add(Row{"_key": "z", "n": int64(-1)}); err != nil {
			t.Fatal(err)
		}
		data, st, err := fw.Finish()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadData(data)
		if err != nil {
			t.Fatal(err)
		}
		all := append(slices.Clone(c.want), Row{"_key": "z", "n": int64(-1)})
		for i := range all {
			for k, v := range all[i] {
				if v == nil {
					delete(all[i], k)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(all) {
			t.Fatalf("%s: rows differ", c.name)
		}
		_, fresh, _ := Write(s, nil, all, Options{})
		if st.JSON() != fresh.JSON() {
			t.Fatalf("%s: statistics\n%s\nwant\n%s", c.name, st.JSON(), fresh.JSON())
		}
	}
}
