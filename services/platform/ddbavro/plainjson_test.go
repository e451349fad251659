package ddbavro

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// TestPlainJSONRoundTrip: plain JSON holds S, N (exact digits), BOOL, NULL, L and M and reads back
// as the same value; it refuses what it cannot tell apart (binary, sets).
func TestPlainJSONRoundTrip(t *testing.T) {
	v := &types.AttributeValueMemberL{Value: []types.AttributeValue{
		&types.AttributeValueMemberS{Value: "1"}, &types.AttributeValueMemberN{Value: "1.50E+30"},
		&types.AttributeValueMemberBOOL{Value: true}, &types.AttributeValueMemberNULL{Value: true},
		&types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"b": &types.AttributeValueMemberS{Value: "q\"\n"}, "a": &types.AttributeValueMemberL{}}},
	}}
	b, fits, err := AppendPlainJSON(nil, v)
	if err != nil || !fits {
		t.Fatal(fits, err)
	}
	want := `["1",1500000000000000000000000000000,true,null,{"a":[],"b":"q\"\n"}]`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
	back, err := FromPlainJSON(string(b))
	if err != nil {
		t.Fatal(err)
	}
	x, _ := MarshalDynamoJSON(back)
	y, _ := MarshalDynamoJSON(v)
	if x != y {
		t.Fatalf("round trip\n got %s\nwant %s", x, y)
	}
	for _, bad := range []types.AttributeValue{&types.AttributeValueMemberB{Value: []byte{1}},
		&types.AttributeValueMemberL{Value: []types.AttributeValue{&types.AttributeValueMemberSS{Value: []string{"a"}}}}} {
		if _, fits, err := AppendPlainJSON(nil, bad); fits || err != nil {
			t.Errorf("%T: fits %v, err %v", bad, fits, err)
		}
	}
}

func TestAttributePaths(t *testing.T) {
	for text, want := range map[string][]string{"a": {"a"}, "a.b": {"a", "b"}, "`a.b`.c": {"a.b", "c"}, "`x``y`": {"x`y"}} {
		got, err := ParseAttributePath(text)
		if err != nil || strings.Join(got, "|") != strings.Join(want, "|") || FormatAttributePath(got) != text {
			t.Errorf("%s: %q %v (formats as %s)", text, got, err, FormatAttributePath(got))
		}
	}
	for _, bad := range []string{"", "a.", ".a", "`a", "a`b", "`a`b"} {
		if _, err := ParseAttributePath(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
