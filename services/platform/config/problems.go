package config

import (
	"errors"
	"fmt"
)

// Problems collects validation failures so that a service reports all of them at start-up, each
// prefixed with the key it concerns.
type Problems struct{ errs []error }

// Add records a problem with key.
func (p *Problems) Add(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", keyName(key), fmt.Sprintf(format, args...)))
}

// Join returns a dotted key under prefix, for sections that validate their own keys.
func Join(prefix, key string) string { return join(prefix, key) }

// Err returns every problem joined, or nil.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// Index returns the key of item i of the list at key, e.g. tables[2].
func Index(key string, i int) string { return fmt.Sprintf("%s[%d]", key, i) }
