package layout

// Schema hints: a table's configured column types by attribute path, as Databricks Auto Loader's
// cloudFiles.schemaHints fix columns' types instead of inferring them.

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// Hints are a table's schema hints, parsed and checked.
type Hints struct {
	root *hintNode
}

// hintNode is one level of attribute paths: the hinted type of the attribute (nil: none, its
// children are hinted) and hints of the attributes inside it (a map).
type hintNode struct {
	typ      *ColType
	spelled  string // the path as configured, for errors
	children map[string]*hintNode
}

// ParseHints parses hints (attribute path → type). Every problem is reported, each naming its
// hint: an unknown type, a path that does not parse, a path into an attribute hinted as something
// other than a map, or two spellings of one path.
func ParseHints(hints map[string]string) (*Hints, error) {
	h := &Hints{root: &hintNode{}}
	var errs []error
	for _, spelled := range slices.Sorted(maps.Keys(hints)) {
		typ, err := ParseType(hints[spelled])
		if err != nil {
			errs = append(errs, fmt.Errorf("schema hint %q: %w", spelled, err))
			continue
		}
		path, err := ParsePath(spelled)
		if err != nil {
			errs = append(errs, fmt.Errorf("schema hint %q: %w", spelled, err))
			continue
		}
		n := h.root
		for _, seg := range path {
			if n.children == nil {
				n.children = map[string]*hintNode{}
			}
			c := n.children[seg]
			if c == nil {
				c = &hintNode{}
				n.children[seg] = c
			}
			n = c
		}
		if n.typ != nil {
			errs = append(errs, fmt.Errorf("schema hints %q and %q name the same attribute", n.spelled, spelled))
			continue
		}
		n.typ, n.spelled = &typ, spelled
	}
	errs = append(errs, h.root.checkParents(nil)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return h, nil
}

// checkParents reports hints below an attribute hinted with a type (every hint type is other than
// a map: a map's attributes are hinted by path). typed is the nearest hinted ancestor.
func (n *hintNode) checkParents(typed *hintNode) []error {
	var errs []error
	if n.typ != nil && typed != nil {
		errs = append(errs, fmt.Errorf("schema hint %q is a path into %q, which is hinted as %s, not a map", n.spelled, typed.spelled, typed.typ))
	}
	if n.typ != nil {
		typed = n
	}
	for _, k := range slices.Sorted(maps.Keys(n.children)) {
		errs = append(errs, n.children[k].checkParents(typed)...)
	}
	return errs
}

// Empty reports whether there are no hints.
func (h *Hints) Empty() bool { return h == nil || h.root == nil || len(h.root.children) == 0 }

// node returns the hints of a path's level (nil when none).
func (h *Hints) node() *hintNode {
	if h == nil {
		return nil
	}
	return h.root
}

// ParsePath splits an attribute path (ddbavro.ParseAttributePath): attributes separated by ".",
// one holding "." or "`" in backticks with "`" doubled, as Spark quotes column names.
func ParsePath(s string) ([]string, error) { return ddbavro.ParseAttributePath(s) }

// FormatPath joins attribute names into a path, quoting those that need it.
func FormatPath(path []string) string { return ddbavro.FormatAttributePath(path) }
