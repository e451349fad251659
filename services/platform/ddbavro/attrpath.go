package ddbavro

import (
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// ParseAttributePath splits an attribute path (a schema hint's, a rescued value's): attributes separated by ".", an attribute holding "." or
// "`" written in backticks with "`" doubled (`a.b`.c is attribute c of attribute "a.b"), as Spark
// quotes column names.
func ParseAttributePath(s string) ([]string, error) {
	var out []string
	i := 0
	for {
		var seg strings.Builder
		if i < len(s) && s[i] == '`' {
			i++
			closed := false
			for i < len(s) {
				if s[i] == '`' {
					if i+1 < len(s) && s[i+1] == '`' {
						seg.WriteByte('`')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				seg.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("path %q: unclosed backtick", s)
			}
			if i < len(s) && s[i] != '.' {
				return nil, fmt.Errorf("path %q: a quoted attribute must be followed by \".\" or the end", s)
			}
		} else {
			for i < len(s) && s[i] != '.' {
				if s[i] == '`' {
					return nil, fmt.Errorf("path %q: a backtick inside an unquoted attribute", s)
				}
				seg.WriteByte(s[i])
				i++
			}
		}
		if seg.Len() == 0 {
			return nil, fmt.Errorf("path %q: an empty attribute name", s)
		}
		out = append(out, seg.String())
		if i >= len(s) {
			return out, nil
		}
		i++ // the "."
	}
}

// FormatAttributePath joins attribute names into a path, quoting those that need it
// (ParseAttributePath's inverse).
func FormatAttributePath(path []string) string {
	var b strings.Builder
	for i, seg := range path {
		if i > 0 {
			b.WriteByte('.')
		}
		if seg == "" || strings.ContainsAny(seg, ".`") {
			b.WriteByte('`')
			b.WriteString(strings.ReplaceAll(seg, "`", "``"))
			b.WriteByte('`')
			continue
		}
		b.WriteString(seg)
	}
	return b.String()
}

// SetAtPath sets the attribute at path (from ParseAttributePath) of item to v, making the maps on
// the way when missing (or not maps). path must not be empty.
func SetAtPath(item map[string]types.AttributeValue, path []string, v types.AttributeValue) {
	m := item
	for _, seg := range path[:len(path)-1] {
		inner, ok := m[seg].(*types.AttributeValueMemberM)
		if !ok {
			inner = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}
			m[seg] = inner
		}
		m = inner.Value
	}
	m[path[len(path)-1]] = v
}
