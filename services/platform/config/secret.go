package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Secret holds a password or token. It is set from the environment (or read from a file by
// FromFile), never from the YAML file, and it prints, logs and marshals as "[redacted]", so a
// config dumped to a log cannot leak it.
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Value returns the secret itself, for the one call that needs it.
func (s Secret) Value() string { return s.v }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s.v != "" }

// String implements fmt.Stringer with a redacted value.
func (s Secret) String() string {
	if s.v == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue implements slog.LogValuer with a redacted value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler with a redacted value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalYAML implements yaml.Marshaler with a redacted value.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// ErrSecretInFile is returned (wrapped) when a config file holds a secret's value.
var ErrSecretInFile = errors.New("secrets are not read from the config file: set the environment variable, or the matching *_file key")

// UnmarshalYAML refuses a literal secret in the config file: config files end up in git and in
// ConfigMaps, secrets belong in the environment or in mounted files.
func (s *Secret) UnmarshalYAML(*yaml.Node) error { return ErrSecretInFile }

// FromFile returns s, or when path is set, the secret read from that file with trailing newlines
// trimmed (the usual shape of a mounted Kubernetes Secret).
func FromFile(s Secret, path string) (Secret, error) {
	if path == "" {
		return s, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return Secret{}, fmt.Errorf("reading secret file: %w", err)
	}
	return NewSecret(strings.TrimRight(string(raw), "\r\n")), nil
}
