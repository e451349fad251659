package ddbavro

import (
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// TestDecimal128MatchesBig checks the 128-bit decimal code against math/big on random and edge
// numbers: every number that fits decimal(38,18) encodes to the two's complement of its unscaled
// value, decodes back to itself, and every number that does not fit is refused.
func TestDecimal128MatchesBig(t *testing.T) {
	twoTo128 := new(big.Int).Lsh(big.NewInt(1), 128)
	texts := []string{"0", "-0", "1", "-1", "0.000000000000000001", "-0.000000000000000001", "0.0000000000000000001",
		"99999999999999999999.999999999999999999", "-99999999999999999999.999999999999999999", "100000000000000000000",
		"123.45", "-123.45", "1E+19", "1e-18", "18446744073709551616", "-18446744073709551615.5", "170141183460469231731.687303715884105727"}
	r := rand.New(rand.NewPCG(7, 8))
	for range 20000 {
		var b strings.Builder
		if r.IntN(2) == 0 {
			b.WriteByte('-')
		}
		b.WriteString(strconv.FormatUint(r.Uint64()>>r.IntN(64), 10))
		if r.IntN(3) > 0 {
			b.WriteByte('.')
			frac := strconv.FormatUint(r.Uint64()>>r.IntN(64), 10)
			b.WriteString(frac[:1+r.IntN(len(frac))])
		}
		if r.IntN(4) == 0 {
			b.WriteString("e" + strconv.Itoa(r.IntN(40)-20))
		}
		texts = append(texts, b.String())
	}
	for _, text := range texts {
		n, err := ParseNumber(text)
		if err != nil {
			continue
		}
		want, fits := n.DecimalAt(decimalPrecision, decimalScale)
		got, ok := n.appendDecimal128(nil)
		if ok != fits || n.fitsDecimal(decimalPrecision, decimalScale) != fits {
			t.Fatalf("%s: fits %v, appendDecimal128 %v", text, fits, ok)
		}
		if !fits {
			continue
		}
		u := new(big.Int).Set(want)
		if u.Sign() < 0 {
			u.Add(u, twoTo128)
		}
		wantBytes := u.FillBytes(make([]byte, 16))
		if string(got) != string(wantBytes) {
			t.Fatalf("%s: % x, want % x", text, got, wantBytes)
		}
		back := numberFromDecimal128(got, decimalScale)
		oracle, err := NumberFromDecimal(want, decimalScale)
		if err != nil {
			t.Fatal(err)
		}
		if back != oracle || back.String() != n.String() {
			t.Fatalf("%s: decoded %s (%+v), want %s (%+v)", text, back, back, n, oracle)
		}
	}
}

func BenchmarkDecimal128(b *testing.B) {
	n, _ := ParseNumber("-12345.678901")
	b.Run("baseline-big", func(b *testing.B) {
		for b.Loop() {
			d, _ := n.Decimal()
			_, _ = NumberFromDecimal(d, decimalScale)
		}
	})
	b.Run("u128", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = n.appendDecimal128(buf[:0])
			_ = numberFromDecimal128(buf, decimalScale)
		}
	})
}
