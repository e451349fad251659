package warehouse

import (
	"context"
	"database/sql"
	"log/slog"
	"maps"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

// TableWriter is what the pipeline drives (pipeline.TableWriter, restated to keep this package
// free of the pipeline).
type TableWriter interface {
	Load(ctx context.Context, assigned map[string][]int32) error
	NextOffset(topic string, partition int32) int64
	Write(ctx context.Context, changes []writer.Change, reject func([]writer.Rejected) error) (writer.Result, error)
	Close()
}

// Registered writes a table directly (its TableWriter) and registers it in Unity Catalog as an
// external table over its location, with its lineage, through the warehouse: after its first
// commit (the events tell the source table and stream), and again when the lineage changes (a
// stream enabled again has a new ARN). A registration that fails is logged and tried again after
// the next commit: the table's data does not wait for the catalog.
type Registered struct {
	TableWriter
	name     string // the sink's table name
	id       Ident
	location string // the table's location as the warehouse names it (s3://…)
	c        *conn
	log      *slog.Logger
	lineage  Lineage
	done     bool
}

// Register wraps the writer of a table at location so that it is registered as id.
func Register(w TableWriter, name string, id Ident, location string, topics []string, mode string, db *sql.DB, log *slog.Logger) *Registered {
	return &Registered{TableWriter: w, name: name, id: id, location: location, log: log,
		c: &conn{db: db, table: name, log: log, conflictRetries: 20}, lineage: Lineage{Mode: mode, Topics: topics}}
}

// Write implements pipeline.TableWriter.
func (r *Registered) Write(ctx context.Context, changes []writer.Change, reject func([]writer.Rejected) error) (writer.Result, error) {
	res, err := r.TableWriter.Write(ctx, changes, reject)
	if err != nil || res.Version < 0 {
		return res, err
	}
	for _, ch := range changes {
		r.lineage.observe(ch.Event)
	}
	if !r.done || r.lineage.changed {
		if err := r.Sync(ctx); err != nil {
			r.log.Warn("registering the table in the catalog failed; trying again after the next commit", "table", r.name, "name", r.id.String(), "error", err)
		}
	}
	return res, nil
}

// Sync registers the table (idempotent) and brings its comment and lineage properties up to
// date. CREATE TABLE … LOCATION takes no properties here: over an existing Delta table they
// would have to equal the table's own; they are set afterwards, and only when they differ (each
// setting is a commit to the table).
func (r *Registered) Sync(ctx context.Context) error {
	if err := r.c.exec(ctx, "registering "+r.id.String(), "CREATE TABLE IF NOT EXISTS "+r.id.SQL()+" USING DELTA LOCATION "+quoteString(r.location)); err != nil {
		return err
	}
	props := map[string]string{}
	err := r.c.query(ctx, "reading the properties of "+r.id.String(), "SHOW TBLPROPERTIES "+r.id.SQL(), func(rows *sql.Rows) error {
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
	want := r.lineage.Properties()
	delete(want, PropMode) // the sink wrote it when it created the table
	if !subset(want, props) {
		if err := r.c.exec(ctx, "setting the lineage of "+r.id.String(), setProperties(r.id, want)); err != nil {
			return err
		}
		if err := r.c.exec(ctx, "commenting "+r.id.String(), "COMMENT ON TABLE "+r.id.SQL()+" IS "+quoteString(r.lineage.Comment())); err != nil {
			return err
		}
	}
	if !r.done {
		r.log.Info("table registered in the catalog", "table", r.name, "name", r.id.String(), "location", r.location, "lineage", maps.Collect(maps.All(want)))
	}
	r.done, r.lineage.changed = true, false
	return nil
}
