// Package delta is ddb2delta's implementation of the Delta Lake transaction protocol
// (delta-io/delta PROTOCOL.md): reader version 1 / writer version 2 tables (metaData with schema
// evolution, add/remove with statistics, txn for idempotent writes, commitInfo, Parquet
// checkpoints), which every Delta reader since 2019 reads, and reader 3 / writer 7 tables with the
// deletionVectors feature (dv.go), which mirrors use to update rows without rewriting files.
//
// A table is a directory (or S3 prefix) holding Parquet data files and _delta_log/, whose
// %020d.json files are the commits, each a list of actions, one JSON object per line. A commit
// becomes version N by being created as _delta_log/N.json with put-if-absent: of two writers of
// the same version exactly one succeeds; the other re-reads the log, checks the winner's commit
// for conflicts with its own, and retries at the next version.
package delta

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
)

// Protocol is the protocol action.
type Protocol struct {
	MinReaderVersion int      `json:"minReaderVersion"`
	MinWriterVersion int      `json:"minWriterVersion"`
	ReaderFeatures   []string `json:"readerFeatures,omitempty"`
	WriterFeatures   []string `json:"writerFeatures,omitempty"`
}

// Format is the data file format of a table.
type Format struct {
	Provider string            `json:"provider"`
	Options  map[string]string `json:"options"`
}

// Metadata is the metaData action: the table's id, schema, partitioning and configuration.
type Metadata struct {
	ID               string            `json:"id"`
	Name             string            `json:"name,omitempty"`
	Description      string            `json:"description,omitempty"`
	Format           Format            `json:"format"`
	SchemaString     string            `json:"schemaString"`
	PartitionColumns []string          `json:"partitionColumns"`
	Configuration    map[string]string `json:"configuration"`
	CreatedTime      int64             `json:"createdTime,omitempty"`
}

// Schema parses the metadata's schema.
func (m *Metadata) Schema() (*deltatype.StructType, error) {
	var s deltatype.StructType
	if err := json.Unmarshal([]byte(m.SchemaString), &s); err != nil {
		return nil, fmt.Errorf("table schema: %w", err)
	}
	return &s, nil
}

// Add is the add action: a data file that is part of the table.
type Add struct {
	Path             string            `json:"path"`
	PartitionValues  map[string]string `json:"partitionValues"`
	Size             int64             `json:"size"`
	ModificationTime int64             `json:"modificationTime"`
	DataChange       bool              `json:"dataChange"`
	Stats            string            `json:"stats,omitempty"`
	Tags             map[string]string `json:"tags,omitempty"`
	DeletionVector   *DeletionVector   `json:"deletionVector,omitempty"`
}

// Remove is the remove action: a data file that is no longer part of the table.
type Remove struct {
	Path                 string            `json:"path"`
	DeletionTimestamp    int64             `json:"deletionTimestamp"`
	DataChange           bool              `json:"dataChange"`
	ExtendedFileMetadata bool              `json:"extendedFileMetadata"`
	PartitionValues      map[string]string `json:"partitionValues"`
	Size                 int64             `json:"size"`
	Tags                 map[string]string `json:"tags,omitempty"`
	DeletionVector       *DeletionVector   `json:"deletionVector,omitempty"`
}

// RemoveOf returns the remove action of a live file (with its deletion vector, so that log
// replay removes exactly that version of it) at deletion time now.
func RemoveOf(a *Add, now int64, dataChange bool) Action {
	pv := a.PartitionValues
	if pv == nil {
		pv = map[string]string{}
	}
	return Action{Remove: &Remove{Path: a.Path, DeletionTimestamp: now, DataChange: dataChange, ExtendedFileMetadata: true,
		PartitionValues: pv, Size: a.Size, Tags: a.Tags, DeletionVector: a.DeletionVector}}
}

// Txn is the txn action: the latest version of an application's idempotent writes. The sink
// uses one app id per table and Kafka topic-partition, with the last offset written as version.
type Txn struct {
	AppID       string `json:"appId"`
	Version     int64  `json:"version"`
	LastUpdated int64  `json:"lastUpdated,omitempty"`
}

// CDC is the cdc action: a change data file (_change_data/) holding the row-level changes of the
// commit, with their _change_type, for readers of the change data feed.
type CDC struct {
	Path            string            `json:"path"`
	PartitionValues map[string]string `json:"partitionValues"`
	Size            int64             `json:"size"`
	DataChange      bool              `json:"dataChange"`
	Tags            map[string]string `json:"tags,omitempty"`
}

// Action is one line of a commit: exactly one field is set.
type Action struct {
	Protocol   *Protocol      `json:"protocol,omitempty"`
	MetaData   *Metadata      `json:"metaData,omitempty"`
	Add        *Add           `json:"add,omitempty"`
	Remove     *Remove        `json:"remove,omitempty"`
	CDC        *CDC           `json:"cdc,omitempty"`
	Txn        *Txn           `json:"txn,omitempty"`
	CommitInfo map[string]any `json:"commitInfo,omitempty"`
}

// EncodeCommit renders actions as a commit file: one JSON object per line. Partition values are
// always present in add and remove actions, {} for none (the protocol requires them in adds and
// in removes with extended file metadata).
func EncodeCommit(actions []Action) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for _, a := range actions {
		if a.Add != nil && a.Add.PartitionValues == nil {
			c := *a.Add
			c.PartitionValues, a.Add = map[string]string{}, &c
		}
		if a.Remove != nil && a.Remove.PartitionValues == nil {
			c := *a.Remove
			c.PartitionValues, a.Remove = map[string]string{}, &c
		}
		if a.CDC != nil && a.CDC.PartitionValues == nil {
			c := *a.CDC
			c.PartitionValues, a.CDC = map[string]string{}, &c
		}
		if err := enc.Encode(a); err != nil {
			return nil, fmt.Errorf("encoding action: %w", err)
		}
	}
	return b.Bytes(), nil
}

// DecodeCommit parses a commit file. Actions this package does not know (domainMetadata, …)
// are skipped; a table needing them would declare a protocol version this package refuses.
func DecodeCommit(data []byte) ([]Action, error) {
	var out []Action
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 256*1024*1024)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var a Action
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, a)
	}
	return out, sc.Err()
}

// NewID returns a random (version 4) UUID: table ids and commit ids.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// NewFileName returns a new, unique data file path, under dir (a partition directory) when set.
func NewFileName(dir string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	name := "part-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:]) + ".zstd.parquet"
	if dir != "" {
		return dir + "/" + name
	}
	return name
}
