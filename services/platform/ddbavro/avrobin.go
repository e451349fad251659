package ddbavro

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Avro binary encoding primitives. Avro's zig-zag varints are Go's binary varints.

// ErrMalformed is wrapped by every error about Avro bytes that do not match their schema.
var ErrMalformed = errors.New("malformed avro data")

func appendLong(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

func appendBytes(b, v []byte) []byte {
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// reader decodes Avro binary from a byte slice. The first error sticks: later reads return zero
// values, and err reports where decoding failed.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w at byte %d: %s", ErrMalformed, r.off, fmt.Sprintf(format, args...))
	}
}

func (r *reader) long() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.off += n
	return v
}

// length reads a length or count and checks it against the bytes left: every value our schemas
// put in a sequence takes at least one byte, so a larger count is corrupt (and would otherwise let
// a few bytes request a huge allocation).
func (r *reader) length() int {
	n := r.long()
	if n < 0 || n > int64(len(r.b)-r.off) {
		r.fail("length %d with %d bytes left", n, len(r.b)-r.off)
		return 0
	}
	return int(n)
}

func (r *reader) fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b)-r.off {
		r.fail("need %d bytes, %d left", n, len(r.b)-r.off)
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *reader) bytes() []byte {
	v := r.fixed(r.length())
	out := make([]byte, len(v)) // a copy: the input buffer may be reused; empty stays non-nil
	copy(out, v)
	return out
}

func (r *reader) str() string { return string(r.fixed(r.length())) }

func (r *reader) boolean() bool {
	v := r.fixed(1)
	if v == nil {
		return false
	}
	if v[0] > 1 {
		r.fail("boolean byte %d", v[0])
	}
	return v[0] == 1
}

// blockCount reads the item count of an array or map block; a negative count is followed by the
// block's size in bytes, which is skipped over (we read items one by one).
func (r *reader) blockCount() int {
	n := r.long()
	if n < 0 {
		n = -n
		r.long()
	}
	if n < 0 || n > int64(len(r.b)-r.off) {
		r.fail("block of %d items with %d bytes left", n, len(r.b)-r.off)
		return 0
	}
	return int(n)
}

// unionIndex reads a union branch index and checks it against the number of branches.
func (r *reader) unionIndex(branches int) int {
	i := r.long()
	if i < 0 || i >= int64(branches) {
		r.fail("union branch %d of %d", i, branches)
		return 0
	}
	return int(i)
}
