package ddbavro

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The typed encoding. A table's items become an Avro record inferred from the attributes seen.
// Every field is a union whose first branch is null (the attribute is absent); a value is written
// to the narrowest branch that holds it exactly:
//
//	S            string
//	N            long (an integer within int64), else Decimal38 (fits decimal(38,18)), else AttributeValue
//	B            bytes
//	BOOL         boolean
//	NULL         AttributeValue ({"NULL": true}, so a NULL attribute stays distinct from an absent one)
//	SS NS BS L   an array (schema property "ddb.type" says which); items are again such a union
//	M            a nested record, inferred the same way
//	anything the union cannot hold otherwise (a second kind of array, a number beyond decimal(38,18))
//	             AttributeValue, the lossless generic encoding
//
// Evolution only ever adds: a new attribute adds an optional field (default null), a new kind of
// value for a field adds a union branch at the end, a new key of a nested map adds a field to its
// record. Those are the changes Avro schema resolution handles exactly, so each new schema is
// BACKWARD_TRANSITIVE compatible with every older one, and no value is ever dropped or altered.

// kind is the kind of a union branch.
type kind int

const (
	kNull kind = iota
	kBool
	kString
	kLong
	kDecimal
	kBytes
	kArray
	kRecord
	kGeneric
)

// Names of the shared named types.
const (
	genericName = "io.ddb2delta.dynamodb.AttributeValue"
	decimalName = "io.ddb2delta.dynamodb.Decimal38"
)

// Schema properties that carry what Avro cannot say by itself.
const (
	propAttr = "ddb.attr" // a field's DynamoDB attribute name, when it differs from the Avro name
	propType = "ddb.type" // an array's DynamoDB type: SS, NS, BS or L
	// propColumn is the Delta column type a writer declares for a top-level attribute (the
	// enricher's projection): the sink takes it as a schema hint.
	propColumn = "ddb2delta.column_type"
)

type branch struct {
	kind  kind
	ddb   string  // kArray: SS, NS, BS or L
	items *union  // kArray
	rec   *record // kRecord
}

type union struct{ branches []*branch }

type field struct {
	name   string // Avro name
	attr   string // DynamoDB attribute name
	typ    *union
	column string // declared column type (propColumn), top level only
}

type record struct {
	name   string // full Avro name
	fields []*field
	byAttr map[string]*field
	names  map[string]bool // Avro field names in use
}

// Model is the typed encoding's schema state for one table: the item record and every named type
// under it. It evolves as new shapes of items arrive; a Model is not safe for concurrent use.
type Model struct {
	item    *record
	names   map[string]bool   // full names of the named types defined under item
	columns map[string]string // ColumnTypes
}

// NewModel returns the model of a table not seen before: an item record with no fields yet.
// table names the record's namespace.
func NewModel(table string) *Model {
	m := &Model{names: map[string]bool{}}
	m.item = m.newRecord("io.ddb2delta.cdc." + sanitizeNamespace(table) + ".Item")
	return m
}

func (m *Model) newRecord(name string) *record {
	base := name
	for i := 2; m.names[name]; i++ {
		name = base + strconv.Itoa(i)
	}
	m.names[name] = true
	return &record{name: name, byAttr: map[string]*field{}, names: map[string]bool{}}
}

func newUnion() *union { return &union{branches: []*branch{{kind: kNull}}} }

// addField adds an optional field for attribute attr, with a unique valid Avro name.
func (r *record) addField(attr string) *field {
	base := sanitizeName(attr)
	name := base
	for i := 2; r.names[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	f := &field{name: name, attr: attr, typ: newUnion()}
	r.names[name] = true
	r.byAttr[attr] = f
	r.fields = append(r.fields, f)
	return f
}

// sanitizeName maps an attribute name to a valid Avro name ([A-Za-z_][A-Za-z0-9_]*): every other
// character becomes '_', and a leading digit gets a '_' before it. The original name is kept in the
// field's "ddb.attr" property, which is what makes the mapping reversible.
func sanitizeName(attr string) string {
	var b strings.Builder
	for i, r := range attr {
		switch {
		case r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'):
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

func sanitizeNamespace(table string) string {
	parts := strings.Split(table, ".")
	for i, p := range parts {
		parts[i] = sanitizeName(p)
	}
	return strings.Join(parts, "_")
}

// SetColumnTypes declares the Delta column types of top-level attributes (attribute → type as
// schema hints spell them), adding an optional field for an attribute not seen yet; it reports
// whether the model changed. The schema carries them to the sink as schema hints.
func (m *Model) SetColumnTypes(columns map[string]string) bool {
	changed := false
	for attr, typ := range columns {
		f := m.item.byAttr[attr]
		if f == nil {
			f = m.item.addField(attr)
			changed = true
		}
		if f.column != typ {
			f.column, changed = typ, true
		}
	}
	if changed {
		m.indexColumns()
	}
	return changed
}

// indexColumns computes ColumnTypes' map (a new one: decoders may be reading the old one).
func (m *Model) indexColumns() {
	m.columns = nil
	for _, f := range m.item.fields {
		if f.column != "" {
			if m.columns == nil {
				m.columns = map[string]string{}
			}
			m.columns[f.attr] = f.column
		}
	}
}

// ColumnTypes returns the declared column types of top-level attributes (nil when none). The map
// is shared: do not modify it.
func (m *Model) ColumnTypes() map[string]string { return m.columns }

// Evolve grows the model so that it can encode item, and reports whether it changed (then the
// schema must be registered again). Errors name the attribute that failed, e.g. address.zip.
func (m *Model) Evolve(item map[string]types.AttributeValue) (bool, error) {
	return m.evolveRecord(m.item, item, "")
}

func (m *Model) evolveRecord(r *record, item map[string]types.AttributeValue, prefix string) (bool, error) {
	changed := false
	// Sorted, so that the same item always evolves the model the same way, on every replica; and
	// names that are valid Avro names already are added first, so they keep their name when a
	// sanitized one ("a.b" → "a_b") would clash with them.
	attrs := sortedAttrs(item)
	for _, attr := range attrs {
		if r.byAttr[attr] == nil && sanitizeName(attr) == attr {
			r.addField(attr)
			changed = true
		}
	}
	for _, attr := range attrs {
		v := item[attr]
		f := r.byAttr[attr]
		if f == nil {
			f = r.addField(attr)
			changed = true
		}
		c, err := m.evolveValue(f.typ, v, r.name+"_"+f.name)
		if err != nil {
			return false, inAttr(prefix+attr, err)
		}
		changed = changed || c
	}
	return changed, nil
}

// evolveValue makes u able to hold v. recName is the name a nested record would get.
func (m *Model) evolveValue(u *union, v types.AttributeValue, recName string) (bool, error) {
	b, need, err := u.choose(v)
	if err != nil {
		return false, err
	}
	changed := false
	if b == nil {
		b = &branch{kind: need}
		switch need {
		case kArray:
			b.ddb = arrayType(v)
			b.items = newUnion()
		case kRecord:
			b.rec = m.newRecord(recName)
		}
		u.branches = append(u.branches, b)
		changed = true
	}
	switch b.kind {
	case kArray:
		for i, x := range arrayElements(v) {
			c, err := m.evolveValue(b.items, x, recName+"_item")
			if err != nil {
				return false, inAttr("["+strconv.Itoa(i)+"]", err)
			}
			changed = changed || c
		}
	case kRecord:
		c, err := m.evolveRecord(b.rec, v.(*types.AttributeValueMemberM).Value, ".")
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	return changed, nil
}

// choose returns the existing branch of u that holds v exactly, preferring the narrowest; when
// there is none, it returns nil and the kind of branch to add. Numbers are validated here, so a
// bad one fails whatever the union holds. Errors carry no attribute path: callers add it.
func (u *union) choose(v types.AttributeValue) (*branch, kind, error) {
	var candidates []kind
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		candidates = kindsString
	case *types.AttributeValueMemberN:
		return u.chooseNumber(v.Value)
	case *types.AttributeValueMemberB:
		candidates = kindsBytes
	case *types.AttributeValueMemberBOOL:
		candidates = kindsBool
	case *types.AttributeValueMemberSS, *types.AttributeValueMemberNS, *types.AttributeValueMemberBS, *types.AttributeValueMemberL:
		if err := checkNumbers(v); err != nil {
			return nil, 0, err
		}
		ddb := arrayType(v)
		for _, b := range u.branches {
			if b.kind == kArray && b.ddb == ddb {
				return b, kArray, nil
			}
		}
		if u.branchOf(kArray) == nil {
			return nil, kArray, nil
		}
		// Avro allows one array per union: another kind of list or set goes to the generic branch.
	case *types.AttributeValueMemberM:
		candidates = kindsRecord
	case *types.AttributeValueMemberNULL:
		// Only the generic branch holds NULL: the null branch means "absent".
	case nil:
		return nil, 0, errors.New("no value")
	default:
		return nil, 0, fmt.Errorf("unsupported attribute value type %T", v)
	}
	return u.pick(candidates)
}

var (
	kindsString  = []kind{kString}
	kindsBytes   = []kind{kBytes}
	kindsBool    = []kind{kBool}
	kindsRecord  = []kind{kRecord}
	kindsInteger = []kind{kLong, kDecimal} // an int64 always fits decimal(38,18) too
	kindsDecimal = []kind{kDecimal}
)

// pick returns the narrowest existing branch among candidates, or the kind to add. The generic
// branch serves only values that no narrower branch can hold (NULL, a second kind of array,
// numbers beyond decimal(38,18)), so a single odd value never pushes later ordinary values of its
// field into the generic form.
func (u *union) pick(candidates []kind) (*branch, kind, error) {
	for _, k := range candidates {
		if b := u.branchOf(k); b != nil {
			return b, k, nil
		}
	}
	if len(candidates) > 0 {
		return nil, candidates[0], nil
	}
	return u.branchOf(kGeneric), kGeneric, nil
}

// chooseNumber is choose for a number; integers of up to 18 digits take an allocation-free path.
func (u *union) chooseNumber(text string) (*branch, kind, error) {
	if _, ok := smallInt(text); ok {
		return u.pick(kindsInteger)
	}
	n, err := ParseNumber(text)
	if err != nil {
		return nil, 0, err
	}
	if _, ok := n.Int64(); ok {
		return u.pick(kindsInteger)
	}
	if n.fitsDecimal(decimalPrecision, decimalScale) {
		return u.pick(kindsDecimal)
	}
	return u.pick(nil)
}

// checkNumbers validates the numbers of a number set, which may land in any branch.
func checkNumbers(v types.AttributeValue) error {
	if ns, ok := v.(*types.AttributeValueMemberNS); ok {
		for i, s := range ns.Value {
			if _, ok := smallInt(s); ok {
				continue
			}
			if _, err := ParseNumber(s); err != nil {
				return &attrError{path: "[" + strconv.Itoa(i) + "]", err: err}
			}
		}
	}
	return nil
}

// attrError is an error about one attribute; its path grows as the error unwinds to the item, so
// that the success path builds no path strings.
type attrError struct {
	path string
	err  error
}

func (e *attrError) Error() string { return "attribute " + e.path + ": " + e.err.Error() }
func (e *attrError) Unwrap() error { return e.err }

// inAttr returns err placed under path segment seg ("name", ".name" or "[3]").
func inAttr(seg string, err error) error {
	var ae *attrError
	if errors.As(err, &ae) {
		return &attrError{path: seg + ae.path, err: ae.err}
	}
	if errors.Is(err, errEvolve) {
		return err
	}
	return &attrError{path: seg, err: err}
}

func (u *union) branchOf(k kind) *branch {
	for _, b := range u.branches {
		if b.kind == k {
			return b
		}
	}
	return nil
}

func (u *union) index(b *branch) int {
	for i, x := range u.branches {
		if x == b {
			return i
		}
	}
	return -1
}

func sortedAttrs(item map[string]types.AttributeValue) []string {
	keys := make([]string, 0, len(item))
	for k := range item {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func arrayType(v types.AttributeValue) string {
	switch t := TypeName(v); t {
	case "SS", "NS", "BS", "L":
		return t
	}
	return ""
}

// TypeName is the DynamoDB type of v: S, N, B, BOOL, NULL, SS, NS, BS, L or M ("" for nil or an
// unknown member).
func TypeName(v types.AttributeValue) string {
	switch v.(type) {
	case *types.AttributeValueMemberS:
		return "S"
	case *types.AttributeValueMemberN:
		return "N"
	case *types.AttributeValueMemberB:
		return "B"
	case *types.AttributeValueMemberBOOL:
		return "BOOL"
	case *types.AttributeValueMemberNULL:
		return "NULL"
	case *types.AttributeValueMemberSS:
		return "SS"
	case *types.AttributeValueMemberNS:
		return "NS"
	case *types.AttributeValueMemberBS:
		return "BS"
	case *types.AttributeValueMemberL:
		return "L"
	case *types.AttributeValueMemberM:
		return "M"
	}
	return ""
}

// arrayElements returns the elements of a set or list as attribute values.
func arrayElements(v types.AttributeValue) []types.AttributeValue {
	switch v := v.(type) {
	case *types.AttributeValueMemberSS:
		out := make([]types.AttributeValue, len(v.Value))
		for i, s := range v.Value {
			out[i] = &types.AttributeValueMemberS{Value: s}
		}
		return out
	case *types.AttributeValueMemberNS:
		out := make([]types.AttributeValue, len(v.Value))
		for i, s := range v.Value {
			out[i] = &types.AttributeValueMemberN{Value: s}
		}
		return out
	case *types.AttributeValueMemberBS:
		out := make([]types.AttributeValue, len(v.Value))
		for i, s := range v.Value {
			out[i] = &types.AttributeValueMemberB{Value: s}
		}
		return out
	case *types.AttributeValueMemberL:
		return v.Value
	}
	return nil
}
