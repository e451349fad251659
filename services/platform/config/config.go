// Package config loads a service's configuration: one YAML file, then environment overrides, then
// validation, with every problem found reported at once.
//
// Keys are the `yaml` struct tags. A nested key such as kafka.sasl.mechanism is overridden by the
// environment variable <PREFIX>_KAFKA_SASL_MECHANISM. Unknown keys, in the file or among the
// variables carrying the service's prefix, are errors: a typo must not silently fall back to a
// default. Lists of scalars take comma-separated values from the environment; lists and maps of
// sections (for example a service's tables) are set in the file only.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Validator is implemented by a service's top-level configuration. Validate reports every problem
// it finds, joined with errors.Join, each naming the key it concerns.
type Validator interface {
	Validate() error
}

// Load fills dst, a pointer to a struct already holding its defaults, from the YAML file at path
// (skipped when path is empty), then from the environment variables starting with envPrefix+"_",
// and finally validates it. The returned error joins every problem found: unknown keys, values of
// the wrong type, unknown variables and failed validation, each naming the key or variable.
func Load(path, envPrefix string, dst Validator) error {
	return LoadEnviron(path, envPrefix, os.Environ(), dst)
}

// LoadEnviron is Load with the environment given as KEY=value pairs instead of read from the
// process; deployment tests use it to load a config as a container would see it.
func LoadEnviron(path, envPrefix string, environ []string, dst Validator) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("loading config: destination must be a pointer to a struct, got %T", dst)
	}
	var problems []error
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading config file: %w", err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return fmt.Errorf("parsing config file %s: %w", path, err)
		}
		if len(doc.Content) > 0 {
			problems = append(problems, decodeNode(doc.Content[0], rv.Elem(), "")...)
		}
		for i, p := range problems {
			problems[i] = fmt.Errorf("%s: %w", path, p)
		}
	}
	problems = append(problems, applyEnv(envPrefix, environ, rv.Elem())...)
	// Validate even after decoding problems: a key that failed to decode keeps its default, so what
	// validation says of it is still true, and the operator sees every problem in one start-up.
	problems = append(problems, dst.Validate())
	return errors.Join(problems...)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decodeNode decodes n into v, walking structs, slices and maps of structs itself so that an unknown
// key or a bad value is reported with its full dotted key and line, and every problem is collected
// instead of stopping at the first.
func decodeNode(n *yaml.Node, v reflect.Value, key string) []error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" {
		v.SetZero()
		return nil
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return decodeNode(n, v.Elem(), key)
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) || !hasSections(v.Type()) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return []error{fmt.Errorf("%s (line %d): %w", keyName(key), n.Line, cleanYAMLError(err))}
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return []error{fmt.Errorf("%s (line %d): expected a mapping of keys", keyName(key), n.Line)}
		}
		fields := fieldsByKey(v.Type())
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			idx, ok := fields[k.Value]
			if !ok {
				errs = append(errs, fmt.Errorf("%s (line %d): unknown key (known: %s)",
					join(key, k.Value), k.Line, strings.Join(sortedKeys(fields), ", ")))
				continue
			}
			errs = append(errs, decodeNode(val, v.Field(idx), join(key, k.Value))...)
		}
		return errs
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return []error{fmt.Errorf("%s (line %d): expected a list", keyName(key), n.Line)}
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		var errs []error
		for i, item := range n.Content {
			errs = append(errs, decodeNode(item, out.Index(i), fmt.Sprintf("%s[%d]", key, i))...)
		}
		v.Set(out)
		return errs
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return []error{fmt.Errorf("%s (line %d): expected a mapping", keyName(key), n.Line)}
		}
		out := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			mk := reflect.New(v.Type().Key()).Elem()
			if err := n.Content[i].Decode(mk.Addr().Interface()); err != nil {
				errs = append(errs, fmt.Errorf("%s (line %d): bad key: %w", keyName(key), n.Content[i].Line, err))
				continue
			}
			mv := reflect.New(v.Type().Elem()).Elem()
			errs = append(errs, decodeNode(n.Content[i+1], mv, join(key, n.Content[i].Value))...)
			out.SetMapIndex(mk, mv)
		}
		v.Set(out)
		return errs
	}
	return nil
}

// hasSections reports whether t holds struct-typed keys that decodeNode must walk itself. Other
// types (scalars, lists of scalars, types with their own UnmarshalYAML) are decoded by yaml directly.
func hasSections(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(unmarshalerType)
}

// fieldsByKey maps each yaml key of struct type t to its field index.
func fieldsByKey(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if name, ok := yamlKey(t.Field(i)); ok {
			out[name] = i
		}
	}
	return out
}

func yamlKey(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return "", false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, true
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func keyName(key string) string {
	if key == "" {
		return "(top level)"
	}
	return key
}

// cleanYAMLError drops yaml's own "yaml: unmarshal errors:\n  line N:" framing, since the caller
// already names the key and line.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			if _, rest, ok := strings.Cut(m, ": "); ok && strings.HasPrefix(m, "line ") {
				m = rest
			}
			msgs[i] = m
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return err
}
