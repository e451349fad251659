// Package storage is where Delta tables live: a directory on the local filesystem or a prefix in
// an S3 bucket. The one operation Delta's correctness rests on is WriteIfAbsent, the put-if-absent
// that decides which writer gets a commit version: an exclusive hard link on a filesystem,
// If-None-Match: * on S3.
package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ErrExists is returned (wrapped) by WriteIfAbsent when the object already exists.
var ErrExists = errors.New("object already exists")

// ErrNotFound is returned (wrapped) by Read when the object does not exist.
var ErrNotFound = errors.New("object not found")

// Object is one stored object.
type Object struct {
	Name     string // relative to the store's root, with / separators
	Size     int64
	Modified time.Time
}

// Store holds the objects of one table, named relative to the table's root with / separators.
type Store interface {
	// Read returns an object's bytes, or an error wrapping ErrNotFound.
	Read(ctx context.Context, name string) ([]byte, error)
	// Write creates or replaces an object. A reader sees the old or the new bytes, never a part.
	Write(ctx context.Context, name string, data []byte) error
	// WriteIfAbsent creates an object only if no object of that name exists, atomically; an
	// existing object is left untouched and ErrExists is returned (wrapped).
	WriteIfAbsent(ctx context.Context, name string, data []byte) error
	// List returns the objects whose name starts with prefix and sorts after startAfter (""
	// for all), in name order.
	List(ctx context.Context, prefix, startAfter string) ([]Object, error)
	// Delete removes an object; removing a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// Location is the table's URL, for logs and errors.
	Location() string
}

// Location is a parsed table location.
type Location struct {
	Scheme string // "file" or "s3"
	Bucket string // s3 only
	Path   string // directory (file) or key prefix without a trailing slash (s3)
}

// ParseLocation parses a directory path, a file:// URL or an s3://bucket/prefix URL.
func ParseLocation(loc string) (Location, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return Location{}, fmt.Errorf("table location %q: %w", loc, err)
	}
	switch u.Scheme {
	case "":
		return Location{Scheme: "file", Path: loc}, nil
	case "file":
		return Location{Scheme: "file", Path: u.Path}, nil
	case "s3":
		if u.Host == "" {
			return Location{}, fmt.Errorf("table location %q: no bucket", loc)
		}
		return Location{Scheme: "s3", Bucket: u.Host, Path: strings.Trim(u.Path, "/")}, nil
	}
	return Location{}, fmt.Errorf("table location %q: scheme %q is not file or s3", loc, u.Scheme)
}

// Open returns the store of a table location; s3api serves s3:// locations (nil when none is
// configured).
func Open(loc string, s3api S3API) (Store, error) {
	l, err := ParseLocation(loc)
	if err != nil {
		return nil, err
	}
	if l.Scheme == "s3" {
		if s3api == nil {
			return nil, fmt.Errorf("table location %q: no S3 client configured", loc)
		}
		return NewS3(s3api, l.Bucket, l.Path), nil
	}
	return NewLocal(l.Path)
}
