package delta

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// The vectors below are from Delta's golden tables and PROTOCOL.md (checked against Spark's
// reader there; the protocol's own inline example has a big-endian magic that Spark rejects).
func TestDVBytesMatchDelta(t *testing.T) {
	want := "d1d339640100000000000000000000003a3000000100000000000500100000000300040007000b0012001d00"
	got, err := EncodeDV(roaring.BitmapOf(3, 4, 7, 11, 18, 29))
	if err != nil || hex.EncodeToString(got) != want {
		t.Fatalf("EncodeDV = %x, %v; want %s", got, err, want)
	}
	raw, _ := hex.DecodeString(want)
	inline := "^Bg9^0rr910000000000iXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L"
	if z := Z85Encode(raw); z != inline {
		t.Fatalf("Z85Encode = %s, want %s", z, inline)
	}
	bm, err := LoadDV(context.Background(), nil, &DeletionVector{StorageType: DVStorageInline, PathOrInlineDv: inline, SizeInBytes: 44, Cardinality: 6})
	if err != nil || !bm.Equals(roaring.BitmapOf(3, 4, 7, 11, 18, 29)) {
		t.Fatalf("inline vector = %v, %v", bm, err)
	}

	// Golden table dv-partitioned-with-checkpoint: a file holding row {0}.
	file, _ := hex.DecodeString(strings.ReplaceAll("01 00000022 d1d33964 0100000000000000 00000000 3a300000 01000000 00000000 10000000 0000 f7a6b4b5", " ", ""))
	d := &DeletionVector{StorageType: DVStorageUUID, PathOrInlineDv: "0X9F0q2<2yJ-f)Gm2!e0", Offset: ptr(int32(1)), SizeInBytes: 34, Cardinality: 1}
	name, err := DVPath(d)
	if err != nil || name != "deletion_vector_0229ec3d-5100-44e1-8e53-702d448da8da.bin" {
		t.Fatalf("DVPath = %s, %v", name, err)
	}
	st := localStore(t)
	if err := st.Write(context.Background(), name, file); err != nil {
		t.Fatal(err)
	}
	bm, err = LoadDV(context.Background(), st, d)
	if err != nil || !bm.Equals(roaring.BitmapOf(0)) {
		t.Fatalf("golden vector = %v, %v", bm, err)
	}
	w := NewDVWriter()
	got2, err := w.Add(roaring.BitmapOf(0))
	if err != nil || !strings.HasSuffix(hex.EncodeToString(w.Bytes()), hex.EncodeToString(file[1:])) || *got2.Offset != 1 || got2.SizeInBytes != 34 {
		t.Fatalf("DVWriter wrote %x (%+v), want the golden bytes %x", w.Bytes(), got2, file)
	}

	// Protocol example 1: a UUID with a random prefix.
	p, err := DVPath(&DeletionVector{StorageType: DVStorageUUID, PathOrInlineDv: "ab^-aqEH.-t@S}K{vb[*k^"})
	if err != nil || p != "ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin" {
		t.Fatalf("DVPath = %s, %v", p, err)
	}
}

func localStore(t *testing.T) storage.Store {
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func ptr[T any](v T) *T { return &v }

// A file of several vectors reads each back; damage is an error naming the file.
func TestDVFileRoundTripAndDamage(t *testing.T) {
	ctx := context.Background()
	st := localStore(t)
	w := NewDVWriter()
	sets := []*roaring.Bitmap{roaring.BitmapOf(0), roaring.BitmapOf(5, 6, 7, 1000, 70000), roaring.New()}
	for i := range 100_000 {
		if i%3 == 0 {
			sets[2].Add(uint32(i))
		}
	}
	var ds []*DeletionVector
	for _, s := range sets {
		d, err := w.Add(s)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if err := st.Write(ctx, w.Name(), w.Bytes()); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if p, _ := DVPath(d); p != w.Name() {
			t.Fatalf("vector %d names %s, written as %s", i, p, w.Name())
		}
		bm, err := LoadDV(ctx, st, d)
		if err != nil || !bm.Equals(sets[i]) {
			t.Fatalf("vector %d read back as %d rows, %v", i, bm.GetCardinality(), err)
		}
	}
	data := append([]byte(nil), w.Bytes()...)
	data[int(*ds[1].Offset)+6] ^= 0xff
	if err := st.Write(ctx, w.Name(), data); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDV(ctx, st, ds[1]); err == nil || !strings.Contains(err.Error(), "checksum") || !strings.Contains(err.Error(), w.Name()) {
		t.Fatalf("a damaged vector reads with %v", err)
	}
	bad := *ds[0]
	bad.Cardinality = 2
	if _, err := LoadDV(ctx, st, &bad); err == nil || !strings.Contains(err.Error(), "the log says 2") {
		t.Fatalf("a cardinality mismatch reads with %v", err)
	}
}
