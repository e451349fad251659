// Package globaltable materializes compacted topics of change events into a local Pebble store:
// for each key, the newest item. Every replica reads every partition (a global table), so a
// table join never needs the event and the item to be co-partitioned.
//
// The store keeps, in the same atomic batch as the items a fetch brought, the next offset of
// every partition it applied. A restart therefore resumes where the store left off instead of
// reading the topic from its start; a store whose topic was deleted and created again (a new
// topic id) is cleared and read afresh.
package globaltable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
)

// Store is one Pebble database holding every global table of a process.
type Store struct {
	db *pebble.DB
}

// Open opens (creating when missing) the store in dir. Pebble's own errors are logged to log.
func Open(dir string, log *slog.Logger) (*Store, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log.With("component", "pebble")}})
	if err != nil {
		return nil, fmt.Errorf("opening the state store in %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// DiskBytes is the space the store uses.
func (s *Store) DiskBytes() uint64 { return s.db.Metrics().DiskSpaceUsage() }

// Keys of one table: "d/<table>/<item key>" items, "o/<table>/<partition>" next offsets (8
// bytes, big endian), "m/<table>/<name>" metadata (topic id, key attribute names, entry count).
func itemKey(table string, key []byte) []byte { return append([]byte("d/"+table+"/"), key...) }
func offsetKey(table string, p int32) []byte {
	return binary.BigEndian.AppendUint32([]byte("o/"+table+"/"), uint32(p))
}
func metaKey(table, name string) []byte { return []byte("m/" + table + "/" + name) }

func (s *Store) get(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// offsets returns the stored next offset of every partition of table.
func (s *Store) offsets(table string) (map[int32]int64, error) {
	prefix := []byte("o/" + table + "/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[int32]int64{}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[len(prefix):]
		if len(k) != 4 || len(it.Value()) != 8 {
			return nil, fmt.Errorf("state store: malformed offset entry %q", it.Key())
		}
		out[int32(binary.BigEndian.Uint32(k))] = int64(binary.BigEndian.Uint64(it.Value()))
	}
	return out, it.Error()
}

// clear removes every entry of table.
func (s *Store) clear(table string) error {
	b := s.db.NewBatch()
	for _, p := range []string{"d/", "o/", "m/"} {
		prefix := []byte(p + table + "/")
		if err := b.DeleteRange(prefix, upper(prefix), nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// upper is the least key greater than every key starting with prefix.
func upper(prefix []byte) []byte {
	u := append([]byte(nil), prefix...)
	u[len(u)-1]++ // prefixes end in '/', never 0xff
	return u
}

// pebbleLogger keeps Pebble's informational chatter out of the service's log.
type pebbleLogger struct{ log *slog.Logger }

func (pebbleLogger) Infof(string, ...any) {}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}
