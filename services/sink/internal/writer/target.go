package writer

import "context"

// TableWriter is what the sink's pipeline drives: one table's batches, each change once, written
// to Delta directly (this package's Writer, adapted by pipeline.Direct) or through a SQL
// warehouse (package warehouse).
type TableWriter interface {
	// Load reads what the table holds. assigned are the topic-partitions feeding it that were
	// just assigned to this replica (every assigned one after a failed batch): a writer whose
	// last batch for a partition may be in doubt settles it here.
	Load(ctx context.Context, assigned map[string][]int32) error
	// NextOffset is one past the last offset of the topic-partition the table holds, or -1.
	NextOffset(topic string, partition int32) int64
	// Write applies changes as one batch; reject receives those that cannot be mapped, before
	// the batch is committed.
	Write(ctx context.Context, changes []Change, reject func([]Rejected) error) (Result, error)
	// Revoke tells the writer that partitions were taken from this replica.
	Revoke(parts map[string][]int32)
	// Close finishes background work (a checkpoint being written).
	Close()
}
