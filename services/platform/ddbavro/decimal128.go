package ddbavro

import (
	"encoding/binary"
	"math/bits"
)

// The typed encoding's decimal(38,18) values are 16-byte two's-complement integers. Encoding and
// decoding them through math/big allocated several times per number and was a tenth of the
// producer's CPU; 38 digits fit 127 bits, so plain 128-bit arithmetic does the same exactly.

// u128 is an unsigned 128-bit integer.
type u128 struct{ hi, lo uint64 }

// mulAdd returns u×m + a; the callers stay below 10^38, so it never overflows.
func (u u128) mulAdd(m, a uint64) u128 {
	hi, lo := bits.Mul64(u.lo, m)
	hi += u.hi * m
	lo, carry := bits.Add64(lo, a, 0)
	return u128{hi + carry, lo}
}

// neg is the two's complement.
func (u u128) neg() u128 {
	lo, borrow := bits.Sub64(0, u.lo, 0)
	hi, _ := bits.Sub64(0, u.hi, borrow)
	return u128{hi, lo}
}

// fitsDecimal reports whether n fits decimal(precision, scale) exactly: at most scale digits
// after the point and precision-scale before it.
func (n Number) fitsDecimal(precision, scale int) bool {
	shift := n.exp + scale
	return n.digits == "" || (shift >= 0 && len(n.digits)+shift <= precision)
}

// appendDecimal128 writes n's unscaled value at scale 18 as the 16-byte fixed; ok is false when n
// does not fit decimal(38,18).
func (n Number) appendDecimal128(b []byte) ([]byte, bool) {
	if !n.fitsDecimal(decimalPrecision, decimalScale) {
		return b, false
	}
	var u u128
	for i := 0; i < len(n.digits); i++ {
		u = u.mulAdd(10, uint64(n.digits[i]-'0'))
	}
	if n.digits != "" {
		for shift := n.exp + decimalScale; shift > 0; {
			step := min(shift, 19)
			u = u.mulAdd(pow10[step], 0)
			shift -= step
		}
	}
	if n.neg {
		u = u.neg()
	}
	b = binary.BigEndian.AppendUint64(b, u.hi)
	return binary.BigEndian.AppendUint64(b, u.lo), true
}

var pow10 = func() [20]uint64 {
	var p [20]uint64
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// numberFromDecimal128 reads a 16-byte fixed as the Number unscaled × 10^-scale.
func numberFromDecimal128(raw []byte, scale int) Number {
	u := u128{binary.BigEndian.Uint64(raw[:8]), binary.BigEndian.Uint64(raw[8:16])}
	var n Number
	if u.hi>>63 == 1 {
		n.neg = true
		u = u.neg()
	}
	// Decimal digits, least significant first, 19 at a time.
	var buf [40]byte
	i := len(buf)
	for u.hi != 0 || u.lo != 0 {
		var rem uint64
		u.hi, rem = bits.Div64(0, u.hi, pow10[19])
		u.lo, rem = bits.Div64(rem, u.lo, pow10[19])
		for k := 0; k < 19 && i > 0; k++ {
			i--
			buf[i] = byte('0' + rem%10)
			rem /= 10
		}
	}
	digits := buf[i:]
	for len(digits) > 0 && digits[0] == '0' {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return Number{}
	}
	exp := -scale
	for digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	n.digits, n.exp = string(digits), exp
	return n
}
