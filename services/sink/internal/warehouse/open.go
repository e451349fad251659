package warehouse

import (
	"database/sql"
	"fmt"
	"time"

	dbsql "github.com/databricks/databricks-sql-go"
	dbsqllog "github.com/databricks/databricks-sql-go/logger"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/warehouse/hs2"
)

// Conn is how to reach a warehouse.
type Conn struct {
	Host     string // host name; http://host for a test server without TLS
	Port     int
	HTTPPath string
	Token    string // never logged
	Timeout  time.Duration
	// Spark: the server is Apache Spark's Thrift server (HTTP mode, authentication NONE), which
	// needs the adjustments of package hs2.
	Spark bool
}

// Open returns a pool of warehouse sessions. Nothing is sent until the first statement.
func Open(c Conn) (*sql.DB, error) {
	// The driver logs every failed statement itself, at error level; the sink logs its own
	// errors, which name the table and keep the SQLSTATE.
	_ = dbsqllog.SetLogLevel("disabled")
	opts := []dbsql.ConnOption{
		dbsql.WithServerHostname(c.Host), dbsql.WithPort(c.Port), dbsql.WithHTTPPath(c.HTTPPath),
		dbsql.WithAccessToken(c.Token), dbsql.WithUserAgentEntry("ddb2delta-sink"),
	}
	if c.Timeout > 0 {
		opts = append(opts, dbsql.WithTimeout(c.Timeout))
	}
	if c.Spark {
		opts = append(opts, dbsql.WithTransport(&hs2.Transport{}))
	}
	conn, err := dbsql.NewConnector(opts...)
	if err != nil {
		return nil, fmt.Errorf("databricks connection to %s%s: %w", c.Host, c.HTTPPath, err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(10 * time.Minute)
	return db, nil
}
