package ddbavro

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// DynamoDB's number limits: 38 significant digits; magnitudes from 1E-130 to
// 9.9999999999999999999999999999999999999E+125.
const (
	maxDigits   = 38
	minExponent = -130 // of the leading digit
	maxExponent = 125  // of the leading digit
)

// The typed encoding's decimal branch: decimal(38, 18), as Spark uses for unbounded decimals.
const (
	decimalPrecision = 38
	decimalScale     = 18
	decimalSize      = 16 // bytes of the fixed: 10^38 < 2^127
)

// ErrNumber is wrapped by every error about a malformed or out-of-range DynamoDB number.
var ErrNumber = errors.New("invalid DynamoDB number")

// Number is a DynamoDB number held exactly: value = (-1)^neg × digits × 10^exp, where digits has
// no leading or trailing zeros ("" is zero). Equal numbers have equal Numbers, so String gives one
// canonical text per value.
type Number struct {
	neg    bool
	digits string
	exp    int
}

// smallInt parses the common case, a plain integer of at most 18 digits, without allocating; ok is
// false for anything else (which ParseNumber then handles).
func smallInt(s string) (int64, bool) {
	digits := s
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 18 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	var v int64
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if s[0] == '-' {
		v = -v
	}
	return v, true
}

// ParseNumber parses DynamoDB number text ("-12.50", "1E+125", "0.000") and checks DynamoDB's
// limits. The error wraps ErrNumber and quotes the input.
func ParseNumber(s string) (Number, error) {
	bad := func(why string) (Number, error) { return Number{}, fmt.Errorf("%w %q: %s", ErrNumber, s, why) }
	in := s
	var n Number
	if in != "" && (in[0] == '-' || in[0] == '+') {
		n.neg = in[0] == '-'
		in = in[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(in), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" {
		return bad("no digits")
	}
	if !allDigits(intPart) || !allDigits(frac) {
		return bad("not a decimal number")
	}
	if hasExp {
		e, err := strconv.Atoi(expPart)
		if err != nil || expPart == "" || expPart[0] == ' ' {
			return bad("bad exponent")
		}
		if e > 10000 || e < -10000 {
			return bad("exponent out of range")
		}
		n.exp = e
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	n.exp -= len(frac)
	trimmed := strings.TrimRight(digits, "0")
	n.exp += len(digits) - len(trimmed)
	n.digits = trimmed
	if n.digits == "" {
		return Number{}, nil // zero, whatever its sign or exponent
	}
	if len(n.digits) > maxDigits {
		return bad(fmt.Sprintf("%d significant digits, DynamoDB allows %d", len(n.digits), maxDigits))
	}
	if lead := n.exp + len(n.digits) - 1; lead < minExponent || lead > maxExponent {
		return bad("magnitude outside DynamoDB's range 1E-130 to 9.99…E+125")
	}
	return n, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String is the canonical text: plain decimal notation, no exponent, no leading '+', no leading or
// trailing zeros beyond the one before a decimal point.
func (n Number) String() string {
	if n.digits == "" {
		return "0"
	}
	var b strings.Builder
	if n.neg {
		b.WriteByte('-')
	}
	switch {
	case n.exp >= 0:
		b.WriteString(n.digits)
		b.WriteString(strings.Repeat("0", n.exp))
	case len(n.digits) > -n.exp:
		cut := len(n.digits) + n.exp
		b.WriteString(n.digits[:cut])
		b.WriteByte('.')
		b.WriteString(n.digits[cut:])
	default:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -n.exp-len(n.digits)))
		b.WriteString(n.digits)
	}
	return b.String()
}

// Int64 returns n when it is an integer within int64.
func (n Number) Int64() (int64, bool) {
	if n.digits == "" {
		return 0, true
	}
	if n.exp < 0 || len(n.digits)+n.exp > 19 {
		return 0, false
	}
	u, err := strconv.ParseUint(n.digits+strings.Repeat("0", n.exp), 10, 64)
	if err != nil {
		return 0, false
	}
	switch {
	case !n.neg && u <= math.MaxInt64:
		return int64(u), true
	case n.neg && u <= 1<<63:
		return int64(-u), true //nolint:gosec // -(1<<63) wraps to MinInt64 exactly
	}
	return 0, false
}

// Decimal returns n's unscaled value at scale 18 when n fits decimal(38, 18) exactly.
func (n Number) Decimal() (*big.Int, bool) { return n.DecimalAt(decimalPrecision, decimalScale) }

// DecimalAt returns n's unscaled value at scale when n fits decimal(precision, scale) exactly: at
// most scale digits after the point and precision-scale before it.
func (n Number) DecimalAt(precision, scale int) (*big.Int, bool) {
	if n.digits == "" {
		return new(big.Int), true
	}
	shift := n.exp + scale
	if shift < 0 || len(n.digits)+shift > precision {
		return nil, false
	}
	u, ok := new(big.Int).SetString(n.digits+strings.Repeat("0", shift), 10)
	if !ok {
		return nil, false
	}
	if n.neg {
		u.Neg(u)
	}
	return u, true
}

// NumberFromInt64 returns v as a Number.
func NumberFromInt64(v int64) Number {
	n, _ := ParseNumber(strconv.FormatInt(v, 10)) // always valid: 19 digits at most
	return n
}

// NumberFromDecimal returns unscaled × 10^-scale as a Number.
func NumberFromDecimal(unscaled *big.Int, scale int) (Number, error) {
	return ParseNumber(unscaled.String() + "e" + strconv.Itoa(-scale))
}

// CanonicalNumber returns the canonical text of a DynamoDB number.
func CanonicalNumber(s string) (string, error) {
	n, err := ParseNumber(s)
	if err != nil {
		return "", err
	}
	return n.String(), nil
}

// CanonicalItem returns item with every number, at any depth, in canonical text: the form both
// encodings decode to. Comparing a DynamoDB item with a decoded one goes through it.
func CanonicalItem(item map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
	if item == nil {
		return nil, nil
	}
	out := make(map[string]types.AttributeValue, len(item))
	for k, v := range item {
		c, err := canonicalValue(v)
		if err != nil {
			return nil, inAttr(k, err)
		}
		out[k] = c
	}
	return out, nil
}

func canonicalValue(v types.AttributeValue) (types.AttributeValue, error) {
	switch v := v.(type) {
	case *types.AttributeValueMemberN:
		n, err := ParseNumber(v.Value)
		if err != nil {
			return nil, err
		}
		return &types.AttributeValueMemberN{Value: n.String()}, nil
	case *types.AttributeValueMemberNS:
		out := make([]string, len(v.Value))
		for i, s := range v.Value {
			n, err := ParseNumber(s)
			if err != nil {
				return nil, inAttr("["+strconv.Itoa(i)+"]", err)
			}
			out[i] = n.String()
		}
		return &types.AttributeValueMemberNS{Value: out}, nil
	case *types.AttributeValueMemberL:
		out := make([]types.AttributeValue, len(v.Value))
		for i, x := range v.Value {
			c, err := canonicalValue(x)
			if err != nil {
				return nil, inAttr("["+strconv.Itoa(i)+"]", err)
			}
			out[i] = c
		}
		return &types.AttributeValueMemberL{Value: out}, nil
	case *types.AttributeValueMemberM:
		m, err := CanonicalItem(v.Value)
		if err != nil {
			return nil, inAttr(".", err)
		}
		return &types.AttributeValueMemberM{Value: m}, nil
	}
	return v, nil
}
