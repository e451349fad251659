package warehouse

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

// Registered writes a table directly (its TableWriter) and registers it in Unity Catalog as an
// external table over its location, with its lineage, through the warehouse: after its first
// commit (the events tell the source table and stream), and again when the lineage changes (a
// stream enabled again has a new ARN). Registration runs in the background: the table's data
// never waits for the catalog, and a registration that fails is logged and tried again after
// the next commit.
type Registered struct {
	writer.TableWriter
	name     string // the sink's table name
	id       Ident
	location string // the table's location as the warehouse names it (s3://…)
	c        *conn
	log      *slog.Logger

	mu      sync.Mutex
	lineage Lineage
	done    bool // registered with the current lineage
	running bool
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// Register wraps the writer of a table at location so that it is registered as id.
func Register(w writer.TableWriter, name string, id Ident, location string, topics []string, mode string, db *sql.DB, log *slog.Logger) *Registered {
	return &Registered{TableWriter: w, name: name, id: id, location: location, log: log,
		c: &conn{db: db, table: name, log: log, conflictRetries: 20}, lineage: Lineage{Mode: mode, Topics: topics}}
}

// Write implements pipeline.TableWriter.
func (r *Registered) Write(ctx context.Context, changes []writer.Change, reject func([]writer.Rejected) error) (writer.Result, error) {
	res, err := r.TableWriter.Write(ctx, changes, reject)
	if err != nil || res.Version < 0 {
		return res, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range changes {
		r.lineage.observe(ch.Event)
	}
	if (!r.done || r.lineage.changed) && !r.running {
		r.running = true
		bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r.stop = cancel
		r.wg.Go(func() {
			defer cancel()
			err := r.Sync(bg)
			if err != nil && bg.Err() == nil {
				r.log.Warn("registering the table in the catalog failed; trying again after the next commit", "table", r.name, "name", r.id.String(), "error", err)
			}
			r.mu.Lock()
			r.running = false
			r.mu.Unlock()
		})
	}
	return res, nil
}

// Close stops a registration in progress and closes the writer.
func (r *Registered) Close() {
	r.mu.Lock()
	if r.stop != nil {
		r.stop()
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.TableWriter.Close()
}

// busy reports whether a registration is running.
func (r *Registered) busy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

// Sync registers the table (idempotent) and brings its comment and lineage properties up to
// date. CREATE TABLE … LOCATION takes no properties here: over an existing Delta table they
// would have to equal the table's own. They are set afterwards, only when they differ (each
// setting is a commit to the table), and only when the name is this table's: a name already
// taken by a table elsewhere is an error, not a table to label.
func (r *Registered) Sync(ctx context.Context) error {
	r.mu.Lock()
	lin := r.lineage
	lin.Topics = slices.Clone(lin.Topics)
	r.mu.Unlock()
	if err := r.c.exec(ctx, "registering "+r.id.String(), "CREATE TABLE IF NOT EXISTS "+r.id.SQL()+" USING DELTA LOCATION "+quoteString(r.location)); err != nil {
		return err
	}
	var loc string
	err := r.c.query(ctx, "describing "+r.id.String(), "DESCRIBE DETAIL "+r.id.SQL(), func(rows *sql.Rows) error {
		cols, err := rows.Columns()
		if err != nil {
			return err
		}
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		if i := slices.Index(cols, "location"); i >= 0 {
			loc = vals[i].String
		}
		return nil
	})
	if err != nil {
		return err
	}
	if sameLocation(loc, r.location) != nil {
		return fmt.Errorf("table %s: %s is already a table at %s, not this table at %s: choose another databricks_table", r.name, r.id, loc, r.location)
	}
	props := map[string]string{}
	err = r.c.query(ctx, "reading the properties of "+r.id.String(), "SHOW TBLPROPERTIES "+r.id.SQL(), func(rows *sql.Rows) error {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		props[k] = v
		return nil
	})
	if err != nil {
		return err
	}
	want := lin.Properties()
	delete(want, PropMode) // the sink wrote it when it created the table
	if !subset(want, props) {
		if err := r.c.exec(ctx, "setting the lineage of "+r.id.String(), setProperties(r.id, want)); err != nil {
			return err
		}
		if err := r.c.exec(ctx, "commenting "+r.id.String(), "COMMENT ON TABLE "+r.id.SQL()+" IS "+quoteString(lin.Comment())); err != nil {
			return err
		}
	}
	r.mu.Lock()
	if !r.done {
		r.log.Info("table registered in the catalog", "table", r.name, "name", r.id.String(), "location", r.location, "lineage", want)
	}
	// Registered with lin; a change observed meanwhile is registered after the next commit.
	r.done = true
	r.lineage.changed = r.lineage.StreamARN != lin.StreamARN || r.lineage.TableARN != lin.TableARN || r.lineage.Table != lin.Table
	r.mu.Unlock()
	return nil
}

// sameLocation reports (as an error) whether two table locations differ: s3a:// and s3:// name
// the same objects, and a trailing slash does not matter.
func sameLocation(a, b string) error {
	norm := func(s string) string {
		s = strings.TrimSuffix(s, "/")
		if rest, ok := strings.CutPrefix(s, "s3a://"); ok {
			s = "s3://" + rest
		}
		if rest, ok := strings.CutPrefix(s, "file:///"); ok {
			s = "file:/" + rest
		}
		return s
	}
	if norm(a) != norm(b) {
		return fmt.Errorf("%s is not %s", a, b)
	}
	return nil
}
