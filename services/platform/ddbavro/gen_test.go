package ddbavro

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// itemGen makes random DynamoDB items covering the whole type system.
type itemGen struct{ r *rand.Rand }

var nameRunes = []rune("abcXYZ_09-. :/é漢🙂$")

func (g itemGen) name() string {
	if g.r.IntN(6) == 0 { // a few fixed names, so fields recur across items and collide when sanitized
		return []string{"id", "a-b", "a_b", "a.b", "1st", "", "amount", "tags", "nested"}[g.r.IntN(9)]
	}
	n := 1 + g.r.IntN(8)
	var b strings.Builder
	for range n {
		b.WriteRune(nameRunes[g.r.IntN(len(nameRunes))])
	}
	return b.String()
}

func (g itemGen) str() string {
	switch g.r.IntN(5) {
	case 0:
		return ""
	case 1:
		return "ünïcødé 漢字 🙂"
	}
	return g.name() + fmt.Sprint(g.r.IntN(1000))
}

func (g itemGen) number() string {
	switch g.r.IntN(9) {
	case 0:
		return fmt.Sprint(g.r.Int64() - g.r.Int64())
	case 1:
		return "12345678901234567890123456789012345678" // 38 digits
	case 2:
		return "-9.9999999999999999999999999999999999999E+125"
	case 3:
		return "1E-130"
	case 4:
		return fmt.Sprintf("%d.%02d", g.r.IntN(100000), g.r.IntN(100))
	case 5:
		return "-0.000000000000000001"
	case 6:
		return "0"
	case 7:
		digits := 1 + g.r.IntN(38)
		var b strings.Builder
		b.WriteByte(byte('1' + g.r.IntN(9)))
		for range digits - 1 {
			b.WriteByte(byte('0' + g.r.IntN(10)))
		}
		return fmt.Sprintf("%se%d", b.String(), g.r.IntN(200)-120)
	}
	return fmt.Sprint(g.r.IntN(1000))
}

func (g itemGen) bytes() []byte {
	b := make([]byte, g.r.IntN(6))
	for i := range b {
		b[i] = byte(g.r.IntN(256))
	}
	return b
}

func (g itemGen) value(depth int) types.AttributeValue {
	max := 10
	if depth >= 4 {
		max = 5 // scalars only, below some depth
	}
	switch g.r.IntN(max) {
	case 0:
		return &types.AttributeValueMemberS{Value: g.str()}
	case 1:
		return &types.AttributeValueMemberN{Value: g.number()}
	case 2:
		return &types.AttributeValueMemberB{Value: g.bytes()}
	case 3:
		return &types.AttributeValueMemberBOOL{Value: g.r.IntN(2) == 0}
	case 4:
		return &types.AttributeValueMemberNULL{Value: true}
	case 5:
		set := map[string]bool{}
		for range 1 + g.r.IntN(4) {
			set[g.str()] = true
		}
		var ss []string
		for s := range set {
			ss = append(ss, s)
		}
		return &types.AttributeValueMemberSS{Value: ss}
	case 6:
		ns := []string{g.number()}
		for range g.r.IntN(3) {
			ns = append(ns, g.number())
		}
		return &types.AttributeValueMemberNS{Value: ns}
	case 7:
		bs := [][]byte{g.bytes()}
		if g.r.IntN(2) == 0 {
			bs = append(bs, append(g.bytes(), 0xFF))
		}
		return &types.AttributeValueMemberBS{Value: bs}
	case 8:
		l := []types.AttributeValue{}
		for range g.r.IntN(4) {
			l = append(l, g.value(depth+1))
		}
		return &types.AttributeValueMemberL{Value: l}
	}
	return &types.AttributeValueMemberM{Value: g.item(depth + 1)}
}

func (g itemGen) item(depth int) map[string]types.AttributeValue {
	m := map[string]types.AttributeValue{}
	for range g.r.IntN(6) {
		m[g.name()] = g.value(depth)
	}
	return m
}

func canonicalItem(item map[string]types.AttributeValue) map[string]types.AttributeValue {
	out, err := CanonicalItem(item)
	if err != nil {
		panic(err)
	}
	return out
}
