package warehouse

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/databricks/databricks-sql-go/driverctx"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// Stager holds the staged batch files of one table where the warehouse reads them.
type Stager interface {
	// Put stores a file, replacing one of the same name.
	Put(ctx context.Context, name string, data []byte) error
	// Get returns a file's bytes.
	Get(ctx context.Context, name string) ([]byte, error)
	// List returns the staged files.
	List(ctx context.Context) ([]storage.Object, error)
	// Delete removes a file; a missing file is not an error.
	Delete(ctx context.Context, name string) error
	// Path is a file's location as the warehouse reads it.
	Path(name string) string
	// Dir is the staging directory as the warehouse reads it (COPY INTO … FROM).
	Dir() string
}

// IsVolume reports whether a staging location is a Unity Catalog volume path.
func IsVolume(loc string) bool { return strings.HasPrefix(loc, "/Volumes/") }

// StoreStager stages files in an object store or directory the warehouse reads directly: an S3
// prefix (Databricks reads it through an external location) or, for a warehouse on the same
// machine (a local Spark), a directory.
type StoreStager struct {
	Store storage.Store
	URL   string // the store's root as the warehouse names it: s3://bucket/prefix or file:///dir
}

func (s StoreStager) Put(ctx context.Context, name string, data []byte) error {
	return s.Store.Write(ctx, name, data)
}
func (s StoreStager) Get(ctx context.Context, name string) ([]byte, error) {
	return s.Store.Read(ctx, name)
}
func (s StoreStager) List(ctx context.Context) ([]storage.Object, error) {
	return s.Store.List(ctx, "", "")
}
func (s StoreStager) Delete(ctx context.Context, name string) error { return s.Store.Delete(ctx, name) }
func (s StoreStager) Path(name string) string                       { return strings.TrimSuffix(s.URL, "/") + "/" + name }
func (s StoreStager) Dir() string                                   { return strings.TrimSuffix(s.URL, "/") }

// VolumeStager stages files in a Unity Catalog volume through the driver's staging commands
// (PUT, GET, REMOVE, and LIST for the listing): the sink needs no storage credentials, only the
// WRITE VOLUME privilege. Files pass through a local directory.
type VolumeStager struct {
	DB    *sql.DB
	Dir_  string // /Volumes/<catalog>/<schema>/<volume>/<prefix>
	Local string // local directory the driver may read and write (default: the OS temp dir)
}

func (v VolumeStager) local() (string, error) {
	dir := v.Local
	if dir == "" {
		dir = os.TempDir()
	}
	return os.MkdirTemp(dir, "ddb2delta-stage-")
}

func (v VolumeStager) Put(ctx context.Context, name string, data []byte) error {
	dir, err := v.local()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, data, 0o600); err != nil {
		return err
	}
	_, err = v.DB.ExecContext(driverctx.NewContextWithStagingInfo(ctx, []string{dir}),
		"PUT "+quoteString(f)+" INTO "+quoteString(v.Path(name))+" OVERWRITE")
	return err
}

func (v VolumeStager) Get(ctx context.Context, name string) ([]byte, error) {
	dir, err := v.local()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, name)
	if _, err := v.DB.ExecContext(driverctx.NewContextWithStagingInfo(ctx, []string{dir}),
		"GET "+quoteString(v.Path(name))+" TO "+quoteString(f)); err != nil {
		return nil, err
	}
	return os.ReadFile(f)
}

func (v VolumeStager) List(ctx context.Context) ([]storage.Object, error) {
	rows, err := v.DB.QueryContext(ctx, "LIST "+quoteString(v.Dir()+"/"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []storage.Object
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		var o storage.Object
		for i, c := range cols {
			switch c { // LIST's columns: path, name, size, modification_time (ms)
			case "name":
				o.Name = strings.TrimSuffix(fmt.Sprint(vals[i]), "/")
			case "size":
				fmt.Sscan(fmt.Sprint(vals[i]), &o.Size)
			case "modification_time":
				var ms int64
				if _, err := fmt.Sscan(fmt.Sprint(vals[i]), &ms); err == nil && ms > 0 {
					o.Modified = time.UnixMilli(ms)
				}
			}
		}
		if o.Modified.IsZero() {
			o.Modified = time.Now() // unknown age: young, never swept
		}
		if o.Name != "" {
			out = append(out, o)
		}
	}
	return out, rows.Err()
}

func (v VolumeStager) Delete(ctx context.Context, name string) error {
	_, err := v.DB.ExecContext(driverctx.NewContextWithStagingInfo(ctx, []string{os.TempDir()}), "REMOVE "+quoteString(v.Path(name)))
	return err
}

func (v VolumeStager) Path(name string) string { return v.Dir() + "/" + name }
func (v VolumeStager) Dir() string             { return strings.TrimSuffix(v.Dir_, "/") }
