// Package deltatype holds Delta Lake data types and table schemas, as the protocol writes them in
// metaData.schemaString.
package deltatype

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// StructType is a Delta struct type: the table schema, or a nested struct column.
type StructType struct {
	Fields []StructField
}

// StructField is one field of a struct.
type StructField struct {
	Name     string         `json:"name"`
	Type     DataType       `json:"type"`
	Nullable bool           `json:"nullable"`
	Metadata map[string]any `json:"metadata"`
}

// DataType is a Delta data type: exactly one of its fields is set.
type DataType struct {
	Primitive string // string, long, integer, boolean, binary, date, timestamp, decimal(p,s), …
	Struct    *StructType
	Array     *ArrayType
	Map       *MapType
}

// ArrayType is an array type.
type ArrayType struct {
	Element      DataType
	ContainsNull bool
}

// MapType is a map type.
type MapType struct {
	Key, Value        DataType
	ValueContainsNull bool
}

// Primitive types used by the sink.
var (
	String    = DataType{Primitive: "string"}
	Long      = DataType{Primitive: "long"}
	Integer   = DataType{Primitive: "integer"}
	Boolean   = DataType{Primitive: "boolean"}
	Binary    = DataType{Primitive: "binary"}
	Date      = DataType{Primitive: "date"}
	Timestamp = DataType{Primitive: "timestamp"}
	Double    = DataType{Primitive: "double"}
	Decimal38 = DataType{Primitive: "decimal(38,18)"}
)

// DecimalParams returns the precision and scale of a decimal type.
func DecimalParams(t DataType) (precision, scale int, ok bool) {
	if _, err := fmt.Sscanf(t.Primitive, "decimal(%d,%d)", &precision, &scale); err != nil {
		return 0, 0, false
	}
	return precision, scale, true
}

// Decimal returns the type decimal(precision,scale).
func Decimal(precision, scale int) DataType {
	return DataType{Primitive: fmt.Sprintf("decimal(%d,%d)", precision, scale)}
}

// ArrayOf returns an array type of nullable elements.
func ArrayOf(e DataType) DataType { return DataType{Array: &ArrayType{Element: e, ContainsNull: true}} }

// StructOf returns a struct type.
func StructOf(fields ...StructField) DataType { return DataType{Struct: &StructType{Fields: fields}} }

// Field returns the field named name, or nil.
func (s *StructType) Field(name string) *StructField {
	for i := range s.Fields {
		if s.Fields[i].Name == name {
			return &s.Fields[i]
		}
	}
	return nil
}

// String renders the type as Delta schema JSON.
func (t DataType) String() string {
	b, _ := json.Marshal(t)
	return string(b)
}

// Equal reports whether two types are the same.
func (t DataType) Equal(o DataType) bool { return t.String() == o.String() }

// MarshalJSON implements json.Marshaler.
func (s StructType) MarshalJSON() ([]byte, error) {
	fields := s.Fields
	if fields == nil {
		fields = []StructField{}
	}
	for i := range fields {
		if fields[i].Metadata == nil {
			fields[i].Metadata = map[string]any{}
		}
	}
	return json.Marshal(struct {
		Type   string        `json:"type"`
		Fields []StructField `json:"fields"`
	}{"struct", fields})
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *StructType) UnmarshalJSON(b []byte) error {
	var raw struct {
		Type   string        `json:"type"`
		Fields []StructField `json:"fields"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if raw.Type != "struct" {
		return fmt.Errorf("type %q is not struct", raw.Type)
	}
	s.Fields = raw.Fields
	return nil
}

// MarshalJSON implements json.Marshaler.
func (t DataType) MarshalJSON() ([]byte, error) {
	switch {
	case t.Struct != nil:
		return json.Marshal(*t.Struct)
	case t.Array != nil:
		return json.Marshal(struct {
			Type         string   `json:"type"`
			ElementType  DataType `json:"elementType"`
			ContainsNull bool     `json:"containsNull"`
		}{"array", t.Array.Element, t.Array.ContainsNull})
	case t.Map != nil:
		return json.Marshal(struct {
			Type              string   `json:"type"`
			KeyType           DataType `json:"keyType"`
			ValueType         DataType `json:"valueType"`
			ValueContainsNull bool     `json:"valueContainsNull"`
		}{"map", t.Map.Key, t.Map.Value, t.Map.ValueContainsNull})
	case t.Primitive != "":
		return json.Marshal(t.Primitive)
	}
	return nil, fmt.Errorf("empty data type")
}

var decimalType = regexp.MustCompile(`^decimal\((\d+),\s*(\d+)\)$`)

// UnmarshalJSON implements json.Unmarshaler.
func (t *DataType) UnmarshalJSON(b []byte) error {
	var prim string
	if err := json.Unmarshal(b, &prim); err == nil {
		switch prim {
		case "string", "long", "integer", "short", "byte", "float", "double", "boolean", "binary", "date", "timestamp", "timestamp_ntz":
		default:
			if !decimalType.MatchString(prim) {
				return fmt.Errorf("unknown primitive type %q", prim)
			}
		}
		*t = DataType{Primitive: prim}
		return nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	switch head.Type {
	case "struct":
		var s StructType
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = DataType{Struct: &s}
	case "array":
		var a struct {
			ElementType  DataType `json:"elementType"`
			ContainsNull bool     `json:"containsNull"`
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return err
		}
		*t = DataType{Array: &ArrayType{Element: a.ElementType, ContainsNull: a.ContainsNull}}
	case "map":
		var m struct {
			KeyType           DataType `json:"keyType"`
			ValueType         DataType `json:"valueType"`
			ValueContainsNull bool     `json:"valueContainsNull"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		*t = DataType{Map: &MapType{Key: m.KeyType, Value: m.ValueType, ValueContainsNull: m.ValueContainsNull}}
	default:
		return fmt.Errorf("unknown type %q", head.Type)
	}
	return nil
}

// Evolves reports whether next is a valid evolution of prev under the rules this package follows:
// every field of prev is in next with the same type and nullability (nested structs may gain
// fields), and every field next adds is nullable. Readers of older files then see the new columns
// as null.
func Evolves(prev, next *StructType) error {
	for _, f := range prev.Fields {
		nf := next.Field(f.Name)
		if nf == nil {
			return fmt.Errorf("column %s was dropped", f.Name)
		}
		if nf.Nullable != f.Nullable {
			return fmt.Errorf("column %s changed nullability", f.Name)
		}
		if f.Type.Struct != nil && nf.Type.Struct != nil {
			if err := Evolves(f.Type.Struct, nf.Type.Struct); err != nil {
				return fmt.Errorf("in struct column %s: %w", f.Name, err)
			}
			continue
		}
		if !f.Type.Equal(nf.Type) {
			return fmt.Errorf("column %s changed type from %s to %s", f.Name, f.Type, nf.Type)
		}
	}
	for _, nf := range next.Fields {
		if prev.Field(nf.Name) == nil && !nf.Nullable {
			return fmt.Errorf("new column %s is not nullable", nf.Name)
		}
	}
	return nil
}
