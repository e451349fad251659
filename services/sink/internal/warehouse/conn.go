package warehouse

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/backoff"
)

// SQLSTATEs the warehouse target acts on.
const (
	// StateConflict is Delta's concurrent-modification class (DELTA_CONCURRENT_APPEND,
	// DELTA_CONCURRENT_DELETE_READ, DELTA_METADATA_CHANGED, …): the statement did not commit;
	// running it again on the new version is correct.
	StateConflict = "2D521"
	// StateNotFound: the table or view does not exist.
	StateNotFound = "42P01"
	// StateExists: the table or view exists already.
	StateExists = "42P07"
)

// StatementError is a statement the warehouse refused or that failed: it names the table and
// what the sink was doing, and keeps the SQLSTATE the warehouse returned.
type StatementError struct {
	Table    string // the sink's table name
	What     string // what the statement was for
	SQLState string // "" when the driver carried none (a network error)
	Err      error
}

func (e *StatementError) Error() string {
	msg := "table " + e.Table + ": " + e.What
	if e.SQLState != "" {
		msg += " (SQLSTATE " + e.SQLState + ")"
	}
	return msg + ": " + e.Err.Error()
}

func (e *StatementError) Unwrap() error { return e.Err }

// SQLState returns the SQLSTATE an error carries (the driver's execution errors have one), or "".
func SQLState(err error) string {
	var se *StatementError
	if errors.As(err, &se) && se.SQLState != "" {
		return se.SQLState
	}
	var st interface{ SqlState() string }
	if errors.As(err, &st) {
		return st.SqlState()
	}
	return ""
}

// conn runs the sink's statements on a warehouse.
type conn struct {
	db    *sql.DB
	table string // for errors and logs
	log   *slog.Logger
	// conflictRetries bounds how often a statement is run again after a concurrent-write
	// conflict.
	conflictRetries int
}

// exec runs a statement, again after a concurrent-write conflict, and returns a StatementError.
// With scan, the statement's result (a MERGE's counts) is read: scan gets its first row.
func (c *conn) exec(ctx context.Context, what, q string, scan ...func(*sql.Rows) error) error {
	b := backoff.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ; attempt++ {
		err := c.run(ctx, q, scan)
		if err == nil {
			return nil
		}
		st := SQLState(err)
		if st != StateConflict || attempt >= c.conflictRetries || ctx.Err() != nil {
			return &StatementError{Table: c.table, What: what, SQLState: st, Err: err}
		}
		c.log.Info("concurrent write to the table; running the statement again", "table", c.table, "what", what, "attempt", attempt+1)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return ctx.Err()
		}
	}
}

func (c *conn) run(ctx context.Context, q string, scan []func(*sql.Rows) error) error {
	if len(scan) == 0 {
		_, err := c.db.ExecContext(ctx, q)
		return err
	}
	rows, err := c.db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	if rows.Next() {
		if err := scan[0](rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// affectedRows scans a DML statement's num_affected_rows column (Spark and Databricks answer a
// MERGE with num_affected_rows, num_updated_rows, num_deleted_rows, num_inserted_rows).
func affectedRows(n *int64) func(*sql.Rows) error {
	return func(r *sql.Rows) error {
		cols, err := r.Columns()
		if err != nil {
			return err
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := r.Scan(ptrs...); err != nil {
			return err
		}
		for i, c := range cols {
			if c == "num_affected_rows" {
				switch v := vals[i].(type) {
				case int64:
					*n = v
				case int32:
					*n = int64(v)
				default:
					return fmt.Errorf("num_affected_rows is %T", v)
				}
				return nil
			}
		}
		return fmt.Errorf("the statement's result has no num_affected_rows column (columns %v)", cols)
	}
}

// query runs a query and gives each row to scan.
func (c *conn) query(ctx context.Context, what, q string, scan func(*sql.Rows) error, args ...any) error {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return &StatementError{Table: c.table, What: what, SQLState: SQLState(err), Err: err}
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return &StatementError{Table: c.table, What: what, Err: err}
		}
	}
	if err := rows.Err(); err != nil {
		return &StatementError{Table: c.table, What: what, SQLState: SQLState(err), Err: err}
	}
	return nil
}

// alreadyExists reports whether an ALTER TABLE ADD COLUMNS failed because the column is there
// (another replica added it first): Spark's FIELDS_ALREADY_EXISTS (42710) and Delta's
// DELTA_DUPLICATE_COLUMNS_FOUND (42711).
func alreadyExists(err error) bool {
	st := SQLState(err)
	return st == "42710" || st == "42711" || (st == "" && strings.Contains(strings.ToLower(err.Error()), "already exists"))
}
