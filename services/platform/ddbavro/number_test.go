package ddbavro

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseNumberCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0", "0"}, {"-0", "0"}, {"0.000", "0"}, {"0e5", "0"}, {"+7", "7"}, {"007", "7"},
		{"12.50", "12.5"}, {"-12.50", "-12.5"}, {".5", "0.5"}, {"5.", "5"}, {"1E3", "1000"}, {"1e-3", "0.001"},
		{"123.456e2", "12345.6"}, {"-0.000001230", "-0.00000123"},
		{"1E+125", "1" + strings.Repeat("0", 125)},
		{"1E-130", "0." + strings.Repeat("0", 129) + "1"},
		{"9.9999999999999999999999999999999999999E+125", "99999999999999999999999999999999999999" + strings.Repeat("0", 88)},
		{"12345678901234567890123456789012345678", "12345678901234567890123456789012345678"},
		{"0.12345678901234567890123456789012345678", "0.12345678901234567890123456789012345678"},
	}
	for _, tt := range tests {
		n, err := ParseNumber(tt.in)
		if err != nil {
			t.Errorf("ParseNumber(%q): %v", tt.in, err)
			continue
		}
		if got := n.String(); got != tt.want {
			t.Errorf("ParseNumber(%q) = %s, want %s", tt.in, got, tt.want)
		}
		again, err := ParseNumber(n.String())
		if err != nil || again != n {
			t.Errorf("canonical %s does not parse back to itself: %v %v", n, again, err)
		}
	}
}

func TestParseNumberRejects(t *testing.T) {
	for _, in := range []string{"", "-", ".", "e5", "1e", "1e+", "abc", "1.2.3", "1e5.5", " 1", "1 ", "0x10", "NaN", "Infinity",
		"123456789012345678901234567890123456789", // 39 significant digits
		"1E126", "1E-131", "10E125", "0.1E-130", "1e100000"} {
		if _, err := ParseNumber(in); !errors.Is(err, ErrNumber) || !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("ParseNumber(%q) = %v, want an ErrNumber quoting the input", in, err)
		}
	}
}

func TestNumberFits(t *testing.T) {
	tests := []struct {
		in        string
		long      bool
		decimal   bool
		decString string // unscaled at scale 18
	}{
		{"0", true, true, "0"},
		{"9223372036854775807", true, true, "9223372036854775807000000000000000000"},
		{"-9223372036854775808", true, true, "-9223372036854775808000000000000000000"},
		{"9223372036854775808", false, true, "9223372036854775808000000000000000000"},
		{"12.5", false, true, "12500000000000000000"},
		{"-0.000000000000000001", false, true, "-1"},
		{"0.0000000000000000001", false, false, ""}, // 19 fractional digits
		{"99999999999999999999.999999999999999999", false, true, "99999999999999999999999999999999999999"},
		{"100000000000000000000", false, false, ""}, // 21 integer digits: does not fit, and > int64
		{"12345678901234567890", false, true, "12345678901234567890000000000000000000"},
	}
	for _, tt := range tests {
		n, err := ParseNumber(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := n.Int64(); ok != tt.long || (ok && strconv.FormatInt(v, 10) != n.String()) {
			t.Errorf("%s: Int64 = %d, %v; want fit %v", tt.in, v, ok, tt.long)
		}
		d, ok := n.Decimal()
		if ok != tt.decimal || (ok && d.String() != tt.decString) {
			t.Errorf("%s: Decimal = %v, %v; want %s, %v", tt.in, d, ok, tt.decString, tt.decimal)
		}
		if ok {
			back, err := NumberFromDecimal(d, decimalScale)
			if err != nil || back != n {
				t.Errorf("%s: decimal round trip gave %v, %v", tt.in, back, err)
			}
		}
	}
	for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1000} {
		n := NumberFromInt64(v)
		if got, ok := n.Int64(); !ok || got != v {
			t.Errorf("NumberFromInt64(%d) round trip = %d, %v", v, got, ok)
		}
	}
}

// FuzzParseNumber: any text either fails with ErrNumber or parses to a Number whose canonical text
// parses back to the same Number and has the same value as the input.
func FuzzParseNumber(f *testing.F) {
	for _, s := range []string{"0", "-12.50", "1E+125", "1e-130", "9.99e125", ".5", "123456789012345678901234567890123456789"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNumber(s)
		if err != nil {
			if !errors.Is(err, ErrNumber) {
				t.Fatalf("error does not wrap ErrNumber: %v", err)
			}
			return
		}
		c := n.String()
		again, err := ParseNumber(c)
		if err != nil || again != n {
			t.Fatalf("%q → %q → %v, %v", s, c, again, err)
		}
		in, ok1 := new(big.Rat).SetString(s)
		out, ok2 := new(big.Rat).SetString(c)
		if ok1 && ok2 && in.Cmp(out) != 0 {
			t.Fatalf("%q and its canonical %q differ in value", s, c)
		}
	})
}

// FuzzJSONString: the DynamoDB JSON writer's strings decode with encoding/json to the same text.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "ctl\x00\x01\n\r\t\x1f", "ünïcødé 漢 🙂", "</script>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // DynamoDB strings are UTF-8
		}
		var back string
		if err := json.Unmarshal(appendJSONString(nil, s), &back); err != nil || back != s {
			t.Fatalf("%q → %s → %q, %v", s, appendJSONString(nil, s), back, err)
		}
	})
}
