package delta

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// CheckpointName is the name of version v's (single-file) checkpoint.
func CheckpointName(v int64) string { return fmt.Sprintf("%s%020d.checkpoint.parquet", LogDir, v) }

func mapType() deltatype.DataType {
	return deltatype.DataType{Map: &deltatype.MapType{Key: deltatype.String, Value: deltatype.String, ValueContainsNull: true}}
}

func f(name string, t deltatype.DataType) deltatype.StructField {
	return deltatype.StructField{Name: name, Type: t, Nullable: true}
}

// checkpointSchema is the schema of a checkpoint file (PROTOCOL.md, "Checkpoint Schema"): one
// column per action type, each row holding one action.
var checkpointSchema = &deltatype.StructType{Fields: []deltatype.StructField{
	f("txn", deltatype.StructOf(f("appId", deltatype.String), f("version", deltatype.Long), f("lastUpdated", deltatype.Long))),
	f("add", deltatype.StructOf(f("path", deltatype.String), f("partitionValues", mapType()), f("size", deltatype.Long),
		f("modificationTime", deltatype.Long), f("dataChange", deltatype.Boolean), f("stats", deltatype.String), f("tags", mapType()),
		f("deletionVector", dvType))),
	f("remove", deltatype.StructOf(f("path", deltatype.String), f("deletionTimestamp", deltatype.Long), f("dataChange", deltatype.Boolean),
		f("extendedFileMetadata", deltatype.Boolean), f("partitionValues", mapType()), f("size", deltatype.Long), f("deletionVector", dvType))),
	f("metaData", deltatype.StructOf(f("id", deltatype.String), f("name", deltatype.String), f("description", deltatype.String),
		f("format", deltatype.StructOf(f("provider", deltatype.String), f("options", mapType()))), f("schemaString", deltatype.String),
		f("partitionColumns", deltatype.ArrayOf(deltatype.String)), f("configuration", mapType()), f("createdTime", deltatype.Long))),
	f("protocol", deltatype.StructOf(f("minReaderVersion", deltatype.Integer), f("minWriterVersion", deltatype.Integer),
		f("readerFeatures", deltatype.ArrayOf(deltatype.String)), f("writerFeatures", deltatype.ArrayOf(deltatype.String)))),
}}

// dvType is the checkpoint type of a deletion vector descriptor.
var dvType = deltatype.StructOf(f("storageType", deltatype.String), f("pathOrInlineDv", deltatype.String), f("offset", deltatype.Integer),
	f("sizeInBytes", deltatype.Integer), f("cardinality", deltatype.Long), f("maxRowIndex", deltatype.Long))

// dvRow renders a deletion vector descriptor for a checkpoint (nil for none).
func dvRow(d *DeletionVector) any {
	if d == nil {
		return nil
	}
	m := map[string]any{"storageType": d.StorageType, "pathOrInlineDv": d.PathOrInlineDv, "sizeInBytes": d.SizeInBytes, "cardinality": d.Cardinality}
	if d.Offset != nil {
		m["offset"] = *d.Offset
	}
	if d.MaxRowIndex != nil {
		m["maxRowIndex"] = *d.MaxRowIndex
	}
	return m
}

// dvOf parses a checkpoint's deletion vector descriptor.
func dvOf(v any) *DeletionVector {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	d := &DeletionVector{StorageType: str(m["storageType"]), PathOrInlineDv: str(m["pathOrInlineDv"]), SizeInBytes: i32(m["sizeInBytes"]), Cardinality: i64(m["cardinality"])}
	if o, ok := m["offset"].(int32); ok {
		d.Offset = &o
	}
	if x, ok := m["maxRowIndex"].(int64); ok {
		d.MaxRowIndex = &x
	}
	return d
}

// strList renders a string list for a checkpoint (nil for none).
func strList(l []string) any {
	if l == nil {
		return nil
	}
	out := make([]any, len(l))
	for i, s := range l {
		out[i] = s
	}
	return out
}

// listOf parses a checkpoint's string list.
func listOf(v any) []string {
	l, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, str(x))
	}
	return out
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func optString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// WriteCheckpoint writes snap as a checkpoint at its version and points _last_checkpoint at it.
// A checkpoint only summarises commits that exist, so writing one twice (two writers) is
// harmless: both have the same content.
func (t *Table) WriteCheckpoint(ctx context.Context, snap *Snapshot) error {
	var rows []parquetio.Row
	rows = append(rows, parquetio.Row{"protocol": map[string]any{
		"minReaderVersion": int32(snap.Protocol.MinReaderVersion), "minWriterVersion": int32(snap.Protocol.MinWriterVersion),
		"readerFeatures": strList(snap.Protocol.ReaderFeatures), "writerFeatures": strList(snap.Protocol.WriterFeatures)}})
	m := snap.Metadata
	cols := make([]any, len(m.PartitionColumns))
	for i, c := range m.PartitionColumns {
		cols[i] = c
	}
	rows = append(rows, parquetio.Row{"metaData": map[string]any{
		"id": m.ID, "name": optString(m.Name), "description": optString(m.Description),
		"format":       map[string]any{"provider": m.Format.Provider, "options": orEmpty(m.Format.Options)},
		"schemaString": m.SchemaString, "partitionColumns": cols, "configuration": orEmpty(m.Configuration), "createdTime": m.CreatedTime}})
	apps := make([]string, 0, len(snap.Txns))
	for a := range snap.Txns {
		apps = append(apps, a)
	}
	sort.Strings(apps)
	for _, a := range apps {
		x := snap.Txns[a]
		rows = append(rows, parquetio.Row{"txn": map[string]any{"appId": x.AppID, "version": x.Version, "lastUpdated": x.LastUpdated}})
	}
	for _, p := range sortedKeys(snap.Files) {
		a := snap.Files[p]
		rows = append(rows, parquetio.Row{"add": map[string]any{"path": a.Path, "partitionValues": orEmpty(a.PartitionValues), "size": a.Size,
			"modificationTime": a.ModificationTime, "dataChange": false, "stats": optString(a.Stats), "tags": nilIfEmpty(a.Tags),
			"deletionVector": dvRow(a.DeletionVector)}})
	}
	retention := t.tombstoneRetention(snap)
	expired := t.Now().Add(-retention).UnixMilli()
	for _, p := range sortedKeys(snap.Removed) {
		r := snap.Removed[p]
		if retention > 0 && r.DeletionTimestamp < expired {
			continue
		}
		rows = append(rows, parquetio.Row{"remove": map[string]any{"path": r.Path, "deletionTimestamp": r.DeletionTimestamp,
			"dataChange": r.DataChange, "extendedFileMetadata": r.ExtendedFileMetadata, "partitionValues": nilIfEmpty(r.PartitionValues), "size": r.Size,
			"deletionVector": dvRow(r.DeletionVector)}})
	}
	data, _, err := parquetio.Write(checkpointSchema, nil, rows, parquetio.Options{})
	if err != nil {
		return fmt.Errorf("encoding checkpoint %d: %w", snap.Version, err)
	}
	if err := t.Store.Write(ctx, CheckpointName(snap.Version), data); err != nil {
		return err
	}
	lc, _ := json.Marshal(lastCheckpoint{Version: snap.Version, Size: int64(len(rows))})
	return t.Store.Write(ctx, LogDir+"_last_checkpoint", lc)
}

func nilIfEmpty(m map[string]string) any {
	if len(m) == 0 {
		return nil
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readCheckpoint loads the snapshot a checkpoint holds.
func (t *Table) readCheckpoint(ctx context.Context, v int64) (*Snapshot, error) {
	data, err := t.Store.Read(ctx, CheckpointName(v))
	if err != nil {
		return nil, fmt.Errorf("%s: reading checkpoint %d: %w", t.Store.Location(), v, err)
	}
	rows, err := parquetio.Read(data, []string{"txn", "add", "remove", "metaData", "protocol"})
	if err != nil {
		return nil, fmt.Errorf("%s: checkpoint %d: %w", t.Store.Location(), v, err)
	}
	var actions []Action
	for _, r := range rows {
		switch {
		case r["protocol"] != nil:
			p := r["protocol"].(map[string]any)
			actions = append(actions, Action{Protocol: &Protocol{MinReaderVersion: int(i32(p["minReaderVersion"])), MinWriterVersion: int(i32(p["minWriterVersion"])),
				ReaderFeatures: listOf(p["readerFeatures"]), WriterFeatures: listOf(p["writerFeatures"])}})
		case r["metaData"] != nil:
			m := r["metaData"].(map[string]any)
			md := &Metadata{ID: str(m["id"]), Name: str(m["name"]), Description: str(m["description"]), SchemaString: str(m["schemaString"]),
				Configuration: strMap(m["configuration"]), CreatedTime: i64(m["createdTime"]), PartitionColumns: []string{}}
			if fm, ok := m["format"].(map[string]any); ok {
				md.Format = Format{Provider: str(fm["provider"]), Options: strMap(fm["options"])}
			}
			if pc, ok := m["partitionColumns"].([]any); ok {
				for _, c := range pc {
					md.PartitionColumns = append(md.PartitionColumns, str(c))
				}
			}
			actions = append(actions, Action{MetaData: md})
		case r["txn"] != nil:
			x := r["txn"].(map[string]any)
			actions = append(actions, Action{Txn: &Txn{AppID: str(x["appId"]), Version: i64(x["version"]), LastUpdated: i64(x["lastUpdated"])}})
		case r["add"] != nil:
			a := r["add"].(map[string]any)
			actions = append(actions, Action{Add: &Add{Path: str(a["path"]), PartitionValues: strMap(a["partitionValues"]), Size: i64(a["size"]),
				ModificationTime: i64(a["modificationTime"]), DataChange: false, Stats: str(a["stats"]), Tags: strMap(a["tags"]),
				DeletionVector: dvOf(a["deletionVector"])}})
		case r["remove"] != nil:
			x := r["remove"].(map[string]any)
			actions = append(actions, Action{Remove: &Remove{Path: str(x["path"]), DeletionTimestamp: i64(x["deletionTimestamp"]),
				DataChange: b(x["dataChange"]), ExtendedFileMetadata: b(x["extendedFileMetadata"]), PartitionValues: strMap(x["partitionValues"]), Size: i64(x["size"]),
				DeletionVector: dvOf(x["deletionVector"])}})
		}
	}
	snap := Empty()
	if err := snap.apply(v, actions); err != nil {
		return nil, fmt.Errorf("%s: checkpoint %d: %w", t.Store.Location(), v, err)
	}
	if snap.Protocol == nil || snap.Metadata == nil {
		return nil, fmt.Errorf("%s: checkpoint %d has no protocol or metaData", t.Store.Location(), v)
	}
	snap.CheckpointVersion = v
	return snap, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func i64(v any) int64 {
	n, _ := v.(int64)
	return n
}

func i32(v any) int32 {
	n, _ := v.(int32)
	return n
}

func b(v any) bool {
	x, _ := v.(bool)
	return x
}

func strMap(v any) map[string]string {
	m, ok := v.(map[string]string)
	if !ok {
		return map[string]string{}
	}
	return m
}

// ReadRows returns every row of the table's latest version, file by file in path order. It reads
// whole files: meant for tests, tools and small tables.
func ReadRows(ctx context.Context, t *Table) ([]parquetio.Row, error) {
	snap, err := t.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var out []parquetio.Row
	for _, p := range sortedKeys(snap.Files) {
		rows, err := ReadFile(ctx, t.Store, snap.Files[p])
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// ReadFile returns the rows of a live data file, in file order, without those its deletion
// vector deletes. Values of types the sink cannot write back are errors (parquetio.ReadData).
func ReadFile(ctx context.Context, store storage.Store, a *Add) ([]parquetio.Row, error) {
	data, err := store.Read(ctx, a.Path)
	if err != nil {
		return nil, err
	}
	rows, err := parquetio.ReadData(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.Path, err)
	}
	if a.DeletionVector == nil {
		return rows, nil
	}
	dv, err := LoadDV(ctx, store, a.DeletionVector)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.Path, err)
	}
	if m := dv.Maximum(); !dv.IsEmpty() && int(m) >= len(rows) {
		return nil, fmt.Errorf("%s: its deletion vector deletes row %d of %d", a.Path, m, len(rows))
	}
	kept := rows[:0]
	for i, r := range rows {
		if !dv.Contains(uint32(i)) {
			kept = append(kept, r)
		}
	}
	return kept, nil
}
