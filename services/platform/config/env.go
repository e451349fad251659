package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvVar is one environment variable a configuration accepts.
type EnvVar struct {
	Name string // e.g. DDB2DELTA_SINK_KAFKA_BROKERS
	Key  string // the dotted YAML key it overrides, e.g. kafka.brokers
}

// EnvVars lists every environment variable that Load accepts for cfg (a struct or a pointer to
// one) under envPrefix, in key order. Tests use it to check that deployment files only set
// variables a service understands.
func EnvVars(envPrefix string, cfg any) []EnvVar {
	t := reflect.TypeOf(cfg)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []EnvVar
	walkLeaves(t, "", func(key string, _ []int) {
		out = append(out, EnvVar{Name: envName(envPrefix, key), Key: key})
	}, nil)
	return out
}

// walkLeaves calls fn for every key of struct type t that the environment can set: scalars, lists
// of scalars and Secrets, reached through nested structs (not lists of sections, nor maps, which
// have no stable variable name).
func walkLeaves(t reflect.Type, prefix string, fn func(key string, index []int), index []int) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, ok := yamlKey(f)
		if !ok {
			continue
		}
		key := join(prefix, name)
		idx := append(slices.Clone(index), i)
		ft := f.Type
		if ft.Kind() == reflect.Struct && hasSections(ft) {
			walkLeaves(ft, key, fn, idx)
			continue
		}
		if hasSections(ft) || ft.Kind() == reflect.Map {
			continue // lists of sections and maps have no stable variable name: file only
		}
		fn(key, idx)
	}
}

func envName(prefix, key string) string {
	return prefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// applyEnv sets every key that has a variable in environ, and reports variables under the prefix
// that match no key.
func applyEnv(envPrefix string, environ []string, v reflect.Value) []error {
	if envPrefix == "" {
		return nil
	}
	set := map[string]string{}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(name, envPrefix+"_") {
			set[name] = val
		}
	}
	var errs []error
	known := map[string]bool{}
	walkLeaves(v.Type(), "", func(key string, index []int) {
		name := envName(envPrefix, key)
		known[name] = true
		val, ok := set[name]
		if !ok {
			return
		}
		if err := setFromString(v.FieldByIndex(index), val); err != nil {
			errs = append(errs, fmt.Errorf("%s (key %s): %w", name, key, err))
		}
	}, nil)
	var unknown []string
	for name := range set {
		if !known[name] && !ignoredEnv[strings.TrimPrefix(name, envPrefix+"_")] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		errs = append(errs, fmt.Errorf("%s: unknown environment variable (no such config key)", name))
	}
	return errs
}

// ignoredEnv are variables under a service's prefix that are not config keys.
var ignoredEnv = map[string]bool{"CONFIG": true}

var secretType = reflect.TypeFor[Secret]()

func setFromString(v reflect.Value, s string) error {
	switch {
	case v.Type() == secretType:
		v.Set(reflect.ValueOf(NewSecret(s)))
		return nil
	case v.Kind() == reflect.String:
		v.SetString(s)
		return nil
	case v.Kind() == reflect.Slice:
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		out := reflect.MakeSlice(v.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := setFromString(out.Index(i), p); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		v.Set(out)
		return nil
	}
	// Scalars (numbers, booleans, durations, types with UnmarshalYAML) parse as a YAML scalar would.
	n := yaml.Node{Kind: yaml.ScalarNode, Value: s}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return fmt.Errorf("cannot use %q as %s", s, v.Type())
		}
		return err
	}
	return nil
}

// Keys lists every key of cfg (a struct or a pointer to one) in dotted form, with list and map
// items as "[]", e.g. kafka.tls.ca_file and tables[].mode. Documentation tests use it to check
// that every key is described.
func Keys(cfg any) []string {
	t := reflect.TypeOf(cfg)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			name, ok := yamlKey(t.Field(i))
			if !ok {
				continue
			}
			key := join(prefix, name)
			ft := t.Field(i).Type
			switch {
			case ft.Kind() == reflect.Struct && hasSections(ft):
				walk(ft, key)
			case (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map) && hasSections(ft.Elem()):
				out = append(out, key)
				walk(ft.Elem(), key+"[]")
			default:
				out = append(out, key)
			}
		}
	}
	walk(t, "")
	return out
}
