package delta

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// Deletion vectors (PROTOCOL.md, "Deletion Vectors" and "Deletion Vector Format"): the set of
// rows of a data file that are deleted, so that an update or delete marks rows instead of
// rewriting the file.
//
// A deletion vector is a RoaringBitmapArray (64-bit row indexes: 32-bit Roaring bitmaps keyed by
// the high 32 bits) in its portable serialisation. The sink stores them in
// deletion_vector_<uuid>.bin files at the table's root (storage type "u"), several per file, each
// framed by its size and a CRC-32; it reads those and the inline ("i") ones other writers make.

// DeletionVector is the deletionVector field of add and remove actions: where a file's deletion
// vector is, and how many rows it deletes.
type DeletionVector struct {
	StorageType    string `json:"storageType"`
	PathOrInlineDv string `json:"pathOrInlineDv"`
	Offset         *int32 `json:"offset,omitempty"`
	SizeInBytes    int32  `json:"sizeInBytes"`
	Cardinality    int64  `json:"cardinality"`
	MaxRowIndex    *int64 `json:"maxRowIndex,omitempty"` // read, never written (Spark keeps it out of the log)
}

// Storage types of deletion vectors.
const (
	DVStorageUUID     = "u" // a file named from a UUID, relative to the table
	DVStorageInline   = "i" // the bitmap itself, Z85-encoded
	DVStorageAbsolute = "p" // an absolute path
)

// UniqueID identifies a deletion vector: log replay keys files by path and this id ("" for a
// file without one).
func (d *DeletionVector) UniqueID() string {
	if d == nil {
		return ""
	}
	id := d.StorageType + d.PathOrInlineDv
	if d.Offset != nil {
		id += "@" + strconv.Itoa(int(*d.Offset))
	}
	return id
}

// FileKey is the key of a file's version in log replay: its path and deletion vector id.
func FileKey(path string, d *DeletionVector) string {
	if d == nil {
		return path
	}
	return path + "\x00" + d.UniqueID()
}

// dvMagic starts a RoaringBitmapArray in the portable format.
const dvMagic = 1681511377

// dvFileVersion is the first byte of a deletion vector file.
const dvFileVersion = 1

// EncodeDV serialises a set of row indexes (all below 2^32) as a RoaringBitmapArray in the
// portable format: magic (int32 LE), number of bitmaps (int64 LE), then each bitmap's key (int32
// LE, the high 32 bits of its rows) and the bitmap in Roaring's portable format.
func EncodeDV(rows *roaring.Bitmap) ([]byte, error) {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, int32(dvMagic))
	if rows.IsEmpty() {
		_ = binary.Write(&b, binary.LittleEndian, int64(0))
		return b.Bytes(), nil
	}
	_ = binary.Write(&b, binary.LittleEndian, int64(1))
	_ = binary.Write(&b, binary.LittleEndian, int32(0))
	c := rows.Clone()
	c.RunOptimize()
	if _, err := c.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("encoding deletion vector: %w", err)
	}
	return b.Bytes(), nil
}

// DecodeDV parses a serialised RoaringBitmapArray. Rows at or above 2^32 (a file of more than
// four billion rows) are refused.
func DecodeDV(data []byte) (*roaring.Bitmap, error) {
	if len(data) < 12 {
		return nil, fmt.Errorf("deletion vector of %d bytes is too short", len(data))
	}
	if m := int32(binary.LittleEndian.Uint32(data)); m != dvMagic {
		return nil, fmt.Errorf("deletion vector starts with %d, not the RoaringBitmapArray magic number %d", m, dvMagic)
	}
	n := int64(binary.LittleEndian.Uint64(data[4:]))
	rest := data[12:]
	out := roaring.New()
	for i := int64(0); i < n; i++ {
		if len(rest) < 4 {
			return nil, errors.New("deletion vector ends inside its bitmap keys")
		}
		key := binary.LittleEndian.Uint32(rest)
		rest = rest[4:]
		bm := roaring.New()
		used, err := bm.FromBuffer(rest)
		if err != nil {
			return nil, fmt.Errorf("deletion vector bitmap %d: %w", i, err)
		}
		if key != 0 && !bm.IsEmpty() {
			return nil, fmt.Errorf("deletion vector deletes row %d<<32 or later: files of more than 2^32 rows are not supported", key)
		}
		out.Or(bm.Clone()) // FromBuffer shares rest's memory
		rest = rest[used:]
	}
	return out, nil
}

// NewDVFile returns a fresh deletion vector file name and its pathOrInlineDv (no prefix: the file
// is at the table's root).
func NewDVFile() (name, pathOrInline string) {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return dvFileName("", u), Z85Encode(u[:])
}

func dvFileName(prefix string, u [16]byte) string {
	h := hex.EncodeToString(u[:])
	name := "deletion_vector_" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:] + ".bin"
	if prefix != "" {
		return prefix + "/" + name
	}
	return name
}

// DVPath returns the table-relative path of a "u" deletion vector's file.
func DVPath(d *DeletionVector) (string, error) {
	if d == nil {
		return "", errors.New("no deletion vector")
	}
	if d.StorageType != DVStorageUUID {
		return "", fmt.Errorf("deletion vector of storage type %q has no table-relative file", d.StorageType)
	}
	p := d.PathOrInlineDv
	if len(p) < 20 {
		return "", fmt.Errorf("deletion vector path %q is shorter than a Z85 UUID", p)
	}
	raw, err := Z85Decode(p[len(p)-20:])
	if err != nil {
		return "", fmt.Errorf("deletion vector path %q: %w", p, err)
	}
	var u [16]byte
	copy(u[:], raw)
	return dvFileName(p[:len(p)-20], u), nil
}

// DVWriter collects the deletion vectors of one commit into one file.
type DVWriter struct {
	name, ref string
	buf       bytes.Buffer
}

// NewDVWriter starts a deletion vector file.
func NewDVWriter() *DVWriter {
	w := &DVWriter{}
	w.name, w.ref = NewDVFile()
	w.buf.WriteByte(dvFileVersion)
	return w
}

// Name is the file's table-relative path.
func (w *DVWriter) Name() string { return w.name }

// Add appends a file's deleted rows and returns their descriptor: the size (int32 BE) of the
// serialised bitmap at offset, the bitmap, its CRC-32 (IEEE, int32 BE).
func (w *DVWriter) Add(rows *roaring.Bitmap) (*DeletionVector, error) {
	data, err := EncodeDV(rows)
	if err != nil {
		return nil, err
	}
	off := int32(w.buf.Len())
	_ = binary.Write(&w.buf, binary.BigEndian, int32(len(data)))
	w.buf.Write(data)
	_ = binary.Write(&w.buf, binary.BigEndian, crc32.ChecksumIEEE(data))
	d := &DeletionVector{StorageType: DVStorageUUID, PathOrInlineDv: w.ref, Offset: &off, SizeInBytes: int32(len(data)),
		Cardinality: int64(rows.GetCardinality())}
	return d, nil // maxRowIndex stays out of the log, as Spark keeps it
}

// Bytes is the file's content.
func (w *DVWriter) Bytes() []byte { return w.buf.Bytes() }

// LoadDV reads a deletion vector: from its file (checking the framing and checksum) or inline.
// A nil descriptor is the empty set.
func LoadDV(ctx context.Context, store storage.Store, d *DeletionVector) (*roaring.Bitmap, error) {
	if d == nil || d.Cardinality == 0 && d.StorageType == DVStorageInline {
		return roaring.New(), nil // Spark's empty vector: inline "", 0 bytes
	}
	var data []byte
	switch d.StorageType {
	case DVStorageInline:
		raw, err := Z85Decode(d.PathOrInlineDv)
		if err != nil {
			return nil, fmt.Errorf("inline deletion vector: %w", err)
		}
		if int(d.SizeInBytes) > len(raw) {
			return nil, fmt.Errorf("inline deletion vector of %d bytes claims %d", len(raw), d.SizeInBytes)
		}
		data = raw[:d.SizeInBytes]
	case DVStorageUUID:
		name, err := DVPath(d)
		if err != nil {
			return nil, err
		}
		file, err := store.Read(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("deletion vector %s: %w", name, err)
		}
		off := 0 // an absent offset reads as 0
		if d.Offset != nil {
			off = int(*d.Offset)
		}
		if off < 0 || off+8+int(d.SizeInBytes) > len(file) {
			return nil, fmt.Errorf("deletion vector file %s of %d bytes has no %d-byte vector at %d", name, len(file), d.SizeInBytes, off)
		}
		if n := int32(binary.BigEndian.Uint32(file[off:])); n != d.SizeInBytes {
			return nil, fmt.Errorf("deletion vector file %s: the vector at %d has %d bytes, the log says %d", name, off, n, d.SizeInBytes)
		}
		data = file[off+4 : off+4+int(d.SizeInBytes)]
		if sum := binary.BigEndian.Uint32(file[off+4+int(d.SizeInBytes):]); sum != crc32.ChecksumIEEE(data) {
			return nil, fmt.Errorf("deletion vector file %s: the vector at %d fails its checksum", name, off)
		}
	default:
		return nil, fmt.Errorf("%w: deletion vector storage type %q (absolute paths are not read)", ErrUnsupported, d.StorageType)
	}
	bm, err := DecodeDV(data)
	if err != nil {
		return nil, err
	}
	if int64(bm.GetCardinality()) != d.Cardinality {
		return nil, fmt.Errorf("deletion vector %s deletes %d rows, the log says %d", d.UniqueID(), bm.GetCardinality(), d.Cardinality)
	}
	return bm, nil
}

// z85 is the alphabet of Z85 (ZeroMQ RFC 32), which Delta uses for UUIDs and inline vectors.
const z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"

// Z85Encode encodes data (a multiple of 4 bytes) as Z85: each 4 bytes, big-endian, as 5 digits
// base 85.
func Z85Encode(data []byte) string {
	var b strings.Builder
	for i := 0; i+4 <= len(data); i += 4 {
		v := binary.BigEndian.Uint32(data[i:])
		var d [5]byte
		for j := 4; j >= 0; j-- {
			d[j] = z85[v%85]
			v /= 85
		}
		b.Write(d[:])
	}
	return b.String()
}

// Z85Decode decodes Z85 text (a multiple of 5 characters).
func Z85Decode(s string) ([]byte, error) {
	if len(s)%5 != 0 {
		return nil, fmt.Errorf("z85 text of %d characters is not a multiple of 5", len(s))
	}
	out := make([]byte, 0, len(s)/5*4)
	for i := 0; i < len(s); i += 5 {
		var v uint64
		for j := range 5 {
			k := strings.IndexByte(z85, s[i+j])
			if k < 0 {
				return nil, fmt.Errorf("%q is not a z85 character", s[i+j])
			}
			v = v*85 + uint64(k)
		}
		if v > 0xffffffff {
			return nil, fmt.Errorf("z85 group %q overflows", s[i:i+5])
		}
		out = binary.BigEndian.AppendUint32(out, uint32(v))
	}
	return out, nil
}
